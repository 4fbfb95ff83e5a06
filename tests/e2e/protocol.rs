//! The compatibility policy (docs/PROTOCOL.md, "Compatibility"), held against golden fixtures of
//! every earlier protocol version (`tests/fixtures/protocol`): messages as clients of that
//! version wrote them, replayed against the current workers, and event batches as workers of
//! that version wrote them, read by the current reader. A change that breaks an earlier client
//! fails here.

use std::{path::Path, time::Duration};

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use uuid::Uuid;
use warren::events::{EventBatch, EventKind, JobEvent};

use crate::{
    health::get,
    helpers::{TestNs, wait_for},
    ml::{Copies, Fleet, ML_STEPS},
};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A step message of a fixture: where it was published and what it was, in the namespace `ns`.
struct OldMessage {
    exchange: String,
    routing_key: String,
    props: BasicProperties,
    body: Vec<u8>,
    job: Uuid,
}

fn old_message(name: &str, ns: &str) -> OldMessage {
    let doc: serde_json::Value = serde_json::from_slice(&fixture(name)).expect("fixture JSON");
    let text = |v: &serde_json::Value| v.as_str().expect("a string").replace("{ns}", ns);
    let p = &doc["properties"];
    let mut headers = FieldTable::default();
    for (k, v) in doc["headers"].as_object().expect("headers") {
        headers.insert(k.as_str().into(), AMQPValue::LongString(LongString::from(text(v))));
    }
    let mut props = BasicProperties::default()
        .with_delivery_mode(p["delivery_mode"].as_u64().expect("delivery_mode") as u8)
        .with_content_type(text(&p["content_type"]).into())
        .with_type(text(&p["type"]).into())
        .with_message_id(text(&p["message_id"]).into())
        .with_correlation_id(text(&p["correlation_id"]).into())
        .with_timestamp(p["timestamp"].as_u64().expect("timestamp"));
    if !doc["headers"].as_object().expect("headers").is_empty() {
        props = props.with_headers(headers);
    }
    OldMessage {
        exchange: text(&doc["publish"]["exchange"]),
        routing_key: text(&doc["publish"]["routing_key"]),
        body: fixture(doc["body"].as_str().expect("the body's file")),
        job: text(&p["correlation_id"]).parse().expect("a job id"),
        props,
    }
}

#[test]
fn event_batches_of_every_earlier_version_read_as_they_were_written() {
    let v1 = EventBatch::decode(&fixture("1.0-events.msgpack")).expect("a 1.0 batch (events version 1) reads");
    let v2 = EventBatch::decode(&fixture("1.1-events.msgpack")).expect("a 1.1 batch (events version 2) reads");
    assert_eq!((v1.v, v2.v), (1, 2));
    for batch in [&v1, &v2] {
        let kinds: Vec<EventKind> = batch.events.iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, vec![Started, Succeeded, Retrying, Dead, Report]);
        let e = &batch.events;
        assert!(e.iter().all(|e| &*e.step == "features" && &*e.worker == "features@host-7#4242"));
        assert_eq!(e[0].at_ms, 1_795_600_000_123);
        assert_eq!((e[1].at_ms, e[1].duration_ms, e[1].outputs, e[1].attempt), (1_795_600_000_163, Some(40), 1, 1));
        assert_eq!((e[2].attempt, e[2].delay_ms, e[2].error.as_deref()), (2, Some(2000), Some("store unavailable")));
        assert_eq!((&*e[3].pipeline, e[3].delivery_count, e[3].error_kind.as_deref()), ("wine", 3, Some("crash")));
        assert_eq!(&*e[0].pipeline, "iris");
        assert!(e[4].detail.is_some() && e.iter().all(|e| e.causation_id.is_none()));
        assert_eq!(e[0].job_id, "01a21219-a400-7102-8304-05060708090a".parse::<Uuid>().expect("uuid"));
    }
    assert_eq!(v1.events, v2.events, "both versions say the same thing");
}

