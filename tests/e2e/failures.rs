//! Retries, permanent errors, poison messages and crash loops.

use std::time::Duration;

use warren::{EventKind, Hop, JobSpec, envelope::headers};
use warren_e2e::{Behaviour, Probe};

use crate::helpers::{Supervisor, TestNs, envelope_for, header, hop, props_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_error_is_retried_with_backoff_until_it_succeeds() {
    let mut t = TestNs::new("retry").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut events = t.events().await;
    let _w = t.spawn_worker("flaky", &[("WARREN_RETRY_BASE_MS", "300")]);
    t.wait_consumers("flaky", 1).await;

    let slip = [hop("flaky", &Behaviour { fail_times: 2, ..Default::default() }), Hop::new("sink")];
    let job = t.submit(&slip, [7]).await[0];
    let probes = sink.wait_count(1, Duration::from_secs(30)).await;
    assert_eq!(probes[0].seq, 7);

    // When each attempt started: its `started` event, or for the attempt that succeeded quickly,
    // its `succeeded` event (which then carries the start; see `JobEvent::started_at_ms`).
    let mut starts = Vec::new();
    for attempt in 1..=3u32 {
        let e = events
            .wait(&format!("attempt {attempt} started"), Duration::from_secs(10), |e| {
                e.job_id == job && e.attempt == attempt && e.started_at_ms().is_some()
            })
            .await;
        starts.push(e.started_at_ms().unwrap_or_default());
    }
    for attempt in 1..=2u32 {
        let retry = events
            .wait(&format!("retry after attempt {attempt}"), Duration::from_secs(10), |e| {
                e.job_id == job && e.kind == EventKind::Retrying && e.attempt == attempt
            })
            .await;
        let backoff = 300u64 << (attempt - 1);
        assert!(retry.delay_ms.unwrap_or(0) >= backoff, "delay {:?} < backoff {backoff}", retry.delay_ms);
        let gap = starts[attempt as usize] - starts[attempt as usize - 1];
        assert!(
            gap >= backoff,
            "attempt {} started {gap} ms after attempt {attempt}, backoff is {backoff} ms",
            attempt + 1
        );
    }
    events
        .wait("success on attempt 3", Duration::from_secs(10), |e| {
            e.job_id == job && e.kind == EventKind::Succeeded && e.attempt == 3
        })
        .await;
    assert_eq!(sink.duplicates().await, 0);
    // The delay queues expire by themselves a minute after use; this test removes its own now.
    let ch = t.broker.channel().await.expect("channel");
    for e in events.seen.iter().filter(|e| e.job_id == job && e.kind == EventKind::Retrying) {
        let queue = t.names.retry_queue("flaky", e.delay_ms.unwrap_or(0));
        ch.queue_delete(queue.as_str().into(), Default::default()).await.expect("delete the delay queue");
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_dead_letters_the_original_bytes_and_the_worker_carries_on() {
    let mut t = TestNs::new("permanent").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let _w = t.spawn_worker("picky", &[]);
    t.wait_consumers("picky", 1).await;

    let mut bad = envelope_for("picky", 1);
    bad.slip[0] = hop("picky", &Behaviour { permanent_on: Some(1), ..Default::default() });
    let body = bad.encode().expect("encode");
    t.publish_raw("picky", &body, props_for(&bad)).await;
    let mut good = envelope_for("picky", 2);
    good.slip[0] = bad.slip[0].clone();
    t.publish_raw("picky", &good.encode().expect("encode"), props_for(&good)).await;

    let probes = sink.wait_count(1, Duration::from_secs(30)).await;
    assert_eq!(probes[0].seq, 2, "the next message is handled");
    t.wait_dead_letters("picky", 1, Duration::from_secs(10)).await;
    let dead = t.take_dead_letters("picky").await;
    assert_eq!(dead.len(), 1);
    let (props, dead_body) = &dead[0];
    assert_eq!(dead_body, &body, "the original body, byte for byte");
    assert_eq!(header(props, headers::ERROR_KIND).as_deref(), Some("permanent"));
    assert!(header(props, headers::ERROR).unwrap_or_default().contains("refused on purpose"));
    assert_eq!(header(props, headers::STEP).as_deref(), Some("picky"));
    assert_eq!(warren::envelope::header_int(props, headers::ATTEMPT), Some(1));
    assert!(header(props, headers::WORKER).unwrap_or_default().starts_with("picky@"));
    assert!(warren::envelope::header_int(props, headers::FAILED_AT).unwrap_or(0) > 0);
    assert_eq!(props.message_id().as_ref().map(|m| m.to_string()), Some(bad.message_id.to_string()));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_the_reason_and_the_worker_stays_up() {
    let mut t = TestNs::new("poison").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut w = t.spawn_worker("strict", &[]);
    t.wait_consumers("strict", 1).await;

    let good = envelope_for("strict", 1);
    let not_msgpack = b"\xc1\x00 this is not MessagePack".to_vec();
    let mut future_version = envelope_for("strict", 2);
    future_version.v = 99;
    let mut wrong_schema = envelope_for("strict", 3);
    wrong_schema.schema = "someone.Else/1".into();
    let cases = [
        (not_msgpack, "not a Warren envelope"),
        (future_version.encode().expect("encode"), "unknown envelope version 99"),
        (wrong_schema.encode().expect("encode"), "wrong payload schema \"someone.Else/1\""),
    ];
    for (body, _) in &cases {
        t.publish_raw("strict", body, props_for(&good)).await;
    }
    t.publish_raw("strict", &good.encode().expect("encode"), props_for(&good)).await;

    let probes = sink.wait_count(1, Duration::from_secs(30)).await;
    assert_eq!(probes[0].seq, 1, "a good message after three bad ones is handled");
    t.wait_dead_letters("strict", 3, Duration::from_secs(10)).await;
    let dead = t.take_dead_letters("strict").await;
    assert_eq!(dead.len(), 3);
    for (body, reason) in &cases {
        let (props, _) = dead.iter().find(|(_, b)| b == body).expect("each bad body is in the dead-letter queue");
        assert_eq!(header(props, headers::ERROR_KIND).as_deref(), Some("poison"));
        let error = header(props, headers::ERROR).unwrap_or_default();
        assert!(error.contains(reason), "{error:?} should name {reason:?}");
    }
    assert!(w.try_wait().expect("status").is_none(), "the worker is still running");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_its_worker_ends_in_the_dead_letter_queue() {
    let mut t = TestNs::new("crashloop").await;
    t.declare_step("sink").await;
    t.remember("crashy");
    let sink = t.sink("sink").await;
    let env = [("WARREN_DELIVERY_LIMIT", "2")];
    let supervisor = Supervisor::start(&t, "crashy", &env);
    t.wait_consumers("crashy", 1).await;

    let behaviour = Behaviour { abort_on: Some(1), ..Default::default() };
    let slip = [hop("crashy", &behaviour), Hop::new("sink")];
    let job = t.submit(&slip, [1]).await[0];
    t.wait_dead_letters("crashy", 1, Duration::from_secs(60)).await;
    // The worker was restarted after each crash and still handles good messages.
    t.submit(&slip, [2]).await;
    let probes = sink.wait_count(1, Duration::from_secs(30)).await;
    assert_eq!(probes[0].seq, 2);
    let starts = supervisor.starts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(starts >= 3, "the worker crashed and was restarted at least twice (started {starts} times)");

    let dead = t.take_dead_letters("crashy").await;
    assert_eq!(dead.len(), 1);
    let (props, _) = &dead[0];
    assert_eq!(header(props, headers::JOB), Some(job.to_string()));
    assert_eq!(header(props, headers::ERROR_KIND).as_deref(), Some("crash"), "told apart from a handler error");
    let reason = header(props, headers::ERROR).unwrap_or_default();
    assert!(reason.contains("started on it 2 times without an ack"), "{reason}");
    supervisor.stop().await;
    t.cleanup().await;
}

/// Headers a publisher sets are input: a forged redelivery count or attempt on a first delivery
/// neither dead-letters the message nor skips its handler, and ids written as strings (as the
/// protocol allows other clients) decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_and_string_ids_are_handled_like_any_first_delivery() {
    use lapin::types::{AMQPValue, FieldTable};

    let mut t = TestNs::new("forged").await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let _w = t.spawn_worker("guarded", &[]);
    t.wait_consumers("guarded", 1).await;

    let forged: [(&str, AMQPValue); 4] = [
        (headers::DELIVERY_COUNT, AMQPValue::LongLongInt(1000)),
        (headers::ATTEMPT, AMQPValue::LongLongInt(1 << 32)),
        (headers::ATTEMPT, AMQPValue::LongString("many".into())),
        (headers::DELIVERY_COUNT, AMQPValue::LongString("1000".into())),
    ];
    for (seq, (name, value)) in forged.iter().enumerate() {
        let env = envelope_for("guarded", seq as u64);
        let props = props_for(&env);
        let mut table = props.headers().clone().unwrap_or_default();
        table.insert((*name).into(), value.clone());
        t.publish_raw("guarded", &env.encode().expect("encode"), props.with_headers(table)).await;
    }
    // Ids as UUID strings, and no AMQP properties at all.
    let env = envelope_for("guarded", 10);
    let mut value = warren::envelope::to_msgpack_value(&env).expect("to value");
    if let rmpv::Value::Map(fields) = &mut value {
        for (k, v) in fields.iter_mut() {
            if k.as_str() == Some("job_id") {
                *v = env.job_id.hyphenated().to_string().into();
            } else if k.as_str() == Some("message_id") {
                *v = env.message_id.simple().to_string().into();
            }
        }
    }
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &value).expect("encode");
    let bare = lapin::BasicProperties::default().with_headers(FieldTable::default());
    t.publish_raw("guarded", &body, bare).await;

    let probes = sink.wait_count(forged.len() + 1, Duration::from_secs(30)).await;
    let mut seqs: Vec<u64> = probes.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 1, 2, 3, 10]);
    assert!(probes.iter().all(|p| p.hops == 1), "every handler ran once: {probes:?}");
    assert!(t.take_dead_letters("guarded").await.is_empty(), "nothing healthy was dead-lettered");
    t.cleanup().await;
}

/// A broker nack is the broker's trouble, not the message's: a next-step queue that refuses
/// publishes while it is full (`x-overflow: reject-publish` makes the broker nack them) holds the
/// hand-off back, and every message arrives once room is made. Nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_hand_off_is_published_again_and_never_dead_lettered() {
    use lapin::{
        options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    };

    let mut t = TestNs::new("nacked").await;
    // The next step's queue takes one message at a time and nacks the rest.
    let full = t.names.step_queue("narrow");
    let ch = t.broker.channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    ch.queue_declare(full.as_str().into(), QueueDeclareOptions::durable(), args).await.expect("declare narrow");
    ch.queue_bind(
        full.as_str().into(),
        t.names.steps_exchange().as_str().into(),
        "narrow".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind narrow");
    t.remember("narrow");
    let _w = t.spawn_worker("pass", &[]);
    t.wait_consumers("pass", 1).await;

    let slip = [Hop::new("pass"), Hop::new("narrow")];
    t.submit(&slip, 0..5).await;
    // A publish whose confirm was lost with its channel goes out again with the same message id:
    // at least once, and a repeat is the same message (the next step drops it by id).
    let ids = std::sync::Mutex::new(std::collections::BTreeMap::<u64, std::collections::BTreeSet<uuid::Uuid>>::new());
    crate::helpers::wait_for("five jobs through the narrow queue", Duration::from_secs(60), || async {
        while let Some(m) = ch.basic_get(full.as_str().into(), BasicGetOptions::default()).await.expect("basic.get") {
            let env = warren::Envelope::<warren_e2e::Probe>::decode(&m.delivery.data).expect("a probe");
            m.delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
            ids.lock().expect("ids").entry(env.payload.seq).or_default().insert(env.message_id);
        }
        (ids.lock().expect("ids").len() >= 5).then_some(())
    })
    .await;
    let ids = ids.into_inner().expect("ids");
    assert_eq!(ids.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert!(ids.values().all(|i| i.len() == 1), "never two message ids for one job: {ids:?}");
    assert!(t.take_dead_letters("pass").await.is_empty(), "a nack dead-lettered nothing");
    let log = std::fs::read_dir(t.log_dir())
        .expect("logs")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("publishing it again"), "the worker said it published again after a nack");
    t.cleanup().await;
}

/// Hand-offs go straight to the next step's queue through the default exchange, with
/// `mandatory`: a next step with no queue dead-letters the input as `unroutable` naming the
/// queue, and submitting a job whose first step has no queue is refused naming the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_no_queue_is_named_at_hand_off_and_at_submit() {
    let mut t = TestNs::new("noqueue").await;
    let _w = t.spawn_worker("first", &[]);
    t.wait_consumers("first", 1).await;

    let job = JobSpec::new("test", vec![Hop::new("first"), Hop::new("nowhere")], Probe { seq: 1, hops: 0 });
    let id = t.client.submit(&job).await.expect("the first step has a queue");
    t.wait_dead_letters("first", 1, Duration::from_secs(20)).await;
    let dead = t.take_dead_letters("first").await;
    assert_eq!(dead.len(), 1);
    let (props, _) = &dead[0];
    assert_eq!(header(props, headers::ERROR_KIND).as_deref(), Some("unroutable"));
    let error = header(props, headers::ERROR).unwrap_or_default();
    assert!(error.contains(&t.names.step_queue("nowhere")), "{error:?} should name the missing queue");
    assert_eq!(props.correlation_id().as_ref().map(|c| c.to_string()), Some(id.to_string()));

    let refused = t.client.submit(&JobSpec::new("test", vec![Hop::new("nowhere")], Probe { seq: 2, hops: 0 })).await;
    match refused {
        Err(warren::SubmitError::NoQueue { step, queue }) => {
            assert_eq!(step, "nowhere");
            assert_eq!(queue, t.names.step_queue("nowhere"));
        }
        other => panic!("submitting to a step with no queue should be refused, got {other:?}"),
    }
    t.cleanup().await;
}
