//! Golden MessagePack fixtures: one sample of every payload, encoded as the workers encode it
//! (named fields), kept in `schemas/fixtures/{schema id}.msgpack`. A change to a payload's wire
//! form fails these tests; bump the schema version, then regenerate with
//! `UPDATE_FIXTURES=1 cargo test -p warren-schemas`.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Serialize, de::DeserializeOwned};

    use crate::*;

    fn artifact(name: &str) -> ArtifactRef {
        ArtifactRef {
            uri: format!("file:///srv/warren/iris/job/{name}"),
            hash: format!("sha256:{}", "ab".repeat(32)),
            bytes: 1234,
        }
    }

    fn features() -> Features {
        Features {
            dataset_hash: format!("sha256:{}", "cd".repeat(32)),
            train: artifact("train.arrow"),
            test: artifact("test.arrow"),
            feature_names: vec!["sepal_length".into(), "petal_width".into()],
            target: "species".into(),
            task: Task::Classification,
            classes: vec!["setosa".into(), "versicolor".into()],
            scaler: Some(Scaler { means: vec![5.8, 1.2], stds: vec![0.8, 0.7] }),
            seed: 42,
            preprocessor: None,
        }
    }

    fn candidate() -> Candidate {
        Candidate { algorithm: Algorithm::Logistic, hyperparams: [("alpha".to_owned(), 0.1.into())].into() }
    }

    fn model() -> Model {
        Model {
            artifact: artifact("model-0001.msgpack"),
            candidate: candidate(),
            features: features(),
            trial: 1,
            trials: 7,
            metric: "accuracy".into(),
            validation_score: 0.95,
            format: Default::default(),
        }
    }

    fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + SchemaId>(sample: T) {
        let bytes = rmp_serde::to_vec_named(&sample).unwrap();
        let back: T = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, sample, "{} round-trips", T::SCHEMA_ID);
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(format!("{}.msgpack", T::SCHEMA_ID.replace('/', "-v")));
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&file, &bytes).unwrap();
        }
        let golden =
            std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_FIXTURES=1 writes it)", file.display()));
        assert_eq!(bytes, golden, "{} still encodes as its golden fixture", T::SCHEMA_ID);
        let from_golden: T = rmp_serde::from_slice(&golden).unwrap();
        assert_eq!(from_golden, sample, "{} decodes from its golden fixture", T::SCHEMA_ID);
    }

    #[test]
    fn start() {
        check(Start { note: Some("from the docs".into()) });
    }
    #[test]
    fn dataset() {
        check(Dataset {
            artifact: artifact("dataset.arrow"),
            source: "data/example.csv".into(),
            source_hash: Some(format!("sha256:{}", "ef".repeat(32))),
            rows: 150,
            columns: vec![
                Column { name: "sepal_length".into(), dtype: "Float64".into(), kind: None, note: None },
                Column { name: "species".into(), dtype: "Utf8".into(), kind: None, note: None },
            ],
            target: "species".into(),
            task: Task::Classification,
            ingest: None,
        });
    }
    #[test]
    fn features_payload() {
        check(features());
    }
    #[test]
    fn train_task() {
        check(TrainTask {
            features: features(),
            candidate: candidate(),
            trial: 1,
            trials: 7,
            metric: "accuracy".into(),
        });
    }
    #[test]
    fn model_payload() {
        check(model());
    }
    #[test]
    fn evaluation() {
        check(Evaluation {
            model: model(),
            metrics: [("accuracy".to_owned(), 0.96), ("f1_macro".to_owned(), 0.95)].into(),
            confusion: Some(vec![vec![15, 0], vec![1, 14]]),
            report: artifact("report.json"),
        });
    }
    #[test]
    fn registration() {
        check(Registration {
            name: "iris".into(),
            version: Some(3),
            promoted: false,
            reason: Some("accuracy is below that of version 2 (0.9778); `latest` stays there".into()),
            entry: Some(artifact("registry/iris/versions/000003.json")),
            metrics: BTreeMap::from([("accuracy".to_owned(), 0.95)]),
        });
    }
    #[test]
    fn predict_request() {
        check(PredictRequest {
            model: "iris".into(),
            version: Some("latest".into()),
            rows: vec![[5.1, 3.5, 1.4, 0.2].map(|v| Some(Cell::Number(v))).to_vec()],
            columns: None,
            dataset: None,
        });
    }
    #[test]
    fn predictions() {
        check(Predictions {
            model: "iris".into(),
            version: 2,
            labels: vec!["setosa".into()],
            values: vec![],
            artifact: None,
            scored: 1,
            refused: vec![],
            probabilities: vec![],
            classes: vec![],
        });
    }

    #[test]
    fn every_schema_has_a_fixture_and_a_protocol_entry() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let protocol = std::fs::read_to_string(root.join("../docs/PROTOCOL.md")).unwrap();
        for id in ALL_SCHEMAS {
            assert!(
                root.join("fixtures").join(format!("{}.msgpack", id.replace('/', "-v"))).exists(),
                "fixture for {id}"
            );
            assert!(protocol.contains(&format!("`{id}`")), "docs/PROTOCOL.md lists {id}");
        }
    }
}