/// An events reader written against protocol 1.0: it knows batches `{v: 1, events: [...]}` with
/// long keys and nothing else (a batch of another version is an error to it).
fn read_as_version_1(body: &[u8]) -> Result<Vec<(String, Uuid, String, bool)>, String> {
    let value = rmpv::decode::read_value(&mut &body[..]).map_err(|e| e.to_string())?;
    let get = |m: &rmpv::Value, k: &str| -> Option<rmpv::Value> {
        m.as_map()?.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v.clone())
    };
    if get(&value, "v").and_then(|v| v.as_u64()) != Some(1) {
        return Err(format!("not a version 1 batch: {value}"));
    }
    let events = get(&value, "events").ok_or("no events key")?;
    let mut out = Vec::new();
    for e in events.as_array().ok_or("events is not an array")? {
        let text = |k: &str| get(e, k).and_then(|v| v.as_str().map(str::to_owned)).ok_or(format!("no {k} in {e}"));
        let job = get(e, "job_id").and_then(|v| v.as_slice().map(<[u8]>::to_vec)).ok_or(format!("no job_id in {e}"))?;
        let job = Uuid::from_slice(&job).map_err(|x| x.to_string())?;
        let last = get(e, "last_step").and_then(|v| v.as_bool()).unwrap_or(false);
        out.push((text("kind")?, job, text("step")?, last));
    }
    Ok(out)
}

#[test]
fn the_version_1_writer_writes_what_a_version_1_reader_reads() {
    let batch = EventBatch::decode(&fixture("1.1-events.msgpack")).expect("fixture");
    let mut last = batch.events[1].clone();
    last.last_step = true;
    last.causation_id = Some(Uuid::now_v7());
    let written = EventBatch::new(vec![batch.events[0].clone(), last.clone()]).encode_as(1).expect("encode v1");
    let read = read_as_version_1(&written).expect("a version 1 reader reads it");
    assert_eq!(
        read,
        vec![
            ("started".into(), last.job_id, "features".into(), false),
            ("succeeded".into(), last.job_id, "features".into(), true)
        ]
    );
    assert!(read_as_version_1(&EventBatch::new(vec![last]).encode().expect("v2")).is_err(), "the reader is strict");
}

