//! ONNX models from scikit-learn: pipelines with a categorical column trained in Python (a
//! random forest, a logistic regression, a small neural network),
//! exported with skl2onnx, imported with `warren models import`, promoted, and asked through
//! `warren predict` and a batch request: the same classes as scikit-learn's `predict` on every
//! held-out row and probabilities within 1e-5 of its `predict_proba`. What cannot be served (a
//! malformed file, an operator tract lacks, a sequence output) is refused at import with one line,
//! exit 2, and nothing registered.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use tokio::process::Command;
use warren::artifacts::content_hash;
use warren_schemas::{PredictRequest, Predictions, params::IngestParams};

use crate::{helpers::TestNs, ml::Fleet};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with scikit-learn, skl2onnx, onnxruntime and pandas (tests/onnx/requirements.txt).
pub(crate) fn onnx_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var_os("WARREN_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into());
            let ok = std::process::Command::new(&python)
                .args(["-c", "import warren_step, sklearn, skl2onnx, onnxruntime, pandas, pyarrow"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{} cannot import warren_step, sklearn, skl2onnx, onnxruntime, pandas and pyarrow: install ./python and tests/onnx/requirements.txt into \
                 the virtualenv WARREN_PYTHON points at (`.venv/bin/pip install -r tests/onnx/requirements.txt`); \
                 .ci/run does this",
                python.display()
            );
            python
        })
        .clone()
}

