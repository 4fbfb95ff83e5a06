//! The ML pipeline end to end: every worker binary as its own process, the real broker, a
//! real artifact store in a temporary directory.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use tokio::process::Child;
use uuid::Uuid;
use warren::{EventKind, artifacts::content_hash, envelope::headers};
use warren_ops::spec::PipelineSpec;
use warren_schemas::{PredictRequest, Predictions};

use crate::helpers::{TestNs, header};

pub const ML_STEPS: &[&str] =
    &["ingest", "validate", "features", "tune", "train", "select", "evaluate", "register", "predict"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `warren` command, built with the workers.
pub fn warren_bin() -> PathBuf {
    worker_bin("x").with_file_name("warren")
}

/// The worker binaries, built once per test run (`cargo test` builds only the test's own package).
pub fn worker_bin(step: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--bins"]).current_dir(repo());
        // Cargo sets CARGO_PKG_NAME, CARGO_MANIFEST_DIR and more for this test; build scripts
        // (ring's) rerun when those change, so a nested build would rebuild every time.
        for (key, _) in std::env::vars() {
            let per_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ];
            if per_package.iter().any(|p| key.starts_with(p)) {
                cmd.env_remove(key);
            }
        }
        for s in ML_STEPS {
            cmd.args(["-p", &format!("warren-{s}")]);
        }
        cmd.args(["-p", "warren-cli", "-p", "textstats", "-p", "warren-exec"]);
        let status = cmd.status().expect("run cargo build for the worker binaries");
        assert!(status.success(), "building the worker binaries failed");
        let exe = std::env::current_exe().expect("test path");
        exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
    });
    dir.join(format!("warren-{step}"))
}

/// A step's workers in a [`Fleet`]: the step, how many copies, extra environment.
pub type Copies<'a> = (&'a str, usize, &'a [(&'a str, &'a str)]);

/// Every ML worker, one process each (two for `train` when asked), sharing an artifact store.
pub struct Fleet {
    pub children: Vec<Child>,
    pub artifacts: PathBuf,
    /// The namespace, which is also the model registry's.
    pub ns: String,
}

impl Fleet {
    pub async fn start(t: &mut TestNs, train_workers: usize) -> Self {
        Self::start_with(t, train_workers, &[]).await
    }

    /// Every ML worker, with `train_env` set for the train workers.
    pub async fn start_with(t: &mut TestNs, train_workers: usize, train_env: &[(&str, &str)]) -> Self {
        let plan: Vec<Copies<'_>> = ML_STEPS
            .iter()
            .map(|&s| if s == "train" { (s, train_workers, train_env) } else { (s, 1, &[][..]) })
            .collect();
        Self::start_steps(t, &plan).await
    }

    /// The workers of `plan` (step, copies, extra environment), sharing an artifact store.
    pub async fn start_steps(t: &mut TestNs, plan: &[Copies<'_>]) -> Self {
        let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
        std::fs::create_dir_all(artifacts.join("data")).expect("artifact dir");
        // The workers' data root: the specs' `data/example.csv` (and the penguins) resolve inside it.
        for file in ["data/example.csv", "data/penguins.csv"] {
            std::fs::copy(repo().join(file), artifacts.join(file)).expect("copy the shipped CSVs");
        }
        let mut children = Vec::new();
        for &(step, copies, extra) in plan {
            for i in 0..copies {
                t.remember(step);
                let log = std::fs::File::create(t.log_dir().join(format!("{step}-{i}.log"))).expect("log");
                let child = tokio::process::Command::new(worker_bin(step))
                    .envs(extra.iter().copied())
                    .current_dir(repo())
                    .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
                    .env("WARREN_NAMESPACE", &t.ns)
                    .env("WARREN_ARTIFACTS", &artifacts)
                    // Input files a test writes live beside the store, named `data:FILE`.
                    .env("WARREN_DATA_ROOT", &artifacts)
                    .env("RUST_LOG", "info,lapin=warn")
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn a worker binary");
                children.push(child);
            }
        }
        for &(step, copies, _) in plan {
            t.wait_consumers(step, copies as u32).await;
        }
        Self { children, artifacts, ns: t.ns.clone() }
    }

    /// Every file of the store with its content hash.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    let key = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                    out.insert(key, content_hash(&bytes));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.artifacts, &self.artifacts, &mut out);
        out
    }

    /// The model registry's folder of this fleet's namespace.
    pub fn registry(&self) -> PathBuf {
        self.artifacts.join(self.registry_key())
    }

    /// The registry's key prefix: `registry/{ns}`.
    pub fn registry_key(&self) -> String {
        format!("registry/{}", self.ns)
    }

    pub fn read_json(&self, key: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.artifacts.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        serde_json::from_str(&text).expect("json")
    }

