//! What production brings that the happy path does not: retries waiting in replicated delay
//! queues (and the classic ones of older workers still draining), a worker that stops answering
//! without a word leaving the live list within a minute, and a broker alarm that blocks
//! publishers: workers say they are not ready and `warren submit` says why and gives up.

use std::{path::PathBuf, time::Duration};

use lapin::{
    options::QueueDeleteOptions,
    types::{AMQPValue, FieldTable},
};
use warren::{Broker, Config, Declarer, Names, StepTopology};
use warren_e2e::{Behaviour, chaos::Node};

use crate::{
    helpers::{TestNs, envelope_for, hop, props_for, rabbitmqctl, signal, spawn_worker_process, wait_for},
    ml::warren_bin,
};

/// `rabbitmqctl list_queues name type arguments` lines of the queues whose name starts with `prefix`.
async fn listed(prefix: &str) -> Vec<String> {
    let out = rabbitmqctl()
        .args(["list_queues", "-q", "--no-table-headers", "name", "type", "arguments"])
        .output()
        .await
        .expect("rabbitmqctl runs (as root, or set WARREN_TEST_RABBITMQCTL)");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_in_replicated_delay_queues_and_the_classic_ones_of_older_workers_still_drain() {
    let mut t = TestNs::new("retryq").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let _w = t.spawn_worker("flaky", &[]);
    t.wait_consumers("flaky", 1).await;

    // A retry of this version waits in a quorum delay queue that dead-letters at least once.
    let mut env = envelope_for("flaky", 1);
    env.slip[0] = hop("flaky", &Behaviour { fail_times: 1, ..Default::default() });
    t.publish_raw("flaky", &env.encode().expect("encode"), props_for(&env)).await;
    let new_prefix = format!("{}.retry.q.flaky.", t.ns);
    let delay_queues = wait_for("the retry's delay queue", Duration::from_secs(20), || async {
        let l = listed(&new_prefix).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    for line in &delay_queues {
        assert!(line.contains("quorum"), "a delay queue is a quorum queue: {line}");
        assert!(line.contains("at-least-once") && line.contains("reject-publish"), "{line}");
    }
    sink.wait_count(1, Duration::from_secs(20)).await;

    // What an older worker left in a classic delay queue (declared as it declared them) comes
    // back to the step and through a new worker: old and new run side by side in an upgrade.
    let legacy = format!("{}.retry.flaky.700", t.ns);
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(700));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(60_700));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(t.names.steps_exchange().into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("flaky".into()));
    let ch = t.broker.channel().await.expect("channel");
    ch.queue_declare(legacy.as_str().into(), lapin::options::QueueDeclareOptions::durable(), args)
        .await
        .expect("declare a classic delay queue as older workers did");
    let old = envelope_for("flaky", 2);
    let publisher = t.broker.publisher().await.expect("publisher");
    publisher.publish("", &legacy, &old.encode().expect("encode"), props_for(&old)).await.expect("publish");
    let probes = sink.wait_count(2, Duration::from_secs(20)).await;
    assert!(probes.iter().any(|p| p.seq == 2), "the old delay queue's retry reached the sink: {probes:?}");
    assert_eq!(sink.duplicates().await, 0);

    for q in listed(&format!("{}.retry.", t.ns)).await {
        let name = q.split_whitespace().next().unwrap_or_default().to_owned();
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.expect("delete a delay queue");
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_without_a_word_leaves_the_live_list_within_a_minute() {
    let mut t = TestNs::new("stale").await;
    let artifacts = std::env::temp_dir().join(&t.ns);
    let worker = t.spawn_worker("frozen", &[]);
    t.wait_consumers("frozen", 1).await;
    let steps = |args: &'static [&'static str]| {
        let mut cmd = crate::registry::warren(&t, &artifacts, args);
        async move {
            let out = cmd.output().await.ok()?;
            serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
        }
    };
    let live = |v: &serde_json::Value| {
        v.as_array()
            .and_then(|a| a.iter().find(|s| s["step"] == "frozen"))
            .and_then(|s| s["workers"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    wait_for("the worker listed as live", Duration::from_secs(30), || async {
        steps(&["steps", "--json"]).await.filter(|v| live(v) == 1)
    })
    .await;
    // Frozen, not dead: its socket stays open and the broker still counts its consumer, as with a
    // hung process or a host cut off. Only its silence in the registry gives it away.
    signal(&worker, "STOP").await;
    let stopped = std::time::Instant::now();
    wait_for("the frozen worker to leave the live list", Duration::from_secs(60), || async {
        steps(&["steps", "--json"]).await.filter(|v| live(v) == 0)
    })
    .await;
    let (_, consumers) = t.queue_counts(&t.names.step_queue("frozen")).await.unwrap_or_default();
    println!(
        "left the live list {:.0} s after it froze ({consumers} consumer still counted)",
        stopped.elapsed().as_secs_f64()
    );
    signal(&worker, "CONT").await;
    t.cleanup().await;
    let _ = std::fs::remove_dir_all(artifacts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alarm_makes_workers_unready_and_submit_names_it_and_gives_up() {
    // Alarms are raised on a node of the test's own, never on the shared broker.
    let tag = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let dir = std::env::temp_dir().join("warren-alarm-e2e").join(tag);
    let node = Node::start(&dir, &format!("walarm-{tag}"), 1).await.unwrap_or_else(|e| {
        panic!("cannot start a RabbitMQ node of the test's own ({e}); it needs root and Debian's rabbitmq-server")
    });
    let ns = format!("t-alarm-{tag}");
    let config = Config::load_from(
        None,
        [("WARREN_AMQP_URL".to_owned(), node.url()), ("WARREN_NAMESPACE".to_owned(), ns.clone())],
        &[],
    )
    .expect("config");
    let names = Names::new(&ns);
    let broker = Broker::connect(&config, "test").await.expect("connect to the test's node");
    let mut declarer = Declarer::new(&broker, &names);
    declarer.base().await.expect("base topology");
    declarer
        .step(&StepTopology { step: "sink".into(), delivery_limit: 5, max_duration: None })
        .await
        .expect("the sink's queue");

    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs").join(&ns);
    std::fs::create_dir_all(&logs).expect("log dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let url = node.url();
    let _worker = spawn_worker_process(&ns, "s1", &[("WARREN_AMQP_URL", &url), ("WARREN_HEALTH_ADDR", &addr)], &logs);
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move { crate::health::get(&addr, path) }
    };
    wait_for("the worker ready", Duration::from_secs(30), || async { get("/readyz").await.filter(|(c, _)| *c == 200) })
        .await;

    // A job the worker is busy with when the alarm goes off: its hand-off is what gets blocked.
    let mut env = envelope_for("s1", 1);
    env.slip[0] = hop("s1", &Behaviour { sleep_ms: 1_500, ..Default::default() });
    let publisher = broker.publisher().await.expect("publisher");
    publisher
        .publish(&names.steps_exchange(), "s1", &env.encode().expect("encode"), props_for(&env))
        .await
        .expect("publish the job");
    drop(publisher);
    node.ctl(&["set_vm_memory_high_watermark", "absolute", "1MB"]).await.expect("raise the memory alarm");

    let (code, why) = wait_for("the worker to turn unready", Duration::from_secs(30), || async {
        get("/readyz").await.filter(|(c, _)| *c == 503)
    })
    .await;
    assert_eq!(code, 503);
    assert!(why.contains("blocks publishes") && why.contains("low on memory"), "readyz says why: {why}");
    let (_, metrics) = get("/metrics").await.expect("/metrics");
    assert!(metrics.contains("warren_broker_blocked{step=\"s1\"} 1"), "{metrics}");

    // `warren submit` into the alarm: one line naming it at once, then exit 4 after --timeout.
    let spec = logs.join("alarm.toml");
    std::fs::write(&spec, "name = \"alarm\"\n\n[[steps]]\nstep = \"s1\"\n").expect("spec");
    let out = tokio::process::Command::new(warren_bin())
        .args(["submit", &spec.display().to_string(), "--no-check", "--timeout", "3s"])
        .env("WARREN_AMQP_URL", &url)
        .env("WARREN_NAMESPACE", &ns)
        .env("WARREN_ARTIFACTS", &logs)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("warren submit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "gives up with the timeout's exit code: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("RabbitMQ is blocking publishes (low on memory)"), "names the alarm: {stderr}");
    assert!(stderr.contains("gave up after 3s"), "{stderr}");

    node.ctl(&["set_vm_memory_high_watermark", "absolute", "3GB"]).await.expect("clear the memory alarm");
    wait_for("the worker ready again", Duration::from_secs(30), || async {
        get("/readyz").await.filter(|(c, _)| *c == 200)
    })
    .await;
    let (_, metrics) = get("/metrics").await.expect("/metrics");
    assert!(metrics.contains("warren_broker_blocked{step=\"s1\"} 0"), "{metrics}");
    // The blocked hand-off went through once the alarm cleared.
    let ch = broker.channel().await.expect("channel");
    wait_for("the job at the sink", Duration::from_secs(30), || async {
        let q = ch
            .queue_declare(
                names.step_queue("sink").as_str().into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (q.message_count() >= 1).then_some(())
    })
    .await;
    broker.close().await;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