/// Runs a Python script of the repository; panics with its output when it fails.
pub(crate) async fn run_python(args: &[&str]) {
    let out = Command::new(onnx_python())
        .args(args)
        .current_dir(repo())
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn warren(t: &TestNs, artifacts: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = crate::registry::warren(t, artifacts, args).output().await.expect("run warren");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scikit_learn_pipelines_import_promote_and_predict_as_scikit_learn_does() {
    let mut t = TestNs::new("onnx").await;
    let fleet = Fleet::start_steps(&mut t, &[("predict", 1, &[])]).await;
    let artifacts = fleet.artifacts.clone();
    let out = artifacts.join("sklearn");
    let out_text = out.display().to_string();
    run_python(&["tests/onnx/sklearn_models.py", "data/penguins.csv", &out_text]).await;
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("expected.json")).expect("expected.json")).expect("json");
    let columns: Vec<String> =
        expected["columns"].as_array().expect("columns").iter().filter_map(|c| c.as_str().map(str::to_owned)).collect();
    let test_csv = std::fs::read_to_string(out.join("test.csv")).expect("test.csv");
    // The held-out rows as `warren predict` takes them: every column but the species (last).
    let rows: Vec<String> =
        test_csv.lines().skip(1).map(|l| l.rsplit_once(',').map_or(l, |(row, _)| row).to_owned()).collect();
    assert!(rows.len() > 100, "{} held-out rows", rows.len());
    let test_path = out.join("test.csv").display().to_string();

    for name in ["rf", "lr", "mlp"] {
        let model = format!("penguins-{name}");
        let file = out.join(format!("{name}.onnx")).display().to_string();
        let (code, stdout, stderr) = warren(
            &t,
            &artifacts,
            &["models", "import", &file, "--name", &model, "--test", &test_path, "--target", "species", "--json"],
        )
        .await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let imported: serde_json::Value = serde_json::from_str(&stdout).expect("import --json");
        assert_eq!(imported["columns"].as_array().map(Vec::len), Some(6), "{imported}");
        assert_eq!(imported["types"][4], "categorical");
        assert!(imported["metrics"]["accuracy"].as_f64().is_some_and(|a| a > 0.9), "{imported}");
        let (code, stdout, stderr) =
            warren(&t, &artifacts, &["models", "promote", &model, "1", "--to", "production"]).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let (code, shown, _) = warren(&t, &artifacts, &["models", "show", &model, "production"]).await;
        assert_eq!(code, Some(0));
        assert!(shown.contains("format       onnx, from skl2onnx"), "{shown}");

        // Every held-out row through `warren predict`, by column name.
        let joined = columns.join(",");
        let mut args = vec!["predict", &model, "--model-version", "production", "--columns", &joined, "--json"];
        for r in &rows {
            args.extend(["--row", r.as_str()]);
        }
        let (code, stdout, stderr) = warren(&t, &artifacts, &args).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let p: Predictions = serde_json::from_str(&stdout).expect("predict --json");
        let want = &expected[name];
        let labels: Vec<&str> = want["labels"].as_array().expect("labels").iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(p.labels, labels, "{name}: the same classes as scikit-learn's predict on every row");
        let classes: Vec<&str> =
            want["classes"].as_array().expect("classes").iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(p.classes, classes);
        let mut worst = 0f64;
        for (got, want) in p.probabilities.iter().zip(want["probabilities"].as_array().expect("probabilities")) {
            for (g, w) in got.iter().zip(want.as_array().expect("row")) {
                worst = worst.max((g - w.as_f64().expect("number")).abs());
            }
        }
        assert_eq!(p.probabilities.len(), rows.len());
        assert!(worst < 1e-5, "{name}: probabilities within 1e-5 of predict_proba; worst {worst}");
    }

    // A batch over the held-out rows (as an Arrow dataset) takes the ONNX model too.
    let params = IngestParams { target: Some("species".into()), ..IngestParams::default() };
    let table = warren_ml::ingest::csv(test_csv.as_bytes(), &params).expect("test rows").table;
    let bytes = table.to_ipc().expect("arrow");
    let file = out.join("test.arrow");
    std::fs::write(&file, &bytes).expect("write the dataset");
    let dataset = warren_schemas::ArtifactRef {
        uri: format!("file://{}", file.display()),
        hash: content_hash(&bytes),
        bytes: bytes.len() as u64,
    };
    let batch = PredictRequest {
        model: "penguins-rf".into(),
        version: Some("production".into()),
        rows: vec![],
        columns: None,
        dataset: Some(dataset),
    };
    let scored: Predictions =
        t.client.call("predict", rmpv::Value::Nil, batch, Duration::from_secs(60)).await.expect("batch predict");
    let rf: Vec<&str> =
        expected["rf"]["labels"].as_array().expect("labels").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!((scored.scored as usize, scored.refused.len()), (rows.len(), 0));
    assert_eq!(scored.labels, rf, "the batch answers as the RPC did");

    // What cannot be served is refused at import: one line, exit 2, nothing registered.
    std::fs::write(out.join("garbage.onnx"), b"these bytes are not a protobuf message").expect("write");
    for (file, needle) in [
        ("garbage.onnx", "not an ONNX model"),
        ("svm.onnx", "operator ai.onnx.ml:SVMClassifier is not supported"),
        ("zipmap.onnx", "'zipmap': False"),
    ] {
        let path = out.join(file).display().to_string();
        let (code, stdout, stderr) = warren(&t, &artifacts, &["models", "import", &path, "--name", "refused"]).await;
        assert_eq!(code, Some(2), "{file}: {stdout}{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{file}: one line: {stderr}");
        assert!(stderr.contains(needle) && stderr.contains("nothing registered"), "{file}: {stderr}");
    }
    let (code, listed, _) = warren(&t, &artifacts, &["models", "list", "--json"]).await;
    assert_eq!(code, Some(0));
    assert!(!listed.contains("\"refused\"") && listed.contains("penguins-rf"), "{listed}");

    drop(fleet);
    let _ = std::fs::remove_dir_all(&artifacts);
    t.cleanup().await;
}

