//! The `warren` command, driven as a user drives it, against the real broker.

use std::{
    process::{Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use tokio::process::Command;
use warren::Hop;
use warren_e2e::Behaviour;

use crate::{
    helpers::{TestNs, envelope_for, hop, props_for, signal, spawn_worker_process, wait_for},
    ml::warren_bin,
};

/// The `warren` command in `t`'s namespace, run from the repository root.
pub fn warren(t: &TestNs, args: &[&str]) -> Command {
    let mut cmd = Command::new(warren_bin());
    cmd.args(args)
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(t: &TestNs, args: &[&str]) -> Output {
    warren(t, args).output().await.expect("run warren")
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_a_killed_worker_and_submit_wait_status_jobs_queues_report_the_job() {
    let mut t = TestNs::new("cliup").await;
    for s in crate::ml::ML_STEPS {
        t.remember(s);
    }
    let artifacts = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    let mut up = warren(&t, &["up", "--scale", "train=2"])
        .env("WARREN_ARTIFACTS", &artifacts)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warren up");
    t.wait_consumers("train", 2).await;
    for s in crate::ml::ML_STEPS {
        t.wait_consumers(s, 1).await;
    }

    // Kill one train worker: the fleet restarts it.
    let up_pid = up.id().expect("pid").to_string();
    let children = Command::new("pgrep").args(["-P", &up_pid, "-f", "warren-train"]).output().await.expect("pgrep");
    let victim = String::from_utf8_lossy(&children.stdout).lines().next().expect("a train worker").to_owned();
    let submit =
        warren(&t, &["submit", "pipelines/iris.toml", "--wait", "--json"]).env("WARREN_ARTIFACTS", &artifacts).output();
    let kill = async {
        Command::new("kill").args(["-KILL", &victim]).status().await.expect("kill");
    };
    let (out, ()) = tokio::join!(submit, kill);
    let out = out.expect("submit runs");
    let done = json(&out);
    assert_eq!(done["state"], "done", "{done}");
    let job = done["job"].as_str().expect("job id").to_owned();
    t.wait_consumers("train", 2).await;

    let status = json(&run(&t, &["status", &job, "--json"]).await);
    assert_eq!(status["state"], "done");
    let steps: Vec<&str> =
        status["events"].as_array().expect("events").iter().filter_map(|e| e["step"].as_str()).collect();
    for s in ["ingest", "validate", "features", "tune", "train", "select", "evaluate", "register"] {
        assert!(steps.contains(&s), "status shows step {s}");
    }
    let text = run(&t, &["status", &job]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("register"), "text status lists the steps");
    // Each trial with what it tried and how it scored; the one select chose is marked.
    let selected = status["selected_trial"].as_u64().expect("select's choice");
    let chosen: Vec<&str> = text.lines().filter(|l| l.contains("← selected")).collect();
    assert_eq!(chosen.len(), 1, "{text}");
    assert!(chosen[0].contains(&format!("trial {selected}: ")) && chosen[0].contains("accuracy"), "{text}");
    assert!(text.lines().filter(|l| l.contains(" trial ") && l.contains("alpha=")).count() >= 3, "{text}");
    let jobs = json(&run(&t, &["jobs", "--pipeline", "iris", "--since", "1h", "--json"]).await);
    assert!(jobs.as_array().expect("rows").iter().any(|j| j["job"] == job.as_str() && j["state"] == "done"));
    let queues = json(&run(&t, &["queues", "--json"]).await);
    let train = queues.as_array().expect("rows").iter().find(|r| r["step"] == "train").expect("train row").clone();
    assert_eq!(train["consumers"], 2);
    assert_eq!(train["ready"], 0);

    signal(&up, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait()).await.expect("up stops").expect("wait");
    assert!(status.success(), "warren up exits 0 on SIGTERM");
    let mut log = String::new();
    if let Some(mut e) = up.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut log).await;
    }
    assert!(log.contains("restarting"), "the fleet restarted the killed worker: {log}");
    let _ = std::fs::remove_dir_all(&artifacts);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_stats_replay_and_purge_with_filters() {
    let mut t = TestNs::new("clidlq").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let _w = t.spawn_worker("picky", &[]);
    t.wait_consumers("picky", 1).await;

    let refuse = |seq| hop("picky", &Behaviour { permanent_on: Some(seq), ..Default::default() });
    let mut first = envelope_for("picky", 1);
    first.slip[0] = refuse(1);
    let mut second = envelope_for("picky", 2);
    second.slip[0] = refuse(2);
    for env in [&first, &second] {
        t.publish_raw("picky", &env.encode().expect("encode"), props_for(env)).await;
    }
    t.publish_raw("picky", b"\xc1 garbage", props_for(&first)).await;
    let dead_queue = t.names.dead_queue("picky");
    t.wait_dead_letters("picky", 3, Duration::from_secs(20)).await;

    let all = json(&run(&t, &["dlq", "list", "--step", "picky", "--json"]).await);
    assert_eq!(all.as_array().expect("rows").len(), 3);
    let by_job =
        json(&run(&t, &["dlq", "list", "--step", "picky", "--job", &second.job_id.to_string(), "--json"]).await);
    assert_eq!(by_job.as_array().expect("rows").len(), 1);
    let by_error = json(&run(&t, &["dlq", "list", "--step", "picky", "--error", "refused on .urpose", "--json"]).await);
    assert_eq!(by_error.as_array().expect("rows").len(), 2);
    let recent = json(&run(&t, &["dlq", "list", "--step", "picky", "--since", "10m", "--json"]).await);
    assert_eq!(recent.as_array().expect("rows").len(), 3);

    let shown = json(&run(&t, &["dlq", "show", &second.message_id.to_string(), "--step", "picky", "--json"]).await);
    assert_eq!(shown["envelope"]["payload"]["seq"], 2);
    assert_eq!(shown["headers"]["warren-error-kind"], "permanent");

    let stats = json(&run(&t, &["dlq", "stats", "--step", "picky", "--json"]).await);
    let count = |kind: &str| {
        stats
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!((count("permanent"), count("poison")), (2, 1));

    let dry = json(&run(&t, &["dlq", "replay", "--step", "picky", "--error", "refused", "--dry-run", "--json"]).await);
    assert_eq!(dry["replayed"], 2);
    wait_for("a dry run moves nothing", Duration::from_secs(10), || async {
        t.queue_counts(&dead_queue).await.filter(|c| c.0 == 3)
    })
    .await;

    // Replay one job with a parameter changed so it passes this time.
    let replay = json(
        &run(
            &t,
            &[
                "dlq",
                "replay",
                "--step",
                "picky",
                "--job",
                &second.job_id.to_string(),
                "--set",
                "permanent_on=99",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(replay["replayed"], 1);
    let got = sink.wait_count(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].seq, 2);

    let refused = run(&t, &["dlq", "purge", "--step", "picky"]).await;
    assert_eq!(refused.status.code(), Some(2), "purge needs --yes");
    let purged = json(&run(&t, &["dlq", "purge", "--step", "picky", "--yes", "--json"]).await);
    assert_eq!(purged["purged"], 2);
    assert_eq!(json(&run(&t, &["dlq", "list", "--step", "picky", "--json"]).await).as_array().map(Vec::len), Some(0));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_killed_halfway_and_run_again_delivers_every_message_exactly_once() {
    const N: u64 = 500;
    let mut t = TestNs::new("clibulk").await;
    t.declare_step("sink").await;
    t.declare_step("bulk").await;
    let publisher = t.broker.publisher().await.expect("publisher");
    for seq in 0..N {
        let mut env = envelope_for("bulk", seq);
        env.slip = vec![Hop::new("bulk"), Hop::new("sink")];
        publisher
            .publish(&t.names.dead_exchange(), "bulk", &env.encode().expect("encode"), props_for(&env))
            .await
            .expect("dead letter");
    }
    let dead_queue = t.names.dead_queue("bulk");
    let step_queue = t.names.step_queue("bulk");

    let mut replay = warren(&t, &["dlq", "replay", "--step", "bulk", "--rate", "200/s", "--reason", "bulk test"])
        .stdout(Stdio::null())
        .spawn()
        .expect("replay");
    wait_for("half of the replay", Duration::from_secs(30), || async {
        t.queue_counts(&step_queue).await.filter(|(n, _)| *n as u64 >= N / 2)
    })
    .await;
    signal(&replay, "KILL").await;
    let _ = replay.wait().await;
    // Once the broker has noticed the killed connection, its unacked dead letters are back.
    let (moved, left) = wait_for("every message in one queue or the other", Duration::from_secs(30), || async {
        let moved = t.queue_counts(&step_queue).await?.0;
        let left = t.queue_counts(&dead_queue).await?.0;
        ((moved + left) as u64 >= N).then_some((moved, left))
    })
    .await;
    assert!(moved as u64 >= N / 2, "half was replayed: {moved} + {left}");
    assert!(left > 0, "the replay was stopped before the end");

    let again = run(&t, &["dlq", "replay", "--step", "bulk", "--reason", "the rest", "--json"]).await;
    assert!(again.status.success());
    assert_eq!(t.queue_counts(&dead_queue).await.map(|c| c.0), Some(0));

    let sink = t.sink("sink").await;
    let _w = spawn_worker_process(&t.ns, "bulk", &[], &t.log_dir());
    let probes = sink.wait_count(N as usize, Duration::from_secs(60)).await;
    let mut seqs: Vec<u64> = probes.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len() as u64,
        N,
        "all {N} processed, each once by id ({} duplicates dropped)",
        sink.duplicates().await
    );
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_trains_registers_and_predicts() {
    let mut t = TestNs::new("demo").await;
    for s in crate::ml::ML_STEPS {
        t.remember(s);
    }
    let artifacts = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    let out = warren(&t, &["demo"]).env("WARREN_ARTIFACTS", &artifacts).output().await.expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("evaluation on held-out rows") && stdout.contains("\"accuracy\""), "{stdout}");
    assert!(stdout.contains("prediction for [5.1, 3.5, 1.4, 0.2]: setosa"), "{stdout}");
    let _ = std::fs::remove_dir_all(&artifacts);
    t.cleanup().await;
}

#[tokio::test]
async fn bad_usage_is_one_line_and_exit_code_2() {
    let t_ns = "t-usage-unused";
    for (args, named) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["submit", "pipelines/nope.toml"], "nope.toml"),
        (vec!["dlq", "list", "--since", "yesterday"], "yesterday"),
        (vec!["up", "--scale", "trian=2"], "trian"),
        (vec!["--prefetch", "0", "queues"], "--prefetch"),
    ] {
        let out = Command::new(warren_bin())
            .args(&args)
            .env("WARREN_NAMESPACE", t_ns)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .await
            .expect("run warren");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains(named), "{args:?}: names {named}: {stderr}");
    }
    let help = Command::new(warren_bin()).args(["dlq", "replay", "--help"]).output().await.expect("help");
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("Example:"));
}

#[test]
fn a_spec_error_names_the_line() {
    let dir = std::env::temp_dir().join(format!("warren-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    // Read before any broker is asked: a malformed spec never reaches the registry check.
    std::fs::write(&file, "name = \"x\"\n\n[[steps]]\nstep = \"ingest\"\ncache = maybe\n").expect("write");
    let out = std::process::Command::new(warren_bin()).args(["submit"]).arg(&file).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:5"), "names the line: {stderr}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_declare_then_check_and_a_conflict_fails_the_check() {
    let mut t = TestNs::new("clitopo").await;
    for s in crate::ml::ML_STEPS {
        t.remember(s);
    }
    // No worker has announced these steps here: name them.
    let mut check = vec!["topology", "check", "--json"];
    let mut declare = vec!["topology", "declare", "--json"];
    for s in crate::ml::ML_STEPS {
        check.extend(["--step", s]);
        declare.extend(["--step", s]);
    }
    let missing = run(&t, &check).await;
    assert_eq!(missing.status.code(), Some(1), "nothing declared yet");
    let rows: Value = serde_json::from_slice(&missing.stdout).expect("json");
    assert!(rows.as_array().expect("rows").iter().all(|r| r["state"] == "missing"));

    json(&run(&t, &declare).await);
    let ok = json(&run(&t, &check).await);
    assert!(ok.as_array().expect("rows").iter().all(|r| r["state"] == "ok"), "{ok}");

    // The workers run with another delivery limit than the queues were declared with.
    let conflict = warren(&t, &check).env("WARREN_DELIVERY_LIMIT", "9").output().await.expect("run");
    assert_eq!(conflict.status.code(), Some(1));
    let text = String::from_utf8_lossy(&conflict.stdout);
    assert!(text.contains("x-delivery-limit"), "{text}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_a_fleet_that_is_killed_stop_by_themselves() {
    let mut t = TestNs::new("cliorphan").await;
    for s in crate::ml::ML_STEPS {
        t.remember(s);
    }
    let mut up = warren(&t, &["up"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("warren up");
    for s in crate::ml::ML_STEPS {
        t.wait_consumers(s, 1).await;
    }
    let up_pid = up.id().expect("pid").to_string();
    let listed = Command::new("pgrep").args(["-P", &up_pid]).output().await.expect("pgrep");
    let workers: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
    assert_eq!(workers.len(), crate::ml::ML_STEPS.len(), "one worker per step");
    signal(&up, "KILL").await;
    let _ = up.wait().await;
    wait_for("the orphaned workers to stop", Duration::from_secs(30), || {
        let workers = workers.clone();
        async move { workers.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).then_some(()) }
    })
    .await;
    t.cleanup().await;
}

/// A replay takes the letters present when it starts, once each: a letter that dies again is not
/// replayed again, and `--wait` says so within seconds, with the new reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_letter_that_dies_again_returns_with_its_fate() {
    let mut t = TestNs::new("clidies").await;
    t.declare_step("sink").await;
    let _w = t.spawn_worker("doomed", &[]);
    t.wait_consumers("doomed", 1).await;
    let mut env = envelope_for("doomed", 5);
    env.slip[0] = hop("doomed", &Behaviour { permanent_on: Some(5), ..Default::default() });
    t.publish_raw("doomed", &env.encode().expect("encode"), props_for(&env)).await;
    let dead_queue = t.names.dead_queue("doomed");
    t.wait_dead_letters("doomed", 1, Duration::from_secs(20)).await;

    warren_bin(); // built before the clock starts
    let started = std::time::Instant::now();
    let out =
        tokio::time::timeout(Duration::from_secs(60), run(&t, &["dlq", "replay", "--step", "doomed", "--wait", "30"]))
            .await
            .expect("the replay returns");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "returned in {:?}: {text} {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("replayed 1 dead letter(s)"), "{text}");
    assert!(text.contains("0 succeeded, 1 dead again: probe 5 is refused on purpose"), "{text}");
    assert_eq!(out.status.code(), Some(1), "a replay whose letters died again fails");
    // Exactly one dead letter again: it was not replayed a second time.
    wait_for("the letter back in its queue", Duration::from_secs(10), || async {
        t.queue_counts(&dead_queue).await.filter(|(n, _)| *n == 1)
    })
    .await;
    let listed = json(&run(&t, &["dlq", "list", "--step", "doomed", "--json"]).await);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let unknown = run(&t, &["dlq", "list", "--step", "nosuchstep"]).await;
    assert_eq!(unknown.status.code(), Some(2), "an unknown step is an error");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuchstep"));
    t.cleanup().await;
}

/// 1,000 dead letters in 4 failure groups (errors that differ only in numbers, ids, paths and
/// quoted values): `dlq groups` finds the 4, and a replay by `--group` touches only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_groups_gather_errors_by_shape_and_a_group_replays_alone() {
    use lapin::types::AMQPValue;
    use warren::envelope::{self, headers};

    let mut t = TestNs::new("cligroups").await;
    t.declare_step("grp").await;
    let publisher = t.broker.publisher().await.expect("publisher");
    let shapes = [
        |i: u64| format!("row {i} of data.csv is bad"),
        |i: u64| format!("timed out after {} ms", 100 + i),
        |i: u64| format!("cannot open /data/in-{i}.csv"),
        |i: u64| format!("unknown field `x{i}`"),
    ];
    for i in 0..1_000u64 {
        let env = envelope_for("grp", i);
        let props = envelope::with_headers(
            &props_for(&env),
            vec![
                (headers::ERROR, envelope::text(shapes[(i % 4) as usize](i))),
                (headers::ERROR_KIND, envelope::text("permanent")),
                (headers::FAILED_AT, AMQPValue::LongLongInt(envelope::now_ms() as i64)),
            ],
        );
        publisher
            .publish(&t.names.dead_exchange(), "grp", &env.encode().expect("encode"), props)
            .await
            .expect("dead letter");
    }
    let groups = json(&run(&t, &["dlq", "groups", "--step", "grp", "--json"]).await);
    let groups = groups.as_array().expect("rows");
    assert_eq!(groups.len(), 4, "{groups:#?}");
    assert!(groups.iter().all(|g| g["count"] == 250 && g["jobs"].as_array().map(Vec::len) == Some(250)));
    let timeouts = groups
        .iter()
        .find(|g| g["sample"].as_str().is_some_and(|s| s.starts_with("timed out")))
        .expect("the timeout group");
    let id = timeouts["group"].as_str().expect("group id");

    let unexplained = run(&t, &["dlq", "replay", "--step", "grp", "--group", &id[..6]]).await;
    assert_eq!(unexplained.status.code(), Some(2), "250 letters need a reason");
    assert!(String::from_utf8_lossy(&unexplained.stderr).contains("--reason"));
    assert_eq!(t.queue_counts(&t.names.step_queue("grp")).await.map(|c| c.0), Some(0), "nothing moved");

    let replay = json(
        &run(
            &t,
            &[
                "dlq",
                "replay",
                "--step",
                "grp",
                "--group",
                &id[..6],
                "--actor",
                "alice",
                "--reason",
                "timeout raised",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(replay["replayed"], 250);
    assert_eq!(t.queue_counts(&t.names.step_queue("grp")).await.map(|c| c.0), Some(250));
    let left = json(&run(&t, &["dlq", "groups", "--step", "grp", "--json"]).await);
    let left = left.as_array().expect("rows");
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|g| g["group"] != id && g["count"] == 250));

    let paths = left
        .iter()
        .find(|g| g["sample"].as_str().is_some_and(|s| s.starts_with("cannot open")))
        .and_then(|g| g["group"].as_str())
        .expect("the path group")
        .to_owned();
    let purged = json(
        &run(
            &t,
            &["dlq", "purge", "--step", "grp", "--group", &paths, "--yes", "--reason", "files are gone", "--json"],
        )
        .await,
    );
    assert_eq!(purged["purged"], 250);
    let history = json(&run(&t, &["dlq", "history", "--since", "10m", "--json"]).await);
    let history = history.as_array().expect("rows");
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0]["action"], "replay");
    assert_eq!(history[0]["actor"], "alice");
    assert_eq!(history[0]["reason"], "timeout raised");
    assert_eq!(history[0]["count"], 250);
    assert_eq!(history[0]["ids"].as_array().map(Vec::len), Some(250));
    assert!(history[0]["filter"].as_str().is_some_and(|f| f.contains("--group")));
    assert_eq!(history[1]["action"], "purge");
    assert_eq!(history[1]["reason"], "files are gone");
    assert!(history[1]["actor"].as_str().is_some_and(|a| a.contains('@')), "default actor is user@host");
    t.cleanup().await;
}

/// Edits are checked before anything moves: an unknown or mistyped parameter, or a payload path
/// that does not exist or no longer fits the payload's schema, is exit 2 naming the key, and the
/// dead letter stays where it is. A fitting edit goes out with the original id, marked edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_edits_are_checked_against_the_step_and_the_payload_before_anything_moves() {
    use warren_schemas::payloads::{Algorithm, ArtifactRef, Candidate, Features, Task, TrainTask};

    let mut t = TestNs::new("cliedit").await;
    t.declare_step("train").await;
    t.register_steps(&["train"]).await;
    let artifact = ArtifactRef { uri: "file:///x".into(), hash: "sha256:00".into(), bytes: 1 };
    let task = TrainTask {
        features: Features {
            dataset_hash: "sha256:00".into(),
            train: artifact.clone(),
            test: artifact,
            feature_names: vec!["a".into()],
            target: "y".into(),
            task: Task::Classification,
            classes: vec!["0".into(), "1".into()],
            scaler: None,
            seed: 1,
            preprocessor: None,
        },
        candidate: Candidate {
            algorithm: Algorithm::Logistic,
            hyperparams: [("max_iterations".to_owned(), 0.0.into())].into(),
        },
        trial: 0,
        trials: 1,
        metric: "accuracy".into(),
    };
    let env = warren::Envelope {
        v: 1,
        job_id: uuid::Uuid::now_v7(),
        message_id: uuid::Uuid::now_v7(),
        causation_id: None,
        pipeline: "edit".into(),
        slip: vec![Hop::new("train"), Hop::new("select")],
        schema: "warren.ml.TrainTask/1".into(),
        payload: task,
    };
    let publisher = t.broker.publisher().await.expect("publisher");
    publisher
        .publish(&t.names.dead_exchange(), "train", &env.encode().expect("encode"), crate::helpers::props_for_any(&env))
        .await
        .expect("dead letter");
    let (dead, step) = (t.names.dead_queue("train"), t.names.step_queue("train"));

    let refused = [
        (vec!["--set", "bogus=1"], "bogus"),
        (vec!["--set", "validation_fraction=lots"], "validation_fraction"),
        (vec!["--payload-set", "candidate.hyperparams.max_iter=500"], "candidate.hyperparams.max_iter"),
        (vec!["--payload-set", "trial=first"], "trial"),
    ];
    for (args, key) in refused {
        let mut all = vec!["dlq", "replay", "--step", "train"];
        all.extend(args.iter());
        let out = run(&t, &all).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(key) && err.lines().count() == 1, "{args:?} names {key}: {err}");
        // The listing that checked the edit returns the letter to its queue a moment after it exits.
        wait_for(&format!("{args:?} moved nothing"), Duration::from_secs(10), || async {
            t.queue_counts(&dead).await.filter(|c| c.0 == 1)
        })
        .await;
        assert_eq!(t.queue_counts(&step).await.map(|c| c.0), Some(0), "{args:?} published nothing");
    }

    let ok = json(
        &run(
            &t,
            &[
                "dlq",
                "replay",
                "--step",
                "train",
                "--set",
                "validation_fraction=0.25",
                "--payload-set",
                "candidate.hyperparams.max_iterations=500",
                "--actor",
                "dave",
                "--reason",
                "more iterations",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(ok["replayed"], 1);
    let ch = t.broker.channel().await.expect("channel");
    let got = ch
        .basic_get(step.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the edited message is in the step queue");
    let edited = warren::Envelope::<TrainTask>::decode(&got.delivery.data).expect("still a TrainTask");
    assert_eq!(edited.message_id, env.message_id, "it keeps its id");
    assert_eq!(edited.payload.candidate.hyperparams.get("max_iterations"), Some(&500.0.into()));
    let mark = crate::helpers::header(&got.delivery.properties, warren_ops::dlq::EDITED).unwrap_or_default();
    assert!(mark.contains("set validation_fraction=0.25") && mark.contains("max_iterations=500"), "{mark}");
    let history = json(&run(&t, &["dlq", "history", "--json"]).await);
    assert_eq!(history[0]["action"], "edit");
    assert_eq!((history[0]["actor"].as_str(), history[0]["reason"].as_str()), (Some("dave"), Some("more iterations")));
    let changes = history[0]["changes"].to_string();
    assert!(changes.contains("validation_fraction=0.25") && changes.contains("max_iterations=500"), "{changes}");
    t.cleanup().await;
}

/// Every `warren dlq` example of docs/OPERATIONS.md, run as written (through the shell, with its
/// placeholders filled in) against dead letters of the steps it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_letter_example_in_operations_md_runs() {
    use lapin::types::AMQPValue;
    use warren::envelope::{self, headers};

    let mut t = TestNs::new("clidocs").await;
    for step in ["ingest", "validate", "features", "train"] {
        t.declare_step(step).await;
    }
    t.register_steps(&["ingest", "validate", "features", "train"]).await;
    let publisher = t.broker.publisher().await.expect("publisher");
    let job = uuid::Uuid::now_v7();
    let letter = |step: &str, params: serde_json::Value, payload: serde_json::Value, error: &str| {
        let env = warren::Envelope {
            v: 1,
            job_id: job,
            message_id: uuid::Uuid::now_v7(),
            causation_id: None,
            pipeline: "docs".into(),
            slip: vec![Hop::with_params(step, &params).expect("params")],
            schema: if step == "train" { "warren.ml.TrainTask/1" } else { "warren.test.Any/1" }.into(),
            payload: warren::envelope::to_msgpack_value(&payload).expect("payload"),
        };
        let props = envelope::with_headers(
            &crate::helpers::props_for_any(&env),
            vec![
                (headers::ERROR, envelope::text(error)),
                (headers::ERROR_KIND, envelope::text("permanent")),
                (headers::FAILED_AT, AMQPValue::LongLongInt(envelope::now_ms() as i64)),
            ],
        );
        (env.message_id, env.encode().expect("encode"), props)
    };
    let artifact = serde_json::json!({ "uri": "file:///x", "hash": "sha256:00", "bytes": 1 });
    let task = serde_json::json!({
        "features": { "dataset_hash": "sha256:00", "train": artifact, "test": artifact, "feature_names": ["a"],
                      "target": "y", "task": "classification", "classes": ["0", "1"], "scaler": null, "seed": 1 },
        "candidate": { "algorithm": "logistic", "hyperparams": { "alpha": -1.0 } },
        "trial": 0, "trials": 1, "metric": "accuracy",
    });
    let letters = [
        ("ingest", letter("ingest", serde_json::json!({}), serde_json::json!({}), "source gone")),
        ("validate", letter("validate", serde_json::json!({}), serde_json::json!({}), "row 6 is bad")),
        ("validate", letter("validate", serde_json::json!({}), serde_json::json!({}), "row 7 is bad")),
        (
            "features",
            letter(
                "features",
                serde_json::json!({ "test_fraction": 1.5 }),
                serde_json::json!({}),
                "test_fraction must be in (0, 1), got 1.5",
            ),
        ),
        ("train", letter("train", serde_json::json!({}), task, "timed out after 30 s")),
    ];
    for (step, (_, body, props)) in &letters {
        publisher.publish(&t.names.dead_exchange(), step, body, props.clone()).await.expect("dead letter");
    }
    let groups = json(&run(&t, &["dlq", "groups", "--step", "validate", "--json"]).await);
    let group = groups[0]["group"].as_str().expect("a group").to_owned();

    let docs = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
        .expect("OPERATIONS.md");
    let section = docs.split("## Dead letters: reading and replaying").nth(1).expect("the dead-letter section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("its example block");
    let examples: Vec<&str> = block.lines().filter(|l| l.trim_start().starts_with("warren dlq")).collect();
    assert!(examples.len() >= 12, "{examples:?}");
    for example in examples {
        let line = example
            .replacen("warren", &warren_bin().display().to_string(), 1)
            .replace("MESSAGE_ID", &letters[1].1.0.to_string())
            .replace("JOB", &job.to_string())
            .replace("3fa2c1", &group[..6])
            .replace("--wait ", "--wait 2 ");
        let out = Command::new("bash")
            .args(["-c", &line])
            .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
            .env("WARREN_NAMESPACE", &t.ns)
            .env_remove("RUST_LOG")
            .output()
            .await
            .expect("bash");
        let allowed: &[i32] = if example.contains("--wait") { &[0, 1] } else { &[0] };
        assert!(
            out.status.code().is_some_and(|c| allowed.contains(&c)),
            "{example}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    t.cleanup().await;
}

/// What an operator types by mistake is refused or said plainly: a replay no filter narrows needs
/// `--all`; a `--set` key the step does not take is refused from its descriptor with no letter in
/// the queue; cancelling a job the namespace never saw fails; a clap error names the
/// subcommand's help; `warren jobs` says when its limit cut the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mistakes_are_refused_before_anything_moves_and_said_plainly() {
    let mut t = TestNs::new("cliops").await;
    t.declare_step("train").await;
    t.register_steps(&["train"]).await;
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let bare = run(&t, &["dlq", "replay"]).await;
    assert_eq!(bare.status.code(), Some(2), "{}", stderr(&bare));
    assert!(stderr(&bare).contains("--all") && stderr(&bare).contains("--dry-run"), "{}", stderr(&bare));
    assert_eq!(json(&run(&t, &["dlq", "replay", "--dry-run", "--json"]).await)["replayed"], 0);
    assert_eq!(json(&run(&t, &["dlq", "replay", "--all", "--json"]).await)["replayed"], 0);

    let unknown = run(&t, &["dlq", "replay", "--step", "train", "--set", "no_such_param=1"]).await;
    assert_eq!(unknown.status.code(), Some(2), "refused though no letter is selected: {}", stderr(&unknown));
    assert!(stderr(&unknown).contains("step train has no parameter `no_such_param`"), "{}", stderr(&unknown));

    let never = uuid::Uuid::now_v7().to_string();
    let cancel = run(&t, &["cancel", &never, "--reason", "no such job"]).await;
    assert_eq!(cancel.status.code(), Some(1), "{}", stderr(&cancel));
    assert!(stderr(&cancel).contains(&format!("no job {never} in namespace {}", t.ns)), "{}", stderr(&cancel));

    let clap = run(&t, &["dlq", "replay", "--bogus"]).await;
    assert_eq!(clap.status.code(), Some(2));
    assert!(stderr(&clap).contains("(see `warren dlq replay --help`)"), "{}", stderr(&clap));

    // Three jobs through a test step; `jobs --limit 2` says it shows two of them.
    let mut events = t.events().await;
    let _w = t.spawn_worker("ops1", &[]);
    t.wait_consumers("ops1", 1).await;
    let client = warren::Client::connect(&t.config).await.expect("client");
    for seq in 0..3 {
        let job =
            warren::JobSpec::new("ops", vec![hop("ops1", &Behaviour::default())], warren_e2e::Probe { seq, hops: 0 });
        let id = client.submit(&job).await.expect("submit");
        events.wait("the job done", Duration::from_secs(30), |e| e.job_id == id && e.last_step).await;
    }
    let listed = run(&t, &["jobs", "--limit", "2", "--json"]).await;
    assert_eq!(json(&listed).as_array().map(Vec::len), Some(2));
    assert!(stderr(&listed).contains("showing the newest 2 of 3 jobs"), "{}", stderr(&listed));
    client.broker().close().await;

    // A reader that goes away (`warren jobs | head`) ends the command quietly, not in a panic.
    let mut reader = warren(&t, &["jobs"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("jobs");
    drop(reader.stdout.take());
    let closed = reader.wait_with_output().await.expect("jobs ends");
    assert_eq!(closed.status.code(), Some(0), "{}", stderr(&closed));
    assert!(!stderr(&closed).contains("panicked"), "{}", stderr(&closed));

    // A step's parameters as a table.
    let train = run(&t, &["steps", "train"]).await;
    let table = String::from_utf8_lossy(&train.stdout);
    assert!(table.contains("parameter") && table.contains("allowed"), "{table}");
    let row = table.lines().find(|l| l.starts_with("validation_fraction")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("number") && row.contains("0 < x < 1"), "{row}");

    // A fleet file with a misspelt key: one line naming the line, the key and the known keys.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-{}", t.ns));
    std::fs::create_dir_all(&dir).expect("dir");
    let fleet = dir.join("fleet.toml");
    std::fs::write(&fleet, "[[workers]]\nstep = \"train\"\nbin = \"warren-train\"\nscal = 2\n").expect("fleet file");
    let up = run(&t, &["up", "--fleet", fleet.to_str().expect("utf-8")]).await;
    assert_eq!(up.status.code(), Some(2), "{}", stderr(&up));
    let line = stderr(&up);
    assert!(line.contains("line 4: unknown field `scal`") && line.contains("expected one of"), "{line}");
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `warren up` with a wrong password exits 5 at once with one line, instead of restarting
/// workers that can never connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_refused_credentials_fails_fast_with_exit_5() {
    let t = TestNs::new("cliauth").await;
    let url = crate::helpers::amqp_url();
    let wrong = match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (auth, host))) => {
            format!("{scheme}://{}:not-the-password@{host}", auth.split(':').next().unwrap_or("guest"))
        }
        None => panic!("the test broker URL has no credentials: {url}"),
    };
    let out =
        tokio::time::timeout(Duration::from_secs(30), warren(&t, &["up"]).env("WARREN_AMQP_URL", &wrong).output())
            .await
            .expect("warren up gives up within 30 s")
            .expect("run warren up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("refused the credentials") && !stderr.contains("not-the-password"), "{stderr}");
    assert!(!stderr.contains("starting"), "no worker was started: {stderr}");
}

/// A local CSV that ingest would refuse is refused at submit, before anything is uploaded, with
/// one line naming the spec's line and the file's line, column or byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csvs_are_refused_at_submit_naming_the_place() {
    let mut t = TestNs::new("clicsv").await;
    t.declare_step("ingest").await;
    t.register_steps(&["ingest"]).await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("csv-{}", t.ns));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases: [(&str, &[u8], &str); 6] = [
        ("ragged", b"a,b,species\n1,2,x\n3,4\n", "CSV line 3: 2 field(s) where the header has 3"),
        ("quote", b"a,b,species\n1,\"two,x\n3,4,y\n", "an unterminated quote: the field opened at line 2, column 3"),
        ("latin1", b"a,b,species\n1,caf\xe9,x\n", "not UTF-8: byte 0xE9 at line 2, column 6"),
        (
            "semicolons",
            b"a;b;kind\n1;2;x\n",
            "target `species` is not a column of the CSV (columns: a, b, kind) (read with delimiter ';')",
        ),
        ("duplicate", b"a,a,species\n1,2,x\n", "columns 1 and 2 are both named `a`"),
        ("fine", b"a;b;species\n1;2;x\n", ""),
    ];
    for (name, bytes, expected) in cases {
        let csv = dir.join(format!("{name}.csv"));
        std::fs::write(&csv, bytes).expect("csv");
        let spec = dir.join(format!("{name}.toml"));
        let text = format!(
            "name = \"csv\"\n\n[[steps]]\nstep = \"ingest\"\nparams = {{ csv = \"{}\", target = \"species\" }}\n",
            csv.display()
        );
        std::fs::write(&spec, text).expect("spec");
        let mut submit = warren(&t, &["submit", spec.to_str().expect("utf-8")]);
        let out = submit.env("WARREN_ARTIFACTS", dir.join("store")).output().await.expect("submit");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if expected.is_empty() {
            assert!(out.status.success(), "{name}: a good file is submitted: {stderr}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}.toml:5: step `ingest`: csv ")),
            "{name} names the spec's line: {stderr}"
        );
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: one line: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
    t.cleanup().await;
}