/// Last month's client, replayed: a job started with protocol 1.0's start message (schema id
/// `warren.ml.Start/1`, through `{ns}.steps`, headers `warren-job` and `traceparent`) runs the
/// whole iris pipeline to done beside one of protocol 1.1; the deployment asks for version-1
/// events, and a reader that knows only version 1 follows both jobs. Accepting the old schema
/// id counts on `warren_deprecated_total` and logs it with the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_from_clients_of_every_earlier_version_run_to_done_followed_by_a_version_1_events_reader() {
    let mut t = TestNs::new("protocol").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let v1_events: &[(&str, &str)] = &[("WARREN_EVENTS_VERSION", "1")];
    let ingest_env = [("WARREN_EVENTS_VERSION", "1"), ("WARREN_HEALTH_ADDR", addr.as_str())];
    // The iris pipeline's steps: every ML step but predict.
    let steps: Vec<&str> = ML_STEPS.iter().copied().filter(|s| *s != "predict").collect();
    let plan: Vec<Copies<'_>> =
        steps.iter().map(|&s| if s == "ingest" { (s, 1, &ingest_env[..]) } else { (s, 1, v1_events) }).collect();
    let fleet = Fleet::start_steps(&mut t, &plan).await;

    // The reader starts at the stream's head, so it sees every batch of this namespace.
    let ch = t.broker.channel().await.expect("channel");
    ch.basic_qos(200, BasicQosOptions::default()).await.expect("qos");
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    let mut consumer = ch
        .basic_consume(t.names.events().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .expect("consume the events stream");

    let old = old_message("1.0-start-iris.json", &t.ns);
    let newer = old_message("1.1-start-validate.json", &t.ns);
    let publisher = t.broker.publisher().await.expect("publisher");
    for m in [&old, &newer] {
        publisher.publish(&m.exchange, &m.routing_key, &m.body, m.props.clone()).await.expect("the broker takes it");
    }
    drop(publisher);

    let mut done = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(180);
    while done.len() < 2 {
        let d = match tokio::time::timeout_at(end, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            other => {
                panic!("events stream: {:?}; the version 1 reader saw {seen:#?}", other.map(|o| o.map(|r| r.err())))
            }
        };
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        let kind = d.properties.kind().as_ref().map(|k| k.to_string());
        assert_eq!(kind.as_deref(), Some("warren.events/1"), "every batch is typed version 1");
        let events =
            read_as_version_1(&d.data).unwrap_or_else(|e| panic!("a batch the version 1 reader cannot read: {e}"));
        for (kind, job, step, last) in events {
            assert_ne!(kind, "dead", "{job} died at {step}; seen {seen:#?}");
            if kind == "succeeded" && last {
                done.insert(job, step.clone());
            }
            seen.push((kind, job, step));
        }
    }
    assert_eq!(done.get(&old.job).map(String::as_str), Some("register"), "the 1.0 job ran the iris pipeline to done");
    assert_eq!(done.get(&newer.job).map(String::as_str), Some("validate"), "the 1.1 job ran to done");
    for step in &steps {
        assert!(
            seen.iter().any(|(k, j, s)| k == "succeeded" && *j == old.job && s == step),
            "the version 1 reader followed the 1.0 job through {step}"
        );
    }

    // Accepted, counted and named.
    let body = wait_for("warren_deprecated_total on ingest's /metrics", Duration::from_secs(20), || async {
        get(&addr, "/metrics").map(|(_, b)| b).filter(|b| b.contains("warren_deprecated_total"))
    })
    .await;
    let line = body.lines().find(|l| l.starts_with("warren_deprecated_total")).expect("series");
    assert!(line.contains("form=\"warren.ml.Start/1\"") && line.ends_with(" 1"), "{line}");
    let log = std::fs::read_to_string(t.log_dir().join("ingest-0.log")).expect("ingest's log");
    let warning =
        log.lines().find(|l| l.contains("warren.ml.Start/1")).unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(warning.contains(&old.job.to_string()) && warning.contains("sender"), "{warning}");

    // Nothing went to a dead-letter queue.
    for step in &steps {
        let dead = t.queue_counts(&t.names.dead_queue(step)).await.map(|(ready, _)| ready);
        assert_eq!(dead, Some(0), "dead letters at {step}");
    }
    let _ = ch.close(200, "done".into()).await;
    fleet.stop().await;
    t.cleanup().await;
}

/// Events written now (version 2, and version 1 on request) read back whole by the current
/// reader: what a deployment writes never outruns what Warren's own tools read.
#[test]
fn the_current_reader_reads_both_versions_the_writer_writes() {
    let batch = EventBatch::decode(&fixture("1.0-events.msgpack")).expect("fixture");
    let mut events: Vec<JobEvent> = batch.events;
    events[1].causation_id = Some(Uuid::now_v7());
    for version in [1, 2] {
        let written = EventBatch::new(events.clone()).encode_as(version).expect("encode");
        let back = EventBatch::decode(&written).expect("decode");
        assert_eq!((back.v, back.events), (version, events.clone()));
    }
}

/// A metric's value in a worker's `/metrics`: the series whose name is `name` and whose labels
/// include every one of `labels` (`to="b"`).
fn metric(addr: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, body) = get(addr, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    format!("127.0.0.1:{port}")
}

/// Waits until every writer (health address) would hand off to step b in envelope `version`.
async fn writers_choose(writers: &[String], version: u16) {
    for w in writers {
        wait_for(&format!("{w} to choose envelope {version} for b"), Duration::from_secs(60), || async {
            metric(w, "warren_envelope_version", &["to=\"b\""]).filter(|v| *v == f64::from(version))
        })
        .await;
    }
}

/// Dead letters of steps a and b.
async fn dead_letters(t: &TestNs) -> (Option<u32>, Option<u32>) {
    let (a, b) = (t.names.dead_queue("a"), t.names.dead_queue("b"));
    (t.queue_counts(&a).await.map(|c| c.0), t.queue_counts(&b).await.map(|c| c.0))
}

