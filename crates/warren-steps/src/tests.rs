//! The ML steps' handlers called as functions, without a broker: each gets a
//! [`Context::detached`] with a scratch artifact store, and hands its output to the next.

use warren::{Context, StepError, artifacts::ArtifactStore, envelope::to_msgpack_value};
use warren_schemas::{Start, Task};

/// A scratch directory for one test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warren-steps-{name}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("store")).expect("scratch dir");
        Self(dir)
    }
    fn store(&self) -> ArtifactStore {
        ArtifactStore::open(&self.0.join("store").display().to_string()).expect("store")
    }
    fn ctx(&self, step: &str, params: serde_json::Value) -> Context {
        let params = to_msgpack_value(&params).expect("params");
        Context::detached(step, params).with_pipeline("iris").with_store(self.store()).with_data_root(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn iris_goes_from_ingest_to_an_evaluated_model_through_the_handlers_alone() {
    let s = Scratch::new("iris");
    let dataset = crate::ingest::handle(s.ctx("ingest", serde_json::json!({ "dataset": "iris" })), Start::default())
        .await
        .expect("ingest");
    assert_eq!((dataset.rows, dataset.task, dataset.target.as_str()), (150, Task::Classification, "species"));
    let rules = serde_json::json!({ "min_rows": 100, "min_class_count": 20 });
    let dataset = crate::validate::handle(s.ctx("validate", rules), dataset).await.expect("validate");
    let split = serde_json::json!({ "test_fraction": 0.3, "seed": 42, "scale": true });
    let features = crate::features::handle(s.ctx("features", split), dataset).await.expect("features");
    let grid = serde_json::json!({
        "metric": "accuracy",
        "search": [{ "algorithm": "logistic", "grid": { "alpha": [0.1, 1.0] } }],
    });
    let tasks = crate::tune::handle(s.ctx("tune", grid), features).await.expect("tune").0;
    assert_eq!(tasks.len(), 2, "one task per point of the grid");
    let task = tasks.into_iter().next().expect("a task");
    let model = crate::train::handle(s.ctx("train", serde_json::json!({})), task).await.expect("train");
    let evaluation = crate::evaluate::handle(s.ctx("evaluate", serde_json::json!({})), model).await.expect("evaluate");
    let accuracy = evaluation.metrics.get("accuracy").copied().expect("accuracy");
    assert!(accuracy > 0.85, "held-out accuracy {accuracy}");
}

#[tokio::test]
async fn a_text_feature_is_refused_for_good_naming_its_column_and_row() {
    let s = Scratch::new("text");
    std::fs::write(s.0.join("penguins.csv"), "bill,island,species\n39.1,Torgersen,Adelie\n46.5,Dream,Gentoo\n")
        .expect("csv");
    let ingest = serde_json::json!({ "csv": "data:penguins.csv", "target": "species" });
    let dataset = crate::ingest::handle(s.ctx("ingest", ingest), Start::default()).await.expect("ingest");
    let err = crate::validate::handle(s.ctx("validate", serde_json::json!({ "min_rows": 1 })), dataset)
        .await
        .expect_err("a text column is not a feature");
    let StepError::Permanent(message) = &err else { panic!("permanent, not {err:?}") };
    assert!(message.contains("island") && message.contains("row 1"), "{message}");
}

#[tokio::test]
async fn a_csv_outside_the_data_root_is_refused() {
    let s = Scratch::new("outside");
    let ingest = serde_json::json!({ "csv": "/etc/passwd" });
    let err = crate::ingest::handle(s.ctx("ingest", ingest), Start::default()).await.expect_err("refused");
    assert!(matches!(err, StepError::Permanent(_)), "{err:?}");
}