/// A table's columns as JSON: numbers, text, `null` for a gap.
fn columns_json(table: &warren_ml::table::Table) -> serde_json::Value {
    use warren_ml::table::Values;
    let mut out = serde_json::Map::new();
    for (name, col) in table.names.iter().zip(&table.columns) {
        let values: Vec<serde_json::Value> = match col {
            Values::F64(v) => v.iter().map(|x| x.map_or(serde_json::Value::Null, |x| serde_json::json!(x))).collect(),
            Values::Str(v) => {
                v.iter().map(|x| x.clone().map_or(serde_json::Value::Null, serde_json::Value::String)).collect()
            }
        };
        out.insert(name.clone(), serde_json::Value::Array(values));
    }
    serde_json::Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_warren_algorithm_exported_runs_in_onnxruntime_as_warren_predicts() {
    use warren_ml::{model::Predicted, onnx::export};
    use warren_schemas::models::{ModelFormat, ModelRegistry};
    let t = TestNs::new("onnx-export").await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    std::fs::create_dir_all(&dir).expect("dir");
    let samples = export::samples(100).expect("train every algorithm");
    let mut models = Vec::new();
    let mut rows = serde_json::Map::new();
    for (i, s) in samples.iter().enumerate() {
        let file = format!("{i}.onnx");
        std::fs::write(dir.join(&file), export::export(&s.model).expect("export")).expect("write");
        let data = s.name.split('/').next().unwrap_or_default().to_owned();
        rows.insert(data.clone(), columns_json(&s.test));
        let (predicted, refused) = s.model.predict_table(&s.test).expect("Warren predicts");
        assert!(refused.is_empty(), "{}: {refused:?}", s.name);
        let mut m = serde_json::json!({ "name": s.name, "file": file, "rows": data });
        match predicted {
            Predicted::Classes(c) => m["labels"] = serde_json::json!(s.model.labels(&c)),
            Predicted::Values(v) => m["values"] = serde_json::json!(v),
        }
        models.push(m);
    }

    // The forest through the registry and `warren models export`, as an operator exports it.
    let forest = samples.iter().find(|s| s.name == "penguins/random_forest").expect("a forest");
    let store = warren::artifacts::ArtifactStore::open(&dir.display().to_string()).expect("store");
    let registry = ModelRegistry::new(&store, &t.ns, "penguins");
    let bytes = forest.model.to_bytes().expect("model bytes");
    let stored = store.put("models/forest.bin", bytes.clone()).await.expect("store the model");
    let mut entry = crate::helpers::model_entry("penguins", 0.97);
    entry.model = warren_schemas::ArtifactRef { uri: stored.uri, hash: stored.hash, bytes: bytes.len() as u64 };
    entry.format = ModelFormat::Warren;
    let version = registry.add(&mut entry).await.expect("register");
    let exported = dir.join("cli.onnx").display().to_string();
    let (code, stdout, stderr) =
        warren(&t, &dir, &["models", "export", "penguins", &version.to_string(), "-o", &exported]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("island (string [N,1])"), "{stdout}");
    assert_eq!(std::fs::read(&exported).expect("exported"), export::export(&forest.model).expect("export"));
    let mut cli = models.iter().find(|m| m["name"] == "penguins/random_forest").expect("forest").clone();
    cli["name"] = serde_json::json!("penguins/random_forest (warren models export)");
    cli["file"] = serde_json::json!("cli.onnx");
    models.push(cli);

    let manifest = serde_json::json!({ "models": models, "rows": rows });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest");
    run_python(&["tests/onnx/check_exports.py", &dir.display().to_string()]).await;
    let _ = std::fs::remove_dir_all(&dir);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_step_trains_with_scikit_learn_and_warren_evaluates_registers_and_serves_it() {
    let mut t = TestNs::new("sklearn").await;
    for s in ["ingest", "validate", "sk-train", "evaluate", "register", "predict"] {
        t.remember(s);
    }
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    let python = onnx_python();
    let dir = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    crate::ml::worker_bin("exec");
    let mut up = crate::registry::warren(&t, &artifacts, &["up", "--fleet", "examples/sklearn/fleet.toml"])
        .env("PATH", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warren up");
    for s in ["ingest", "validate", "sk-train", "evaluate", "register", "predict"] {
        t.wait_consumers(s, 1).await;
    }
    // ingest and validate (Rust) → sk-train (Python, scikit-learn, skl2onnx) → evaluate and
    // register (Rust, on the ONNX graph).
    let (code, stdout, stderr) = warren(&t, &artifacts, &["submit", "examples/sklearn/pipeline.toml", "--wait"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("  sk-train   {") && stdout.contains("\"promoted\":true"), "{stdout}");
    let (code, shown, _) = warren(&t, &artifacts, &["models", "show", "penguins-sklearn", "--json"]).await;
    assert_eq!(code, Some(0));
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("show --json");
    assert_eq!(shown["format"], "onnx");
    assert_eq!(shown["signature"]["features"].as_array().map(Vec::len), Some(7), "{shown}");
    assert!(shown["metrics"]["accuracy"].as_f64().is_some_and(|a| a >= 0.9), "{shown}");
    // Served by predict like a model Warren trained: raw values, a gap, a category by name.
    let (code, stdout, stderr) = warren(
        &t,
        &artifacts,
        &[
            "predict",
            "penguins-sklearn",
            "--columns",
            "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year",
            "--row",
            "Torgersen,39.1,18.7,181,3750,male,2007",
            "--row",
            "Biscoe,50.0,15.0,220,5500,NA,2008",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("→ Adelie (") && stdout.contains("→ Gentoo ("), "{stdout}");

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    let _ = std::fs::remove_dir_all(&artifacts);
    t.cleanup().await;
}
