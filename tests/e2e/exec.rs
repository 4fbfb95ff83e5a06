//! Steps in any language: Python steps run by `warren-exec` keep every guarantee of a Rust step.
//! The mixed example (Rust → Python with scikit-learn → Rust) under `warren up --fleet`, checked
//! at submit against the Python step's announced parameters, its failures dead-lettered and
//! replayed; and the Python probe step's children killed, hung and failing without a message
//! lost or a healthy one dead-lettered.
//!
//! These tests need a Python with this repository's `warren-step` package and scikit-learn:
//! `$WARREN_PYTHON` (`.ci/run` makes one, see README.md), else `python3`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use tokio::process::{Child, Command};
use uuid::Uuid;
use warren::{EventKind, Hop};

use crate::{
    helpers::{TestNs, amqp_url, header, wait_for},
    ml::worker_bin,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that runs the steps, checked once: it must import warren_step and sklearn.
pub(crate) fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var_os("WARREN_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into());
            let ok = std::process::Command::new(&python)
                .args(["-c", "import warren_step, sklearn"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{} cannot import warren_step and sklearn: make a virtualenv with both and point WARREN_PYTHON at its \
                 python (`python3 -m venv .venv && .venv/bin/pip install ./python scikit-learn`, then \
                 `WARREN_PYTHON=$PWD/.venv/bin/python cargo test --workspace`); .ci/run does this",
                python.display()
            );
            python
        })
        .clone()
}

/// PATH with the Python's directory first, so `python3` in a fleet file is that Python.
fn path_with_python() -> String {
    let python = python();
    let dir = python.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf);
    let path = std::env::var("PATH").unwrap_or_default();
    match dir {
        Some(d) => format!("{}:{path}", d.display()),
        None => path,
    }
}

fn warren(t: &TestNs, artifacts: &Path, args: &[&str]) -> Command {
    let mut cmd = crate::registry::warren(t, artifacts, args);
    cmd.env("PATH", path_with_python());
    cmd
}

