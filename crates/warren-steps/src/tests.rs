//! The ML steps' handlers called as functions, without a broker: each gets a
//! [`Context::detached`] with a scratch artifact store, and hands its output to the next.

use warren::{Context, StepError, artifacts::ArtifactStore, envelope::to_msgpack_value};
use warren_schemas::{Cell, ColumnKind, Start, Task};

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
async fn text_columns_and_gaps_train_into_a_model_that_reads_raw_rows() {
    let s = Scratch::new("text");
    let mut csv = String::from("bill,island,sex,name,species\n");
    for i in 0..40 {
        let (island, species, bill) =
            if i % 2 == 0 { ("Torgersen", "Adelie", 38.0) } else { ("Biscoe", "Gentoo", 47.0) };
        let sex = if i % 7 == 3 {
            "NA"
        } else if i % 3 == 0 {
            "male"
        } else {
            "female"
        };
        let bill = if i % 9 == 4 { String::new() } else { format!("{}", bill + f64::from(i % 5) * 0.3) };
        csv.push_str(&format!("{bill},{island},{sex},bird-{i},{species}\n"));
    }
    std::fs::write(s.0.join("penguins.csv"), csv).expect("csv");
    let ingest = serde_json::json!({ "csv": "data:penguins.csv", "target": "species" });
    let dataset = crate::ingest::handle(s.ctx("ingest", ingest), Start::default()).await.expect("ingest");
    let kinds: Vec<_> = dataset.columns.iter().map(|c| (c.name.as_str(), c.kind())).collect();
    assert_eq!(
        kinds,
        [
            ("bill", ColumnKind::Numeric),
            ("island", ColumnKind::Categorical),
            ("sex", ColumnKind::Categorical),
            ("name", ColumnKind::Text),
            ("species", ColumnKind::Categorical)
        ]
    );
    let dataset = crate::validate::handle(s.ctx("validate", serde_json::json!({ "min_rows": 1 })), dataset)
        .await
        .expect("gaps and text pass validation");
    let features = crate::features::handle(s.ctx("features", serde_json::json!({})), dataset).await.expect("features");
    assert_eq!(features.feature_names, ["bill", "island=Biscoe", "island=Torgersen", "sex=female", "sex=male"]);
    let pre = features.preprocessor.clone().expect("fitted preprocessing");
    assert_eq!(pre.left_out[0].column, "name");
    let grid = serde_json::json!({ "metric": "accuracy", "search": [{ "algorithm": "logistic" }] });
    let task = crate::tune::handle(s.ctx("tune", grid), features).await.expect("tune").0.remove(0);
    let model = crate::train::handle(s.ctx("train", serde_json::json!({})), task).await.expect("train");
    let bytes = s.store().fetch(&model.artifact.uri, None).await.expect("model bytes");
    let saved = warren_ml::model::SavedModel::from_bytes(&bytes).expect("model");
    let evaluation = crate::evaluate::handle(s.ctx("evaluate", serde_json::json!({})), model).await.expect("evaluate");
    assert_eq!(evaluation.metrics.get("accuracy").copied(), Some(1.0), "island gives the species away");
    // Raw rows: a category unseen in training and a gap are answered; a missing column is not.
    let columns: Vec<String> = ["island", "sex", "bill"].map(String::from).to_vec();
    let rows = vec![
        vec![Some(Cell::from("Dream")), None, Some(Cell::Number(47.5))],
        vec![Some("Torgersen".into()), Some("male".into()), None],
    ];
    let predicted = saved.predict_cells(Some(&columns), &rows).expect("answered");
    let warren_ml::model::Predicted::Classes(c) = predicted else { panic!("classes") };
    assert_eq!(saved.labels(&c), ["Gentoo", "Adelie"]);
    let err = saved.predict_cells(Some(&columns[..2]), &[rows[0][..2].to_vec()]).expect_err("bill is missing");
    assert_eq!(err.to_string(), "column `bill` is missing");
}

#[tokio::test]
async fn a_csv_outside_the_data_root_is_refused() {
    let s = Scratch::new("outside");
    let ingest = serde_json::json!({ "csv": "/etc/passwd" });
    let err = crate::ingest::handle(s.ctx("ingest", ingest), Start::default()).await.expect_err("refused");
    assert!(matches!(err, StepError::Permanent(_)), "{err:?}");
}
