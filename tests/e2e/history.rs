//! History from the events stream: `warren jobs` returns under load and lists exactly the jobs of
//! its window; `warren status` groups a fan-out's messages in time order.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;
use uuid::Uuid;
use warren::EventKind;
use warren_e2e::Behaviour;

use crate::{
    helpers::{TestNs, hop},
    ml::warren_bin,
};

fn warren(t: &TestNs, args: &[&str]) -> Command {
    let mut cmd = Command::new(warren_bin());
    cmd.args(args)
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn time_ms(id: &Uuid) -> u64 {
    warren::history::uuid_time_ms(id).expect("a UUIDv7")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_returns_while_jobs_keep_coming_and_lists_exactly_its_window() {
    let mut t = TestNs::new("histload").await;
    let mut events = t.events().await;
    let _w = t.spawn_worker("h1", &[]);
    t.wait_consumers("h1", 1).await;
    warren_bin();

    // Submit 10 jobs a second, all through the test.
    let client = warren::Client::connect(&t.config).await.expect("client");
    let slip = vec![hop("h1", &Behaviour::default())];
    let (tx, mut submitted) = tokio::sync::mpsc::unbounded_channel();
    let submitter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for seq in 0u64.. {
            tick.tick().await;
            let job = warren::JobSpec::new("load", slip.clone(), warren_e2e::Probe { seq, hops: 0 });
            match client.submit(&job).await {
                Ok(id) => {
                    if tx.send(id).is_err() {
                        return;
                    }
                }
                Err(e) => panic!("submit: {e}"),
            }
        }
    });
    let mut ids = Vec::new();
    while ids.len() < 30 {
        ids.push(submitted.recv().await.expect("a submitted job"));
    }
    // The window: between jobs 4 and 5, and between jobs 24 and 25 (100 ms apart).
    let since = (time_ms(&ids[4]) + time_ms(&ids[5])) / 2;
    let until = (time_ms(&ids[24]) + time_ms(&ids[25])) / 2;
    let expected: std::collections::BTreeSet<String> =
        ids.iter().filter(|id| (since..until).contains(&time_ms(id))).map(Uuid::to_string).collect();
    assert!(expected.len() >= 18, "the window holds about 20 jobs: {}", expected.len());
    for id in ids.iter().filter(|id| expected.contains(&id.to_string())) {
        let id = *id;
        events.wait("the job done", Duration::from_secs(30), |e| e.job_id == id && e.last_step).await;
    }

    // While jobs keep coming, `jobs` returns, and with exactly the window's jobs.
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        warren(
            &t,
            &["jobs", "--since", &since.to_string(), "--until", &until.to_string(), "--limit", "1000", "--json"],
        )
        .output(),
    )
    .await
    .expect("warren jobs returns under load")
    .expect("run");
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(5), "warren jobs took {took:?} under 10 jobs/s");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed: std::collections::BTreeSet<String> =
        rows.as_array().expect("rows").iter().filter_map(|r| r["job"].as_str().map(str::to_owned)).collect();
    assert_eq!(listed, expected, "exactly the jobs submitted in the window");
    assert!(rows.as_array().expect("rows").iter().all(|r| r["state"] == "done" && r["step"] == "h1"));
    let times: Vec<u64> = rows.as_array().expect("rows").iter().filter_map(|r| r["submitted_ms"].as_u64()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // A plain recent window returns as well, while the load goes on.
    let out = tokio::time::timeout(Duration::from_secs(30), warren(&t, &["jobs", "--since", "10s"]).output())
        .await
        .expect("warren jobs --since 10s returns under load")
        .expect("run");
    assert!(out.status.success());
    submitter.abort();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_groups_a_fan_out_in_time_order() {
    let mut t = TestNs::new("histfan").await;
    let mut events = t.events().await;
    let _a = t.spawn_worker("spread", &[]);
    let _b = t.spawn_worker("trial", &[]);
    t.wait_consumers("spread", 1).await;
    t.wait_consumers("trial", 1).await;
    let slip = vec![
        hop("spread", &Behaviour { fan_out: 16, ..Default::default() }),
        hop("trial", &Behaviour { sleep_ms: 20, ..Default::default() }),
    ];
    let job = t.submit(&slip, [1]).await[0];
    events
        .wait_count("16 trials done", Duration::from_secs(60), 16, |e| {
            e.job_id == job && &*e.step == "trial" && e.kind == EventKind::Succeeded
        })
        .await;
    let out = warren(&t, &["status", &job.to_string(), "--json"]).output().await.expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["state"], "done", "{v}");
    let trial = v["steps"].as_array().expect("steps").iter().find(|s| s["step"] == "trial").expect("trial step");
    let branches = trial["branches"].as_array().expect("branches");
    assert_eq!(branches.len(), 16);
    let starts: Vec<u64> = branches.iter().filter_map(|b| b["started_ms"].as_u64()).collect();
    assert_eq!(starts.len(), 16);
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "in time order: {starts:?}");
    let text = warren(&t, &["status", &job.to_string()]).output().await.expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("16 messages: 16 succeeded, 0 dead"), "{text}");
    assert!(text.contains("#15"), "each trial on its own line: {text}");
    t.cleanup().await;
}