async fn run(t: &TestNs, artifacts: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = warren(t, artifacts, args).output().await.expect("run warren");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_crosses_rust_python_and_rust_and_python_failures_are_handled_like_rust_ones() {
    let mut t = TestNs::new("mixed").await;
    for s in ["load", "keywords", "report"] {
        t.remember(s);
    }
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    worker_bin("exec");
    let mut up = warren(&t, &artifacts, &["up", "--fleet", "examples/mixed/fleet.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warren up");
    for s in ["load", "keywords", "report"] {
        t.wait_consumers(s, 1).await;
    }

    // The Python step is registered like any other, with the parameters of its dataclass.
    let (code, steps, err) = run(&t, &artifacts, &["steps", "keywords", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let steps: serde_json::Value = serde_json::from_str(&steps).expect("steps --json");
    let d = &steps["descriptor"];
    assert_eq!((d["input"].as_str(), d["output"].as_str()), (Some("textstats.Document/1"), Some("textstats.Counts/1")));
    assert_eq!(d["params"]["properties"]["top"]["type"], "integer", "{d}");
    assert_eq!(d["max_duration_ms"], 120_000);

    // A job through Rust → Python → Rust: scikit-learn's English stop words are gone.
    let (code, out, err) = run(&t, &artifacts, &["submit", "examples/mixed/pipeline.toml", "--wait"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let job = out.lines().find(|l| l.contains(" done in ")).and_then(|l| l.split_whitespace().next()).expect("done");
    let report = std::fs::read_to_string(artifacts.join("mixed").join(job).join("report").join("report.md"))
        .expect("the Rust report step wrote the report");
    assert!(report.contains("Keywords (scikit-learn"), "{report}");
    assert!(report.contains("| warren |") && !report.contains("| the |"), "stop words dropped: {report}");

    // A wrong type is refused at submit against the Python step's schema, naming the line.
    let (code, _, err) =
        run(&t, &artifacts, &["submit", "examples/mixed/pipeline.toml", "--set", "keywords.top=\"five\""]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("examples/mixed/pipeline.toml:15:") && err.contains("top"), "{err}");

    // A permanent error from Python is dead-lettered with its reason, and replays with --set.
    let (code, out, _) =
        run(&t, &artifacts, &["submit", "examples/mixed/pipeline.toml", "--set", "keywords.top=0", "--wait"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("dead at keywords") && out.contains("top must be at least 1, not 0"), "{out}");
    let dead_job = out.split_whitespace().next().expect("job id").to_owned();
    let (code, groups, _) = run(&t, &artifacts, &["dlq", "groups"]).await;
    assert_eq!(code, Some(0));
    assert!(groups.lines().any(|l| l.contains("keywords") && l.contains("permanent")), "{groups}");
    let (code, queues, _) = run(&t, &artifacts, &["queues"]).await;
    assert_eq!(code, Some(0));
    assert!(queues.lines().any(|l| l.starts_with("keywords") && l.split_whitespace().nth(3) == Some("1")), "{queues}");
    // The console shows it like any other step: its queue with the dead letter, its registry
    // record with its schemas and live worker, and its failure group.
    let (_console, addr) = crate::console::console(&t, &artifacts).await;
    let (viewer, _) = crate::console::sign_in(&addr, crate::console::VIEWER);
    let page = crate::console::http(&addr, "GET", "/queues", Some(&viewer), None).expect("queues page");
    assert_eq!(page.status, 200);
    let row = page.body.split("<tr data-step=\"keywords\">").nth(1).and_then(|r| r.split("</tr>").next());
    let cells: Vec<&str> = row
        .expect("a queue row for keywords")
        .split("<td>")
        .skip(1)
        .map(|c| c.split("</td>").next().unwrap_or(""))
        .collect();
    assert_eq!((cells.get(3), cells.get(4)), (Some(&"1"), Some(&"1")), "one consumer, one dead letter: {cells:?}");
    assert!(
        page.body.contains("<tr><td>keywords</td><td>1</td><td>textstats.Document/1 → textstats.Counts/1</td>"),
        "the registry record: {}",
        page.body
    );
    let failures = crate::console::http(&addr, "GET", "/failures", Some(&viewer), None).expect("failures page");
    assert!(failures.body.contains("top must be at least 1, not 0"), "{}", failures.body);
    assert!(failures.body.contains(&dead_job[..13]), "the group links the job: {}", failures.body);

    let (code, out, err) =
        run(&t, &artifacts, &["dlq", "replay", "--step", "keywords", "--set", "top=3", "--reason", "top fixed"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    wait_for("the replayed job done", Duration::from_secs(60), || async {
        let (_, status, _) = run(&t, &artifacts, &["status", &dead_job]).await;
        status.lines().any(|l| l.contains("report") && l.contains("succeeded")).then_some(())
    })
    .await;

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    let _ = std::fs::remove_dir_all(&artifacts);
    t.cleanup().await;
}

/// A `warren-exec` worker of the Python probe step as `step`.
fn exec_worker(t: &mut TestNs, step: &str, env: &[(&str, &str)]) -> Child {
    t.remember(step);
    let log = std::fs::File::create(t.log_dir().join(format!("{step}-{}.log", Uuid::now_v7()))).expect("log");
    let mut cmd = Command::new(worker_bin("exec"));
    cmd.args(["--step", step, "--"])
        .arg(python())
        .arg(repo().join("tests/steps/probe_step.py"))
        .env("WARREN_AMQP_URL", amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_RETRY_BASE_MS", "100")
        .env("WARREN_CONCURRENCY", "2")
        .env("RUST_LOG", "info,lapin=warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    cmd.spawn().expect("spawn warren-exec")
}

fn py_hop(step: &str, params: serde_json::Value) -> Hop {
    Hop::with_params(step, &params).expect("params encode")
}

/// The child processes of process `pid`.
async fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output().await.expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_children_killed_hung_or_failing_lose_nothing_and_dead_letter_nothing_healthy() {
    let mut t = TestNs::new("pychaos").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut events = t.events().await;
    let mut worker = exec_worker(&mut t, "py", &[("WARREN_MAX_DURATION_MS", "3000"), ("WARREN_MAX_ATTEMPTS", "3")]);
    t.wait_consumers("py", 1).await;
    let worker_pid = worker.id().expect("worker pid");

    // A child SIGKILLed mid-message: the worker lives on, the message is retried and arrives.
    let slow = py_hop("py", serde_json::json!({ "slow_on": 1, "sleep_ms": 60_000 }));
    let jobs = t.submit(&[slow, Hop::new("sink")], [1]).await;
    events
        .wait("the slow probe started", Duration::from_secs(30), |e| {
            e.job_id == jobs[0] && e.kind == EventKind::Started
        })
        .await;
    let children = children_of(worker_pid).await;
    assert!(!children.is_empty(), "warren-exec runs its children");
    for c in &children {
        let _ = Command::new("kill").args(["-KILL", &c.to_string()]).status().await;
    }
    let retried = events
        .wait("a retry after the child died", Duration::from_secs(30), |e| {
            e.job_id == jobs[0] && e.kind == EventKind::Retrying
        })
        .await;
    assert!(
        retried.error.as_deref().is_some_and(|m| m.contains("died while handling") && m.contains("signal 9")),
        "{retried:?}"
    );
    sink.wait_count(1, Duration::from_secs(60)).await;
    assert!(worker.try_wait().expect("worker status").is_none(), "the worker survives its child");

    // Retryable errors go through the retry queues; a hang past the maximum duration is
    // stopped and retried; a permanent error and a child that dies on every attempt are
    // dead-lettered with their reasons.
    let flaky = py_hop("py", serde_json::json!({ "fail_times": 1 }));
    t.submit(&[flaky, Hop::new("sink")], 2..=21).await;
    let hang = py_hop("py", serde_json::json!({ "hang_attempts": 1 }));
    let hung = t.submit(&[hang, Hop::new("sink")], [22]).await;
    let bad = py_hop("py", serde_json::json!({ "permanent_on": 23, "abort_on": 24 }));
    t.submit(&[bad, Hop::new("sink")], [23, 24]).await;
    let probes = sink.wait_count(22, Duration::from_secs(120)).await;
    let mut seqs: Vec<u64> = probes.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=22).collect::<Vec<_>>(), "every healthy probe arrives once");
    assert!(probes.iter().all(|p| p.hops == 1));
    let timeout = events
        .wait("the hung call timed out", Duration::from_secs(30), |e| {
            e.job_id == hung[0] && e.kind == EventKind::Retrying
        })
        .await;
    assert!(timeout.error.as_deref().is_some_and(|m| m.contains("maximum duration")), "{timeout:?}");
    t.wait_dead_letters("py", 2, Duration::from_secs(60)).await;
    let dead = t.take_dead_letters("py").await;
    let mut kinds: Vec<(String, String)> = dead
        .iter()
        .map(|(p, _)| {
            (header(p, "warren-error-kind").unwrap_or_default(), header(p, "warren-error").unwrap_or_default())
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, "crash", "{kinds:?}");
    assert!(kinds[0].1.contains("died while handling") && kinds[0].1.contains("after 3 attempts"), "{kinds:?}");
    assert_eq!(kinds[1].0, "permanent", "{kinds:?}");
    assert!(kinds[1].1.contains("probe 23 is refused on purpose"), "{kinds:?}");

    // The worker SIGKILLed with messages in flight: its children leave with it, a new worker
    // takes the messages, and nothing is lost or dead-lettered.
    let children = children_of(worker_pid).await;
    let busy = py_hop("py", serde_json::json!({ "sleep_ms": 50 }));
    t.submit(&[busy, Hop::new("sink")], 100..200).await;
    sink.wait_count(30, Duration::from_secs(60)).await;
    crate::helpers::signal(&worker, "KILL").await;
    let _ = worker.wait().await;
    wait_for("the killed worker's children to exit", Duration::from_secs(30), || async {
        children.iter().all(|c| !alive(*c)).then_some(())
    })
    .await;
    let _again = exec_worker(&mut t, "py", &[]);
    let probes = sink.wait_count(122, Duration::from_secs(120)).await;
    let mut seqs: Vec<u64> = probes.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 122, "nothing lost");
    assert_eq!(t.queue_counts(&t.names.dead_queue("py")).await.map(|c| c.0), Some(0), "nothing healthy dead-lettered");
    t.cleanup().await;
}
