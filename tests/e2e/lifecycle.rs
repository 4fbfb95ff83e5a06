//! Stopping: SIGTERM finishes the message in flight; SIGKILL leaves it to another worker.

use std::time::Duration;

use warren::{EventKind, Hop};
use warren_e2e::Behaviour;

use crate::helpers::{TestNs, hop, signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_message_in_flight_finish_and_exits_zero() {
    let mut t = TestNs::new("sigterm").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut events = t.events().await;
    let mut w = t.spawn_worker("slow", &[]);
    t.wait_consumers("slow", 1).await;

    let slip = [hop("slow", &Behaviour { sleep_ms: 1_500, ..Default::default() }), Hop::new("sink")];
    let job = t.submit(&slip, [1]).await[0];
    events
        .wait("the slow step started", Duration::from_secs(10), |e| e.job_id == job && e.kind == EventKind::Started)
        .await;
    signal(&w, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(20), w.wait()).await.expect("exits in time").expect("wait");
    assert_eq!(status.code(), Some(0), "exit code 0 after SIGTERM");

    let probes = sink.wait_count(1, Duration::from_secs(5)).await;
    assert_eq!(probes[0].hops, 1, "the in-flight message finished and was handed on");
    let (ready, consumers) = t.queue_counts(&t.names.step_queue("slow")).await.expect("queue exists");
    assert_eq!((ready, consumers), (0, 0), "acked before exit: nothing back in the queue");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_message_leaves_it_to_another_worker() {
    let mut t = TestNs::new("sigkill").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut events = t.events().await;
    let mut first = t.spawn_worker("slow", &[]);
    t.wait_consumers("slow", 1).await;

    let slip = [hop("slow", &Behaviour { sleep_ms: 2_000, ..Default::default() }), Hop::new("sink")];
    let job = t.submit(&slip, [1]).await[0];
    let started = events
        .wait("the first worker started", Duration::from_secs(10), |e| e.job_id == job && e.kind == EventKind::Started)
        .await;
    signal(&first, "KILL").await;
    let _ = first.wait().await;
    let _second = t.spawn_worker("slow", &[]);

    let probes = sink.wait_count(1, Duration::from_secs(30)).await;
    assert_eq!(probes[0].seq, 1);
    let redone = events
        .wait("a second worker finished it", Duration::from_secs(10), |e| {
            e.job_id == job && e.kind == EventKind::Succeeded && e.worker != started.worker
        })
        .await;
    assert!(redone.delivery_count >= 1, "the broker redelivered it: {redone:?}");
    t.cleanup().await;
}

/// A step's own default (train runs one model at a time) gives way to what the operator set, by
/// flag or configuration file, not only by environment variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_or_a_config_file_overrides_a_steps_default_concurrency() {
    let mut t = crate::helpers::TestNs::new("conc").await;
    t.remember("train");
    let file = t.log_dir().join("worker.toml");
    std::fs::write(&file, "concurrency = 3\n").expect("config file");
    let cases: [(Vec<String>, &str); 3] = [
        (vec![], "concurrency=1 prefetch=1"),
        (vec!["--concurrency".into(), "4".into()], "concurrency=4 prefetch=4"),
        (vec!["--config".into(), file.display().to_string()], "concurrency=3 prefetch=3"),
    ];
    for (i, (args, expected)) in cases.into_iter().enumerate() {
        let log = t.log_dir().join(format!("train-{i}.log"));
        let mut child = tokio::process::Command::new(crate::ml::worker_bin("train"))
            .args(&args)
            .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
            .env("WARREN_NAMESPACE", &t.ns)
            .env("WARREN_ARTIFACTS", t.log_dir())
            .env_remove("WARREN_CONCURRENCY")
            .env("RUST_LOG", "info,lapin=warn")
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn warren-train");
        crate::helpers::wait_for(&format!("{args:?} -> {expected}"), std::time::Duration::from_secs(30), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let plain: String = crate::helpers::strip_ansi(&text);
            plain.contains(expected).then_some(())
        })
        .await;
        crate::helpers::signal(&child, "TERM").await;
        let _ = child.wait().await;
    }
    t.cleanup().await;
}

/// A wrong password is not a missing broker: the command says the credentials were refused (and
/// shows no password, nor advice to start RabbitMQ), and a worker stops after a few refusals
/// instead of retrying forever as "lost the broker".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_named_and_stop_a_worker() {
    let url = crate::helpers::amqp_url();
    let bad = match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (auth, host))) => {
            format!("{scheme}://{}:not-the-s3cret@{host}", auth.split(':').next().unwrap_or("guest"))
        }
        None => panic!("WARREN_AMQP_URL {url} has no user"),
    };
    let ns = format!("t-refused-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let cli = tokio::process::Command::new(crate::ml::warren_bin())
        .args(["queues"])
        .env("WARREN_AMQP_URL", &bad)
        .env("WARREN_NAMESPACE", &ns)
        .output()
        .await
        .expect("warren queues");
    let err = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(5), "refused credentials exit 5: {err}");
    assert!(err.contains("refused the credentials") && !err.contains("rabbitmq-server -detached"), "{err}");
    assert!(!err.contains("not-the-s3cret"), "no password in the message: {err}");

    let worker = tokio::process::Command::new(crate::helpers::WORKER_BIN)
        .args(["--step", "x"])
        .env("WARREN_AMQP_URL", &bad)
        .env("WARREN_NAMESPACE", &ns)
        .env("RUST_LOG", "warn,lapin=off")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), worker)
        .await
        .expect("the worker stops by itself")
        .expect("run the worker");
    let err = crate::helpers::strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("refused the credentials") && !err.contains("not-the-s3cret"), "{err}");
    assert!(!err.contains("lost the broker"), "{err}");
}

/// Acks are batched with `multiple`, which settles every delivery up to a tag: a batch must
/// never cover a message still being handled. One slow message, then forty fast ones behind it;
/// once the fast ones are through (and acked, in batches) the worker is killed mid-way through
/// the slow one: the broker must still hold it and give it to the next worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_acks_never_settle_a_message_still_being_handled() {
    let mut t = TestNs::new("acks").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let first = t.spawn_worker("mixed", &[("WARREN_CONCURRENCY", "16")]);
    t.wait_consumers("mixed", 1).await;

    let slow = [hop("mixed", &Behaviour { sleep_ms: 6_000, ..Default::default() }), Hop::new("sink")];
    let fast = [hop("mixed", &Behaviour::default()), Hop::new("sink")];
    t.submit(&slow, [0]).await;
    t.submit(&fast, 1..=40).await;
    let probes = sink.wait_count(40, Duration::from_secs(5)).await;
    assert!(probes.iter().all(|p| p.seq != 0), "the slow message is still running");
    signal(&first, "KILL").await;
    let _second = t.spawn_worker("mixed", &[]);
    let all = sink.wait_count(41, Duration::from_secs(30)).await;
    assert!(all.iter().any(|p| p.seq == 0), "the slow message was redelivered and finished");
    t.cleanup().await;
}
