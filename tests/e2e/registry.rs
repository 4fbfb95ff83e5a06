//! Any pipeline, any step: the textstats example under `warren up --fleet` and `warren submit`,
//! refusals at submit that name the line, input files only through the store, and what
//! `warren queues` shows of a one-at-a-time worker.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::Command;
use warren_e2e::Behaviour;

use crate::{
    helpers::{TestNs, hop, wait_for},
    ml::warren_bin,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn warren(t: &TestNs, artifacts: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(warren_bin());
    cmd.args(args)
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_ARTIFACTS", artifacts)
        .env_remove("WARREN_DATA_ROOT")
        .env_remove("RUST_LOG")
        .current_dir(repo())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in the spec")) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textstats_runs_under_a_fleet_file_and_submit_refuses_what_cannot_work() {
    let mut t = TestNs::new("textstats").await;
    for s in ["load", "count", "report"] {
        t.remember(s);
    }
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    crate::ml::worker_bin("x"); // builds the workers, the example's included
    let mut up = warren(&t, &artifacts, &["up", "--fleet", "examples/textstats/fleet.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warren up");
    t.wait_consumers("load", 1).await;
    t.wait_consumers("count", 2).await;
    t.wait_consumers("report", 1).await;

    // The registry lists the example's steps with their workers.
    let steps = wait_for("three registered steps", Duration::from_secs(30), || async {
        let out = warren(&t, &artifacts, &["steps", "--json"]).output().await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.len() == 3).then_some(v)
    })
    .await;
    let count = steps.as_array().and_then(|a| a.iter().find(|s| s["step"] == "count")).expect("count registered");
    assert_eq!(count["input"], "textstats.Document/1");
    assert_eq!(count["workers"].as_array().map(Vec::len), Some(2), "{count}");

    // A job: the spec's local file is uploaded, and the report counts its words.
    let out = warren(&t, &artifacts, &["submit", "examples/textstats/pipeline.toml", "--wait", "--timeout", "2m"])
        .output()
        .await
        .expect("submit");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("uploaded examples/textstats/data/sample.txt"), "{stderr}");
    let job = stdout
        .lines()
        .find(|l| l.contains(" done in "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the job's done line")
        .to_owned();
    let report = std::fs::read_to_string(artifacts.join("textstats").join(&job).join("report").join("report.md"))
        .expect("the report is in the store");
    let text = std::fs::read_to_string(repo().join("examples/textstats/data/sample.txt")).expect("sample");
    let the = text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| *w == "the").count();
    assert!(report.contains(&format!("| the | {the} |")), "{report}");

    // What cannot work is refused at submit, naming the line, and nothing is published.
    let spec = std::fs::read_to_string(repo().join("examples/textstats/pipeline.toml")).expect("spec");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("specs-{}", t.ns));
    std::fs::create_dir_all(&dir).expect("spec dir");
    let cases = [
        (
            "unknown-step",
            spec.replace("step = \"count\"", "step = \"cuont\""),
            "step = \"cuont\"",
            "unknown step `cuont`",
        ),
        ("bad-type", spec.replace("top = 5", "top = \"five\""), "top = \"five\"", "top"),
        ("out-of-range", spec.replace("top = 5", "top = 5000"), "top = 5000", "5000"),
        ("missing-upload", spec.replace("sample.txt", "nowhere.txt"), "nowhere.txt", "nowhere.txt"),
        (
            "bad-first-step",
            "name = \"x\"\n\n[[steps]]\nstep = \"count\"\n\n[[steps]]\nstep = \"report\"\n".to_owned(),
            "step = \"count\"",
            "cannot start a pipeline",
        ),
    ];
    for (name, text, needle, says) in cases {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, &text).expect("write spec");
        let out =
            warren(&t, &artifacts, &["submit", file.to_str().expect("utf-8 path")]).output().await.expect("submit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        let at = format!("{}:{}:", file.display(), line_of(&text, needle));
        assert!(err.contains(&at) && err.contains(says), "{name}: expected `{at}` and `{says}` in: {err}");
    }
    let (ready, _) = t.queue_counts(&t.names.step_queue("load")).await.expect("load queue");
    assert_eq!(ready, 0, "a refused spec publishes nothing");

    // A message naming a host file is refused by the worker with the reason, and dead-lettered.
    let out = warren(
        &t,
        &artifacts,
        &["submit", "examples/textstats/pipeline.toml", "--no-check", "--set", "load.file=/etc/passwd", "--wait"],
    )
    .output()
    .await
    .expect("submit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("dead at load") && stdout.contains("refused to read `/etc/passwd`"), "{stdout}");
    let dead = t.take_dead_letters("load").await;
    assert_eq!(dead.len(), 1);
    let reason = crate::helpers::header(&dead[0].0, "warren-error").unwrap_or_default();
    assert!(reason.contains("/etc/passwd") && reason.contains("data_root"), "{reason}");

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&artifacts).ok();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_a_worker_holds_one_message_and_queues_shows_the_rest_ready() {
    let mut t = TestNs::new("prefetch1").await;
    let mut worker = t.spawn_worker("slow", &[("WARREN_CONCURRENCY", "1"), ("WARREN_PREFETCH", "1")]);
    t.wait_consumers("slow", 1).await;
    let behaviour = Behaviour { sleep_ms: 20_000, ..Default::default() };
    t.declare_step("sink").await;
    t.submit(&[hop("slow", &behaviour), hop("sink", &Behaviour::default())], 0..20).await;
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    let row = wait_for("19 ready and 1 unacked on slow", Duration::from_secs(30), || async {
        let out = warren(&t, &artifacts, &["queues", "--json"]).output().await.ok()?;
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let row = rows.as_array()?.iter().find(|r| r["step"] == "slow")?.clone();
        (row["ready"] == 19 && row["unacked"] == 1).then_some(row)
    })
    .await;
    assert_eq!(row["consumers"], 1, "{row}");
    let prom = warren(&t, &artifacts, &["queues", "--prometheus"]).output().await.expect("queues --prometheus");
    let text = String::from_utf8_lossy(&prom.stdout);
    let line = format!("warren_queue_ready{{namespace=\"{}\",step=\"slow\"}} 19", t.ns);
    assert!(text.contains(&line), "{text}");
    let _ = worker.kill().await;
    t.cleanup().await;
}

/// Two namespaces on one artifact store keep their models apart, unless they name one
/// `registry_namespace` on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_on_one_store_share_models_only_on_purpose() {
    use warren_schemas::models::ModelRegistry;
    let (a, b) = (TestNs::new("models-a").await, TestNs::new("models-b").await);
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(format!("shared-{}", a.ns));
    let store = warren::artifacts::ArtifactStore::open(&artifacts.display().to_string()).expect("store");
    let mut entry = crate::helpers::model_entry("shared", 0.9);
    let v = ModelRegistry::new(&store, &a.ns, "shared").add(&mut entry).await.expect("register in a");
    assert_eq!(v, 1);
    let models = |t: &TestNs, registry: Option<&str>| {
        let mut cmd = warren(t, &artifacts, &["models", "list", "--json"]);
        if let Some(r) = registry {
            cmd.env("WARREN_REGISTRY_NAMESPACE", r);
        }
        cmd
    };
    let list = |out: std::process::Output| -> Vec<String> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array().expect("array").iter().filter_map(|m| m["model"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(list(models(&a, None).output().await.expect("a")), ["shared"]);
    assert!(list(models(&b, None).output().await.expect("b")).is_empty(), "b does not see a's model");
    assert_eq!(list(models(&b, Some(&a.ns)).output().await.expect("b shares")), ["shared"], "shared on purpose");
    std::fs::remove_dir_all(&artifacts).ok();
    a.cleanup().await;
    b.cleanup().await;
}
