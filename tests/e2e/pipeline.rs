//! A 3-step pipeline of real worker processes carries 1,000 jobs end to end, also while the
//! broker drops every worker connection mid-run.

use std::time::Duration;

use warren::Hop;

use crate::helpers::TestNs;

const JOBS: u64 = 1_000;

async fn three_step_pipeline(label: &str, disrupt: bool) {
    let mut t = TestNs::new(label).await;
    t.declare_step("sink").await;
    let sink = t.sink("sink").await;
    let mut workers = Vec::new();
    for step in ["a", "b", "c"] {
        workers.push(t.spawn_worker(step, &[]));
    }
    for step in ["a", "b", "c"] {
        t.wait_consumers(step, 1).await;
    }
    let slip = [Hop::new("a"), Hop::new("b"), Hop::new("c"), Hop::new("sink")];
    let ids = t.submit(&slip, 0..JOBS).await;
    assert_eq!(ids.len(), JOBS as usize);

    if disrupt {
        sink.wait_count(JOBS as usize / 5, Duration::from_secs(60)).await;
        let mut closed = 0;
        for step in ["a", "b", "c"] {
            closed += t.close_worker_connections(step).await;
        }
        assert!(closed >= 3, "expected to close every worker connection, closed {closed}");
        // The workers reconnect on their own and resume.
        for step in ["a", "b", "c"] {
            t.wait_consumers(step, 1).await;
        }
    }

    let probes = sink.wait_count(JOBS as usize, Duration::from_secs(120)).await;
    let mut seqs: Vec<u64> = probes.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), JOBS as usize, "every job reaches the sink once");
    assert!(probes.iter().all(|p| p.hops == 3), "every job passed all three steps");
    let duplicates = sink.duplicates().await;
    if !disrupt {
        assert_eq!(duplicates, 0, "no duplicates without failures");
    }
    eprintln!("{label}: {JOBS} jobs at the sink, {duplicates} duplicate deliveries dropped by id");
    for mut w in workers {
        crate::helpers::signal(&w, "TERM").await;
        let status = w.wait().await.expect("worker exits");
        assert!(status.success(), "worker exits 0 on SIGTERM: {status}");
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_cross_three_worker_processes_exactly_once() {
    three_step_pipeline("pipeline", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reconnect_after_their_connections_are_closed_and_lose_nothing() {
    three_step_pipeline("reconnect", true).await;
}