    pub async fn stop(self) {
        for c in &self.children {
            let _ = crate::helpers::signal(c, "TERM").await;
        }
        for mut c in self.children {
            let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
                .await
                .expect("a worker stops within 30 s of SIGTERM")
                .expect("worker exits");
            assert!(status.success(), "worker exits 0 on SIGTERM: {status}");
        }
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

fn spec(name: &str) -> PipelineSpec {
    PipelineSpec::load(&repo().join("pipelines").join(name)).expect("shipped spec")
}

/// Runs the `warren` command in the test's namespace (and the fleet's store), as an operator would.
async fn warren_in(t: &TestNs, artifacts: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(warren_bin());
    cmd.args(args)
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env_remove("RUST_LOG");
    if let Some(a) = artifacts {
        cmd.env("WARREN_ARTIFACTS", a);
    }
    cmd.output().await.expect("run warren")
}

/// Waits until `job` completed its last step, or fails with its events.
async fn wait_done(events: &mut crate::helpers::Events, job: Uuid, within: Duration) {
    events
        .wait("the job's last step", within, |e| e.job_id == job && e.kind == EventKind::Succeeded && e.last_step)
        .await;
}

/// Where `alias` of `model` points: the version of its highest move file.
pub fn alias_version(registry: &Path, model: &str, alias: &str) -> Option<u64> {
    let dir = registry.join(format!("{model}/aliases/{alias}"));
    let last = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).max()?;
    let text = std::fs::read_to_string(last).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["version"].as_u64()
}

fn entry(fleet: &Fleet, model: &str) -> serde_json::Value {
    let v = alias_version(&fleet.registry(), model, "latest").expect("`latest` points at a version");
    fleet.read_json(&format!("{}/{model}/versions/{v:06}.json", fleet.registry_key()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iris_and_diabetes_train_to_registered_models_reproducibly_and_predict_serves_them() {
    let mut t = TestNs::new("ml").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;

    let iris = t.client.submit(&spec("iris.toml").job()).await.expect("submit iris");
    let diabetes = t.client.submit(&spec("diabetes.toml").job()).await.expect("submit diabetes");
    wait_done(&mut events, iris, Duration::from_secs(180)).await;
    wait_done(&mut events, diabetes, Duration::from_secs(180)).await;

    let first = entry(&fleet, "iris");
    let accuracy = first["metrics"]["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy >= 0.9, "iris held-out accuracy {accuracy}");
    assert_eq!(first["job_id"], iris.to_string(), "lineage names the job");
    let d = entry(&fleet, "diabetes");
    assert!(d["metrics"]["r2"].as_f64().expect("r2") >= 0.3, "{d}");
    assert!(d["metrics"].get("rmse").is_some() && d["metrics"].get("mae").is_some());

    // predict answers over RPC from the registered model.
    let request = PredictRequest {
        model: "iris".into(),
        version: None,
        rows: vec![cells(&[5.1, 3.5, 1.4, 0.2]), cells(&[6.7, 3.0, 5.2, 2.3])],
        columns: None,
        dataset: None,
    };
    let reply: Predictions = t
        .client
        .call("predict", rmpv::Value::Nil, request.clone(), Duration::from_secs(30))
        .await
        .expect("predict replies");
    assert_eq!(reply.version, 1);
    assert_eq!(reply.labels, vec!["setosa".to_owned(), "virginica".to_owned()]);

    // Same spec, same seed: same split, same metrics, same content hashes. Version 2 does not
    // beat version 1, so `latest` stays at 1 and the entry's decision says why.
    let again = t.client.submit(&spec("iris.toml").job()).await.expect("submit iris again");
    wait_done(&mut events, again, Duration::from_secs(180)).await;
    let second = fleet.read_json(&format!("{}/iris/versions/000002.json", fleet.registry_key()));
    assert_eq!(second["metrics"], first["metrics"]);
    assert_eq!(second["dataset_hash"], first["dataset_hash"]);
    assert_eq!(second["model"]["hash"], first["model"]["hash"], "the same model bytes");
    assert_eq!(second["signature"]["features"].as_array().map(Vec::len), Some(4), "{second}");
    assert_eq!(alias_version(&fleet.registry(), "iris", "latest"), Some(1), "an equal model is not promoted");
    let decision = fleet.read_json(&format!("{}/iris/versions/000002.decision.json", fleet.registry_key()));
    assert_eq!(decision["promoted"], false);
    assert!(decision["reason"].as_str().unwrap_or_default().contains("does not beat version 1"), "{decision}");

    // An operator promotes version 2 to production (nothing there yet), then is refused
    // moving version 1 over it without --force, forces it, and rolls back.
    let store = Some(fleet.artifacts.as_path());
    let out = warren_in(&t, store, &["models", "promote", "iris", "2", "--to", "production"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("`production` now points at version 2"));
    let out = warren_in(&t, store, &["models", "promote", "iris", "1", "--to", "production"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not beat version 2"), "{out:?}");
    let out = warren_in(&t, store, &["models", "promote", "iris", "1", "--to", "production", "--force"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = warren_in(&t, store, &["models", "rollback", "iris", "--alias", "production"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(alias_version(&fleet.registry(), "iris", "production"), Some(2));
    let listed = warren_in(&t, store, &["models", "list", "iris"]).await;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("production") && text.contains("latest") && text.contains("kept out"), "{text}");
    let shown = warren_in(&t, store, &["models", "show", "iris", "production", "--json"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("models show --json");
    assert_eq!((shown["version"].as_u64(), shown["job"].as_str()), (Some(2), Some(again.to_string().as_str())));
    assert!(shown["dataset_hash"].as_str().is_some_and(|h| h.starts_with("sha256:")), "{shown}");

    // The same predict worker answers from the alias as it is now, without a restart.
    let production = PredictRequest { version: Some("production".into()), ..request.clone() };
    let reply: Predictions =
        t.client.call("predict", rmpv::Value::Nil, production, Duration::from_secs(30)).await.expect("predict");
    assert_eq!(reply.version, 2, "the alias is resolved per request");
    assert_eq!(reply.labels, vec!["setosa".to_owned(), "virginica".to_owned()]);
    let reply: Predictions =
        t.client.call("predict", rmpv::Value::Nil, request, Duration::from_secs(30)).await.expect("predict replies");
    assert_eq!(reply.version, 1, "`latest` is still version 1");

    // Batch scoring: the whole ingested iris dataset, predictions written as an artifact.
    let dir = fleet.artifacts.join("iris").join(iris.to_string()).join("ingest");
    let file = std::fs::read_dir(&dir).expect("ingest dir").flatten().next().expect("dataset artifact").path();
    let bytes = std::fs::read(&file).expect("dataset bytes");
    let dataset = warren_schemas::ArtifactRef {
        uri: format!("file://{}", file.canonicalize().expect("path").display()),
        hash: content_hash(&bytes),
        bytes: bytes.len() as u64,
    };
    let batch = PredictRequest {
        model: "iris".into(),
        version: Some("1".into()),
        rows: vec![],
        columns: None,
        dataset: Some(dataset),
    };
    let scored: Predictions =
        t.client.call("predict", rmpv::Value::Nil, batch, Duration::from_secs(30)).await.expect("batch predict");
    assert_eq!((scored.version, scored.labels.len(), scored.scored, scored.refused.len()), (1, 150, 150, 0));
    assert_eq!(scored.labels.iter().filter(|l| *l == "setosa").count(), 50, "setosa is separable");
    let out = scored.artifact.expect("predictions artifact");
    assert!(std::path::Path::new(out.uri.trim_start_matches("file://")).exists(), "{}", out.uri);

    // `version` as a number, as PROTOCOL.md shows it, answers.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct NumberedRequest {
        model: String,
        version: u64,
        rows: Vec<Vec<f64>>,
    }
    impl warren::Payload for NumberedRequest {
        const SCHEMA: &'static str = "warren.ml.PredictRequest/1";
    }
    let numbered = NumberedRequest { model: "iris".into(), version: 1, rows: vec![vec![5.1, 3.5, 1.4, 0.2]] };
    let reply: Predictions = t
        .client
        .call("predict", rmpv::Value::Nil, numbered, Duration::from_secs(30))
        .await
        .expect("a numbered version");
    assert_eq!((reply.version, reply.labels[0].as_str()), (1, "setosa"));

    // A row of the wrong width gets an error reply naming the columns, at once, not silence.
    let narrow = PredictRequest {
        model: "iris".into(),
        version: None,
        rows: vec![cells(&[1.0, 2.0])],
        columns: None,
        dataset: None,
    };
    let started = std::time::Instant::now();
    let err = t
        .client
        .call::<_, Predictions>("predict", rmpv::Value::Nil, narrow, Duration::from_secs(30))
        .await
        .expect_err("a bad row is refused");
    assert!(started.elapsed() < Duration::from_secs(10), "answered, not timed out: {err}");
    match &err {
        warren::CallError::Remote(e) => {
            assert_eq!(e.step, "predict");
            assert!(e.message.starts_with("wrong_shape:"), "{e:?}");
            assert!(e.message.contains("the model takes 4") && e.message.contains("petal"), "{e:?}");
        }
        other => panic!("expected an error reply, got {other}"),
    }
    let unknown = PredictRequest {
        model: "iris".into(),
        version: Some("9".into()),
        rows: vec![cells(&[5.1, 3.5, 1.4, 0.2])],
        columns: None,
        dataset: None,
    };
    match t.client.call::<_, Predictions>("predict", rmpv::Value::Nil, unknown, Duration::from_secs(30)).await {
        Err(warren::CallError::Remote(e)) => assert!(e.message.starts_with("unknown_version:"), "{e:?}"),
        other => panic!("expected an unknown_version reply, got {other:?}"),
    }

    // The same from the command line, as an operator asks after `docker compose up`.
    let out = warren_in(&t, None, &["predict", "iris", "--row", "5.1,3.5,1.4,0.2", "--row", "6.3,2.9,5.6,1.8"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("5.1,3.5,1.4,0.2 → setosa") && stdout.contains("→ virginica"), "{stdout}");
    let out = warren_in(&t, None, &["predict", "iris", "--row", "1,2,3"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong_shape: row 1 has 3 values"));
    let out = warren_in(&t, None, &["predict", "iris", "--row", "5.1,x,1.4,0.2"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row 1, `sepal_width`: x is not a finite number"), "text in a numeric column: {stderr}");

    fleet.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_job_rewrites_nothing_and_a_cached_step_does_not_run_again() {
    let mut t = TestNs::new("mlcache").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;

    let spec = spec("csv-example.toml");
    let job = t.client.submit(&spec.job()).await.expect("submit");
    wait_done(&mut events, job, Duration::from_secs(120)).await;
    let before = fleet.snapshot();

    // The job's first message again, as a redelivery would bring it (a new message id, so no
    // worker drops it as a duplicate): every step runs again and writes the same bytes to the
    // same keys, and select, having decided, emits nothing.
    let env = warren::Envelope {
        v: 1,
        job_id: job,
        message_id: Uuid::now_v7(),
        causation_id: None,
        pipeline: spec.name.clone(),
        slip: spec.slip(),
        schema: "warren.Start/1".to_owned(),
        payload: warren_schemas::Start::default(),
    };
    t.publish_raw("ingest", &env.encode().expect("encode"), crate::helpers::props_for_any(&env)).await;
    // Both trials reach select again (2 the first time, 2 now); select has decided already.
    events
        .wait_count("both trials at select twice", Duration::from_secs(120), 4, |e| {
            e.job_id == job && &*e.step == "select" && e.kind == EventKind::Succeeded
        })
        .await;
    assert_eq!(fleet.snapshot(), before, "the artifact store is as it was");
    let registrations = events
        .seen
        .iter()
        .filter(|e| e.job_id == job && &*e.step == "register" && e.kind == EventKind::Succeeded)
        .count();
    assert_eq!(registrations, 1, "registered once");

    // A second identical submission: ingest has `cache = true`, so its output is reused.
    let second = t.client.submit(&spec.job()).await.expect("submit again");
    wait_done(&mut events, second, Duration::from_secs(120)).await;
    let hit = events.seen.iter().find(|e| {
        e.job_id == second
            && &*e.step == "ingest"
            && e.kind == EventKind::Report
            && e.detail.as_ref().is_some_and(|d| d.to_string().contains("hit"))
    });
    assert!(hit.is_some(), "ingest reports a cache hit");
    let ran = fleet.snapshot().keys().any(|k| k.contains(&second.to_string()) && k.contains("/ingest/"));
    assert!(!ran, "the cached step wrote nothing for the second job");

    fleet.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_csv_row_dead_letters_at_validate_and_a_replay_after_the_fix_finishes_the_job() {
    let mut t = TestNs::new("mlcsv").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;

    let good = std::fs::read_to_string(repo().join("data/example.csv")).expect("example csv");
    let csv = fleet.artifacts.join("upload.csv");
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let original = lines[7].clone();
    let mut cells: Vec<&str> = original.split(',').collect();
    cells[1] = "n/a?";
    lines[7] = cells.join(",");
    std::fs::write(&csv, lines.join("\n") + "\n").expect("write bad csv");

    let mut spec = spec("csv-example.toml");
    spec.set("ingest.csv", "\"data:upload.csv\"").expect("set csv");
    let job = t.client.submit(&spec.job()).await.expect("submit");
    let dead = events
        .wait("validate dead-letters it", Duration::from_secs(60), |e| e.job_id == job && e.kind == EventKind::Dead)
        .await;
    assert_eq!(&*dead.step, "validate");
    let letters = warren_ops::dlq::list(&t.broker, &t.names, "validate", &Default::default()).await.expect("list");
    assert_eq!(letters.len(), 1);
    let reason = header(&letters[0].properties, headers::ERROR).unwrap_or_default();
    assert!(reason.contains("row 7") && reason.contains("bill_depth"), "the reason names the row and column: {reason}");
    assert_eq!(header(&letters[0].properties, headers::ERROR_KIND).as_deref(), Some("permanent"));

    // Fix the file and replay the dead letter: the job finishes.
    std::fs::write(&csv, &good).expect("fix csv");
    let filter = warren_ops::dlq::Filter { job: Some(job.to_string()), ..Default::default() };
    let report =
        warren_ops::dlq::replay(&t.broker, &t.names, "validate", &filter, &Default::default()).await.expect("replay");
    assert_eq!(report.replayed, 1);
    wait_done(&mut events, job, Duration::from_secs(120)).await;
    assert!(
        warren_ops::dlq::list(&t.broker, &t.names, "validate", &Default::default()).await.expect("list").is_empty()
    );

    fleet.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promotion_gate_refuses_a_model_below_its_minimum_and_says_why() {
    let mut t = TestNs::new("mlgate").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let mut spec = spec("csv-example.toml");
    spec.set("register.min_metrics", "{ f1_macro = 1.01 }").expect("set the gate");
    let job = t.client.submit(&spec.job()).await.expect("submit");
    wait_done(&mut events, job, Duration::from_secs(120)).await;
    let refusal = events
        .wait("the register report", Duration::from_secs(10), |e| {
            e.job_id == job && &*e.step == "register" && e.kind == EventKind::Report
        })
        .await;
    let detail = serde_json::to_value(refusal.detail.as_ref().expect("detail")).expect("json");
    assert_eq!(detail["promoted"], false, "{detail}");
    let reason = detail["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("f1_macro") && reason.contains("1.01"), "{reason}");
    assert!(!fleet.registry().join("csv-example").exists(), "nothing registered");
    fleet.stop().await;
    t.cleanup().await;
}

/// The two edit examples of docs/OPERATIONS.md, run with the real `warren` command: a step
/// parameter (`--set test_fraction=0.3` at features) and a trial's hyperparameter
/// (`--payload-set candidate.hyperparams.alpha=0.1` at train) each turn a dead job into a
/// finished one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_edits_turn_dead_jobs_into_finished_ones() {
    let mut t = TestNs::new("mledit").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let docs = std::fs::read_to_string(repo().join("docs/OPERATIONS.md")).expect("OPERATIONS.md");
    let documented = |needle: &str| {
        let line = docs.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("OPERATIONS.md shows {needle}"));
        line.split('#').next().unwrap_or_default().split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>()
    };
    let t_ref = &t;
    let warren = move |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        warren_in(t_ref, None, &args).await
    };

    // A parameter: features refuses a test fraction of 1.5; the documented --set fixes it.
    let mut bad_fraction = spec("iris.toml");
    bad_fraction.set("features.test_fraction", "1.5").expect("set");
    let first = t.client.submit(&bad_fraction.job()).await.expect("submit");
    let dead = events
        .wait("features dead-letters it", Duration::from_secs(60), |e| e.job_id == first && e.kind == EventKind::Dead)
        .await;
    assert_eq!(&*dead.step, "features");
    let mut args = documented("--set test_fraction=0.3");
    args.extend(["--wait".to_owned(), "60".to_owned()]);
    let out = warren(args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 succeeded, 0 dead again"), "{text}");
    wait_done(&mut events, first, Duration::from_secs(120)).await;

    // A trial's hyperparameter: a one-trial grid with a negative alpha dies at train; the
    // documented --payload-set fixes the trial and select, which waits for every trial, goes on.
    let mut bad_alpha = spec("iris.toml");
    bad_alpha.set("tune.search", r#"[{ algorithm = "logistic", grid = { alpha = [-1.0] } }]"#).expect("set the grid");
    let second = t.client.submit(&bad_alpha.job()).await.expect("submit");
    let dead = events
        // Each worker batches its events for 100 ms: select's death (1 of 1 trials died) can
        // reach the stream before train's.
        .wait("train dead-letters the trial", Duration::from_secs(60), |e| {
            e.job_id == second && e.kind == EventKind::Dead && &*e.step == "train"
        })
        .await;
    assert!(dead.error.as_deref().unwrap_or_default().contains("alpha"), "{dead:?}");
    let mut args = documented("--payload-set candidate.hyperparams.alpha=0.1");
    args.extend(["--wait".to_owned(), "60".to_owned()]);
    let out = warren(args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    wait_done(&mut events, second, Duration::from_secs(120)).await;

    let history = warren(vec!["dlq".into(), "history".into(), "--json".into()]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history json");
    assert_eq!(history.as_array().map(Vec::len), Some(2));
    assert!(history.as_array().expect("rows").iter().all(|a| a["action"] == "edit"));
    fleet.stop().await;
    t.cleanup().await;
}

/// `warren cancel` stops a running 16-trial tune job: workers ack its trials without running
/// them, nothing of it is left in any queue, the job never registers, its state is `cancelled`,
/// and the cancel is in `warren dlq history` with actor and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_tune_job_and_leaves_nothing_queued() {
    let mut t = TestNs::new("mlcancel").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let mut spec = spec("wine-quality.toml");
    let alphas: Vec<String> = (0..16).map(|i| format!("{:.4}", 0.001 * 1.6f64.powi(i))).collect();
    let grid = format!(
        r#"[{{ algorithm = "logistic", grid = {{ alpha = [{}], max_iterations = [300] }} }}]"#,
        alphas.join(", ")
    );
    spec.set("tune.search", &grid).expect("16 trials");
    spec.set("tune.budget", "16").ok();
    let job = t.client.submit(&spec.job()).await.expect("submit");
    events
        .wait("the first trial to start", Duration::from_secs(120), |e| {
            e.job_id == job && &*e.step == "train" && e.started_at_ms().is_some()
        })
        .await;
    let out = warren_in(&t, None, &["cancel", &job.to_string(), "--reason", "wrong data set", "--actor", "bob"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    events
        .wait("a trial dropped as cancelled", Duration::from_secs(60), |e| {
            e.job_id == job && e.kind == EventKind::Cancelled
        })
        .await;
    for step in ML_STEPS {
        let queue = t.names.step_queue(step);
        crate::helpers::wait_for(&format!("{queue} empty"), Duration::from_secs(60), || async {
            t.queue_counts(&queue).await.filter(|(ready, _)| *ready == 0)
        })
        .await;
    }
    let trained =
        events.seen.iter().filter(|e| e.job_id == job && &*e.step == "train" && e.kind == EventKind::Succeeded).count();
    let dropped = events.seen.iter().filter(|e| e.job_id == job && e.kind == EventKind::Cancelled).count();
    assert!(trained < 16, "the cancel stopped the trials ({trained} trained, {dropped} dropped)");
    assert!(!events.seen.iter().any(|e| e.job_id == job && &*e.step == "register"), "the job never reached register");
    let status = warren_in(&t, None, &["--json", "status", &job.to_string()]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["state"], "cancelled");
    let history = warren_in(&t, None, &["--json", "dlq", "history"]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history json");
    assert_eq!(history[0]["action"], "cancel");
    assert_eq!(history[0]["actor"], "bob");
    assert_eq!(history[0]["reason"], "wrong data set");
    fleet.stop().await;
    t.cleanup().await;
}

/// `warren rerun --from evaluate` of a finished iris job starts a new job at evaluate from the
/// old job's selected model: nothing upstream runs again (no new ingest, features or train
/// artifact), the new job registers under the changed name, and its events link to the old job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_a_step_reuses_the_upstream_results_and_links_the_jobs() {
    let mut t = TestNs::new("mlrerun").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let old = t.client.submit(&spec("iris.toml").job()).await.expect("submit");
    wait_done(&mut events, old, Duration::from_secs(180)).await;

    let bad = warren_in(
        &t,
        Some(&fleet.artifacts),
        &["rerun", &old.to_string(), "--from", "evaluate", "--set", "register.modle=x"],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let out = warren_in(
        &t,
        Some(&fleet.artifacts),
        &[
            "--json",
            "rerun",
            &old.to_string(),
            "--from",
            "evaluate",
            "--set",
            "register.model=iris-rerun",
            "--actor",
            "carol",
            "--reason",
            "register under a new name",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let new: Uuid = reply["job"].as_str().and_then(|j| j.parse().ok()).expect("new job id");
    assert_ne!(new, old);
    wait_done(&mut events, new, Duration::from_secs(120)).await;
    // Each worker batches its own events: evaluate's success may arrive after register's.
    events
        .wait("evaluate's success in the new job", Duration::from_secs(10), |e| {
            e.job_id == new && &*e.step == "evaluate" && e.kind == EventKind::Succeeded
        })
        .await;

    let ran: std::collections::BTreeSet<String> = events
        .seen
        .iter()
        .filter(|e| e.job_id == new && e.kind == EventKind::Succeeded)
        .map(|e| e.step.to_string())
        .collect();
    assert_eq!(
        ran,
        ["evaluate", "register"].into_iter().map(str::to_owned).collect(),
        "only evaluate and register ran"
    );
    let new_dir = fleet.artifacts.join("iris").join(new.to_string());
    for upstream in ["ingest", "validate", "features", "tune", "train", "select"] {
        assert!(!new_dir.join(upstream).exists(), "no new {upstream} artifact for the rerun");
    }
    let entry = entry(&fleet, "iris-rerun");
    assert_eq!(entry["job_id"], new.to_string());

    let status = warren_in(&t, Some(&fleet.artifacts), &["--json", "status", &new.to_string()]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let link = status["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "operator")
        .expect("the rerun is in the new job's events");
    let text = link.to_string();
    assert!(text.contains(&old.to_string()) && text.contains("rerun"), "{text}");
    let history = warren_in(&t, Some(&fleet.artifacts), &["--json", "dlq", "history"]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history json");
    let rerun =
        history.as_array().and_then(|h| h.iter().find(|a| a["action"] == "rerun")).expect("the rerun is recorded");
    assert_eq!((rerun["actor"].as_str(), rerun["reason"].as_str()), (Some("carol"), Some("register under a new name")));
    fleet.stop().await;
    t.cleanup().await;
}

/// Fan-in with failures: a trial that dies at train is reported to select. With `continue` the
/// job goes on with the others; with the default `fail` it dies at select naming the dead trial.
/// Either way, the dead trial replayed later ends in exactly one selection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_trial_goes_on_or_fails_by_policy_and_a_replay_still_selects_once() {
    let mut t = TestNs::new("mlfanin").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let grid = r#"[{ algorithm = "logistic", grid = { alpha = [-1.0, 0.1, 1.0] } }]"#;
    let t_ref = &t;
    let warren = move |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        warren_in(t_ref, None, &args).await
    };
    let fix_trial = |job: Uuid| {
        vec![
            "dlq",
            "replay",
            "--step",
            "train",
            "--job",
            &job.to_string(),
            "--payload-set",
            "candidate.hyperparams.alpha=0.5",
            "--wait",
            "60",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let selections = |events: &crate::helpers::Events, job: Uuid| {
        events
            .seen
            .iter()
            .filter(|e| e.job_id == job && &*e.step == "select" && e.kind == EventKind::Succeeded && e.outputs == 1)
            .count()
    };

    // continue: the job goes on with two of three trials.
    let mut going_on = spec("iris.toml");
    going_on.set("tune.search", grid).expect("grid");
    going_on.set("select.on_failed_trial", "\"continue\"").expect("policy");
    going_on.set("select.min_trials", "2").expect("min");
    let first = t.client.submit(&going_on.job()).await.expect("submit");
    wait_done(&mut events, first, Duration::from_secs(180)).await;
    assert!(events.seen.iter().any(|e| e.job_id == first && &*e.step == "train" && e.kind == EventKind::Dead));
    let out = warren(fix_trial(first)).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Select has handled two trials and the notice of the dead one; the replayed trial is the fourth.
    events
        .wait_count("the replayed trial at select", Duration::from_secs(60), 4, |e| {
            e.job_id == first && &*e.step == "select" && e.kind == EventKind::Succeeded
        })
        .await;

    // fail (the default): the job dies at select, naming the dead trial; the replay finishes it.
    let mut strict = spec("iris.toml");
    strict.set("tune.search", grid).expect("grid");
    let second = t.client.submit(&strict.job()).await.expect("submit");
    let dead = events
        .wait("the job dies at select", Duration::from_secs(180), |e| {
            e.job_id == second && &*e.step == "select" && e.kind == EventKind::Dead
        })
        .await;
    let reason = dead.error.clone().unwrap_or_default();
    assert!(reason.contains("trial 0") && reason.contains("alpha"), "{reason}");
    let out = warren(fix_trial(second)).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_done(&mut events, second, Duration::from_secs(120)).await;

    assert_eq!(selections(&events, first), 1, "exactly one selection with continue");
    assert_eq!(selections(&events, second), 1, "exactly one selection with fail, after the replay");
    fleet.stop().await;
    t.cleanup().await;
}

/// A CSV whose target is whole-number class ids, with no flag saying so, runs as classification
/// (as scikit-learn's `type_of_target` reads it), and the job's events say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_class_csv_runs_as_classification_without_flags() {
    let mut t = TestNs::new("mlintclass").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let text = std::fs::read_to_string(repo().join("data/example.csv")).expect("example csv");
    let mut ids: Vec<String> = Vec::new();
    let numbered: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                return format!("{line}\n");
            }
            let (features, species) = line.rsplit_once(',').expect("a row");
            let id = ids.iter().position(|s| s == species).unwrap_or_else(|| {
                ids.push(species.to_owned());
                ids.len() - 1
            });
            format!("{features},{id}\n")
        })
        .collect();
    std::fs::write(fleet.artifacts.join("intclass.csv"), numbered).expect("write csv");
    let mut spec = spec("csv-example.toml");
    spec.set("ingest.csv", "\"data:intclass.csv\"").expect("csv");
    let job = t.client.submit(&spec.job()).await.expect("submit");
    wait_done(&mut events, job, Duration::from_secs(120)).await;
    let report = events
        .wait("ingest's task report", Duration::from_secs(10), |e| {
            e.job_id == job && &*e.step == "ingest" && e.kind == EventKind::Report
        })
        .await;
    let detail = serde_json::to_value(report.detail.expect("detail")).expect("json");
    assert_eq!(detail["task"], "classification", "{detail}");
    assert!(detail["because"].as_str().unwrap_or_default().contains("whole numbers"), "{detail}");
    fleet.stop().await;
    t.cleanup().await;
}

/// Two register workers take 20 evaluations of one model at once: every evaluation gets its
/// own version, every alias move follows the one before it (no lost update), each move is to a
/// better model, and `latest` ends at the best one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_register_workers_racing_keep_latest_consistent_and_never_promote_a_worse_model() {
    use warren_schemas::{ArtifactRef, Candidate, Evaluation, Features, Model, Scaler, Task};
    let mut t = TestNs::new("mlrace").await;
    let mut events = t.events().await;
    let fleet = Fleet::start_steps(&mut t, &[("register", 2, &[("WARREN_CONCURRENCY", "4")])]).await;
    let artifacts = fleet.artifacts.clone();

    let artifact = |name: &str| ArtifactRef { uri: format!("file:///nowhere/{name}"), hash: String::new(), bytes: 0 };
    // Scores in a scrambled order: 0.70 .. 0.89.
    let scores: Vec<f64> = (0..20u32).map(|i| 0.70 + f64::from((i * 7) % 20) / 100.0).collect();
    let hop = warren::envelope::Hop {
        step: "register".into(),
        params: rmpv::Value::Map(vec![("model".into(), "race".into())]),
        cache: false,
        gather: false,
    };
    let jobs: Vec<_> = scores
        .iter()
        .enumerate()
        .map(|(i, &accuracy)| {
            let features = Features {
                dataset_hash: "sha256:race".into(),
                train: artifact("train"),
                test: artifact("test"),
                feature_names: vec!["a".into(), "b".into()],
                target: "y".into(),
                task: Task::Classification,
                classes: vec!["no".into(), "yes".into()],
                scaler: Some(Scaler { means: vec![0.0, 0.0], stds: vec![1.0, 1.0] }),
                seed: 1,
                preprocessor: None,
            };
            let model = Model {
                artifact: artifact(&format!("model-{i}")),
                candidate: Candidate { algorithm: warren_schemas::Algorithm::Logistic, hyperparams: BTreeMap::new() },
                features,
                trial: 0,
                trials: 1,
                metric: "accuracy".into(),
                validation_score: accuracy,
                format: Default::default(),
            };
            let ev = Evaluation {
                model,
                metrics: [("accuracy".to_owned(), accuracy)].into(),
                confusion: None,
                report: artifact("report"),
            };
            warren::JobSpec::new("race", vec![hop.clone()], ev)
        })
        .collect();
    let ids = t.client.submit_many(&jobs).await.expect("submit 20 evaluations");
    events
        .wait_count("20 registrations", Duration::from_secs(60), 20, |e| {
            ids.contains(&e.job_id) && e.kind == EventKind::Succeeded && &*e.step == "register"
        })
        .await;

    let read = |key: String| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(artifacts.join(&key)).unwrap_or_else(|e| panic!("{key}: {e}")))
            .expect("json")
    };
    let mut by_version = BTreeMap::new();
    for v in 1..=20u64 {
        let e = read(format!("registry/{}/race/versions/{v:06}.json", t.ns));
        let d = read(format!("registry/{}/race/versions/{v:06}.decision.json", t.ns));
        by_version.insert(v, (e["metrics"]["accuracy"].as_f64().expect("accuracy"), d));
    }
    assert!(
        !artifacts.join(format!("registry/{}/race/versions/000021.json", t.ns)).exists(),
        "one version per evaluation"
    );
    let mut moves: Vec<PathBuf> = std::fs::read_dir(artifacts.join(format!("registry/{}/race/aliases/latest", t.ns)))
        .expect("latest moves")
        .flatten()
        .map(|e| e.path())
        .collect();
    moves.sort();
    let mut previous: Option<u64> = None;
    let mut best_so_far = f64::NEG_INFINITY;
    for (i, path) in moves.iter().enumerate() {
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("move")).expect("json");
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "moves are numbered without gaps");
        assert_eq!(m["previous"].as_u64(), previous, "each move starts where the one before ended: {m}");
        let v = m["version"].as_u64().expect("version");
        let score = by_version[&v].0;
        assert!(score > best_so_far, "move {} promotes version {v} ({score}) over a better one ({best_so_far})", i + 1);
        best_so_far = score;
        previous = Some(v);
    }
    let best = by_version.iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0)).map(|(v, _)| *v);
    assert_eq!(
        alias_version(&artifacts.join("registry").join(&t.ns), "race", "latest"),
        best,
        "`latest` ends at the best model"
    );
    for (v, (score, d)) in &by_version {
        if d["promoted"] == false {
            let against = d["against_score"].as_f64().expect("a refusal names what it lost to");
            assert!(against >= *score, "version {v} ({score}) was kept out by a worse one ({against})");
        }
    }
    fleet.stop().await;
    t.cleanup().await;
}

/// Forests and boosting are bit-reproducible: the same candidate trained by two worker
/// processes gives the same model bytes. And a trial past the step's maximum duration stops
/// training within a second of it, says so in the worker's log, and dies after its attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensembles_are_reproducible_across_processes_and_training_stops_at_its_maximum_duration() {
    let mut t = TestNs::new("mlensemble").await;
    let mut events = t.events().await;
    let env = [("WARREN_MAX_DURATION_MS", "1500"), ("WARREN_MAX_ATTEMPTS", "1")];
    let fleet = Fleet::start_with(&mut t, 2, &env).await;
    let mut spec = spec("iris.toml");
    spec.set(
        "tune.search",
        r#"[{ algorithm = "random_forest", grid = { n_estimators = [30, 30], seed = [3] } },
            { algorithm = "gradient_boosting", grid = { n_estimators = [30, 30], seed = [3] } }]"#,
    )
    .expect("search");
    let job = t.client.submit(&spec.job()).await.expect("submit");
    wait_done(&mut events, job, Duration::from_secs(180)).await;
    let is_trained = |e: &warren::JobEvent| e.job_id == job && &*e.step == "train" && e.kind == EventKind::Succeeded;
    events.wait_count("four trained trials", Duration::from_secs(10), 4, is_trained).await;
    let workers: std::collections::BTreeSet<&str> =
        events.seen.iter().filter(|e| is_trained(e)).map(|e| &*e.worker).collect();
    assert_eq!(workers.len(), 2, "both train workers trained trials: {workers:?}");
    let mut trained: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for trial in 0..4u64 {
        let path =
            fleet.artifacts.join("iris").join(job.to_string()).join("train").join(format!("model-{trial:04}.msgpack"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        trained.insert(trial, (String::new(), content_hash(&bytes)));
    }
    assert_eq!(trained[&0].1, trained[&1].1, "two forests of the same seed have the same bytes");
    assert_eq!(trained[&2].1, trained[&3].1, "two boosted models of the same seed have the same bytes");
    assert_ne!(trained[&0].1, trained[&2].1);

    // A forest too big for 1.5 s: stopped, not left running beside the retry.
    spec.set("tune.search", r#"[{ algorithm = "random_forest", grid = { n_estimators = [1000000] } }]"#)
        .expect("search");
    let slow = t.client.submit(&spec.job()).await.expect("submit");
    events
        .wait("the oversized trial's death", Duration::from_secs(60), |e| {
            e.job_id == slow && &*e.step == "train" && e.kind == EventKind::Dead
        })
        .await;
    // The training thread logs its stop as it notices the flag, just after the death.
    let log_dir = t.log_dir();
    let line = crate::helpers::wait_for("train's log of the stop", Duration::from_secs(10), || {
        let log_dir = log_dir.clone();
        async move {
            (0..2)
                .map(|i| std::fs::read_to_string(log_dir.join(format!("train-{i}.log"))).unwrap_or_default())
                .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
                .find(|l| l.contains("training stopped"))
                .map(|l| crate::helpers::strip_ansi(&l))
        }
    })
    .await;
    let after: u64 = line
        .split("after_ms=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no after_ms in {line}"));
    assert!((1500..2500).contains(&after), "training stopped {after} ms after it started (limit 1500 ms): {line}");
    fleet.stop().await;
    t.cleanup().await;
}

/// A predict request's row of numbers.
fn cells(values: &[f64]) -> Vec<Option<warren_schemas::Cell>> {
    values.iter().map(|v| Some(warren_schemas::Cell::Number(*v))).collect()
}

/// The report `step` made for `job` holding `key`, as JSON.
fn report_with(events: &crate::helpers::Events, job: Uuid, step: &str, key: &str) -> serde_json::Value {
    events
        .seen
        .iter()
        .filter(|e| e.job_id == job && &*e.step == step && e.kind == EventKind::Report)
        .filter_map(|e| serde_json::to_value(e.detail.as_ref()?).ok())
        .find(|d| d.get(key).is_some())
        .unwrap_or_else(|| panic!("{step} reported no `{key}` for job {job}"))
}

/// The Palmer penguins file exactly as the PyPI package ships it (text columns, `NA` gaps)
/// trains, evaluates, registers and answers raw rows: as a classification of the species with
/// the automatic preprocessing, and as a regression of body mass with the preprocessing spelled
/// out in the spec. The kinds inferred and the preprocessing fitted are in the job's events; a
/// gap and an unseen category are answered, a missing column is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_penguins_csv_as_shipped_trains_registers_and_answers_raw_rows() {
    let mut t = TestNs::new("mlpenguins").await;
    let mut events = t.events().await;
    let fleet = Fleet::start(&mut t, 1).await;
    let species = t.client.submit(&spec("penguins.toml").job()).await.expect("submit penguins");
    let mass = t.client.submit(&spec("penguins-body-mass.toml").job()).await.expect("submit body mass");
    wait_done(&mut events, species, Duration::from_secs(300)).await;
    wait_done(&mut events, mass, Duration::from_secs(300)).await;

    let ingested = report_with(&events, species, "ingest", "columns");
    assert_eq!(ingested["columns"]["island"], "categorical", "{ingested}");
    assert_eq!(ingested["columns"]["sex"], "categorical", "{ingested}");
    assert_eq!(ingested["columns"]["bill_length_mm"], "numeric", "{ingested}");
    let prepared = report_with(&events, species, "features", "preprocessing");
    let lines = prepared["preprocessing"].to_string();
    assert!(
        lines.contains("sex (categorical): gaps ← most_frequent ") && lines.contains("one-hot over female, male"),
        "{lines}"
    );
    assert!(lines.contains("bill_length_mm (numeric): gaps ← mean"), "{lines}");
    assert_eq!(prepared["dropped_rows"], 0, "every penguin has a species");
    let typed = report_with(&events, mass, "ingest", "columns");
    assert_eq!(typed["columns"]["year"], "categorical: types in the spec", "{typed}");
    let spelled = report_with(&events, mass, "features", "preprocessing");
    assert_eq!(spelled["dropped_rows"], 2, "two penguins have no body mass: {spelled}");
    assert!(spelled["preprocessing"].to_string().contains("year (categorical): gaps ← constant unknown, ordinal"));

    let classifier = entry(&fleet, "penguins");
    let inputs = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"];
    assert_eq!(classifier["signature"]["features"], serde_json::json!(inputs), "the raw columns: {classifier}");
    assert_eq!(classifier["signature"]["types"][0], "categorical");
    assert!(classifier["metrics"]["accuracy"].as_f64().unwrap_or_default() >= 0.95, "{classifier}");
    let regressor = entry(&fleet, "penguins-body-mass");
    assert!(regressor["metrics"]["r2"].as_f64().unwrap_or_default() >= 0.75, "{regressor}");

    let columns = inputs.join(",");
    let ask = |model: &'static str, columns: String, row: &'static str| {
        let t = &t;
        async move { warren_in(t, None, &["predict", model, "--columns", &columns, "--row", row]).await }
    };
    let out = ask("penguins", columns.clone(), "Torgersen,39.1,18.7,181,3750,male,2007").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Torgersen,39.1,18.7,181,3750,male,2007 → Adelie"), "{stdout}");
    // An island never seen in training and gaps are answered as the fitted preprocessing says.
    let out = ask("penguins", columns.clone(), "Atlantis,49.5,NA,220,,female,2008").await;
    assert!(out.status.success(), "answered: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("→ Gentoo"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = ask("penguins", "island,bill_length_mm".into(), "Torgersen,39.1").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("column `bill_depth_mm` is missing"), "a missing column is named: {stderr}");

    let mass_columns = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,sex,year".to_owned();
    let out = ask("penguins-body-mass", mass_columns, "Gentoo,Biscoe,47.5,15,217,female,2008").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let grams: f64 = stdout
        .lines()
        .find_map(|l| l.split_once(" → ").and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("a body mass: {stdout}"));
    assert!((4000.0..6500.0).contains(&grams), "a Gentoo weighs {grams} g?");

    fleet.stop().await;
    t.cleanup().await;
}
