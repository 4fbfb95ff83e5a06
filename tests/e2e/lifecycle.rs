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