/// A rolling upgrade to the compact envelope, and back. Step `b` runs an old worker (protocol
/// 1.2: reads only envelope 1, dead-letters anything else) beside a new one; step `a`'s two
/// writers read the registry and keep writing version 1 while the old reader is live, go
/// compact once it has left, and return to version 1 when an old reader comes back (a
/// rollback). Jobs flow through both kinds of worker in every phase; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_gets_only_envelopes_it_reads_and_writers_go_compact_once_the_old_readers_left() {
    use crate::helpers::{hop, signal};
    let mut t = TestNs::new("mixed").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut events = t.events().await;
    let writers = [free_addr(), free_addr()];
    let a: Vec<_> = writers.iter().map(|addr| t.spawn_worker("a", &[("WARREN_HEALTH_ADDR", addr.as_str())])).collect();
    let old = t.spawn_worker("b", &[("WARREN_TEST_PROTOCOL_1_2", "true")]);
    let new = t.spawn_worker("b", &[]);
    t.wait_consumers("a", 2).await;
    t.wait_consumers("b", 2).await;
    let slip = [hop("a", &Default::default()), hop("b", &Default::default()), warren::Hop::new("sink")];
    let handled_by = |events: &crate::helpers::Events, pid: u32, from: u64| {
        events
            .seen
            .iter()
            .filter(|e| e.kind == EventKind::Succeeded && &*e.step == "b" && e.worker.ends_with(&format!("#{pid}")))
            .filter(|e| e.at_ms >= from)
            .count()
    };
    let writes = |version: &str| {
        writers
            .iter()
            .filter_map(|w| metric(w, "warren_envelope_writes_total", &["to=\"b\"", &format!("version=\"{version}\"")]))
            .sum::<f64>()
    };

    // 1. Mixed: both workers of b take jobs, the writers write version 1 only.
    let from = warren::envelope::now_ms();
    t.submit(&slip, 0..300).await;
    sink.wait_count(300, Duration::from_secs(60)).await;
    events
        .wait_count("b's 300 successes", Duration::from_secs(30), 300, |e| {
            e.kind == EventKind::Succeeded && &*e.step == "b"
        })
        .await;
    let old_pid = old.id().expect("the old worker runs");
    assert!(handled_by(&events, old_pid, from) > 0, "the old worker took part");
    assert_eq!(dead_letters(&t).await, (Some(0), Some(0)));
    assert_eq!(writes("2"), 0.0, "no compact envelope while an old reader is live");
    assert!(writes("1") >= 300.0, "every hand-off counted: {}", writes("1"));

    // 2. The old reader leaves: the writers go compact.
    signal(&old, "TERM").await;
    let mut old = old;
    tokio::time::timeout(Duration::from_secs(30), old.wait()).await.expect("the old worker stops").expect("exit");
    writers_choose(&writers, 2).await;
    t.submit(&slip, 300..600).await;
    sink.wait_count(600, Duration::from_secs(60)).await;
    assert!(writes("2") >= 300.0, "the second 300 went compact: {}", writes("2"));
    assert_eq!(dead_letters(&t).await, (Some(0), Some(0)));

    // 3. An old reader comes back (a rollback): the writers return to version 1 first.
    let from = warren::envelope::now_ms();
    let old_again = t.spawn_worker("b", &[("WARREN_TEST_PROTOCOL_1_2", "true")]);
    t.wait_consumers("b", 2).await;
    writers_choose(&writers, 1).await;
    let compact_before = writes("2");
    t.submit(&slip, 600..900).await;
    sink.wait_count(900, Duration::from_secs(60)).await;
    events
        .wait_count("b's 900 successes", Duration::from_secs(30), 900, |e| {
            e.kind == EventKind::Succeeded && &*e.step == "b"
        })
        .await;
    assert!(handled_by(&events, old_again.id().expect("running"), from) > 0, "the returned old worker took part");
    assert_eq!(writes("2"), compact_before, "nothing compact after the old reader came back");
    assert_eq!(dead_letters(&t).await, (Some(0), Some(0)));
    assert_eq!(sink.duplicates().await, 0);
    // The workers go before their queues do, or they would declare them again on the way out.
    for mut w in a.into_iter().chain([new, old_again]) {
        let _ = w.kill().await;
    }
    t.cleanup().await;
}
