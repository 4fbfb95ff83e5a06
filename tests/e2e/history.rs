//! History from the events stream: `warren jobs` returns under load and lists exactly the jobs of
//! its window; `warren status` groups a fan-out's messages in time order.

use std::{process::Stdio, time::Duration};

use uuid::Uuid;
use warren::EventKind;
use warren_e2e::Behaviour;

use crate::{
    helpers::{TestNs, hop},
    ml::warren_bin,
};

use crate::cli::warren;

fn time_ms(id: &Uuid) -> u64 {
    warren_ops::history::uuid_time_ms(id).expect("a UUIDv7")
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
    eprintln!("warren jobs under 10 jobs/s took {took:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_exits_by_how_the_job_ended() {
    use tokio::io::AsyncBufReadExt;
    let mut t = TestNs::new("waitcodes").await;
    for s in ["load", "count", "report"] {
        t.remember(s);
    }
    t.declare_step("nobody").await;
    let artifacts = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    let with_store = |args: &[&str]| {
        let mut cmd = warren(&t, args);
        cmd.env("WARREN_ARTIFACTS", &artifacts).current_dir(env!("CARGO_MANIFEST_DIR"));
        cmd
    };
    let mut up = with_store(&["up", "--fleet", "examples/textstats/fleet.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warren up");
    for s in ["load", "count", "report"] {
        t.wait_consumers(s, 1).await;
    }
    let spec = "examples/textstats/pipeline.toml";

    // Done: 0, with the steps' reports and the time it took.
    let out = with_store(&["submit", spec, "--wait"]).output().await.expect("submit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("report") && text.contains("words") && text.contains(" done in "), "{text}");
    // Without a terminal, one plain line per step.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().any(|l| l.contains("count") && l.contains("done")), "{err}");

    // Dead: 1, naming the dead letter and the next command.
    let out = with_store(&["submit", spec, "--no-check", "--set", "load.file=/etc/passwd", "--wait"])
        .output()
        .await
        .expect("submit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("dead letter") && text.contains("warren dlq show"), "{text}");

    // Timed out: 4, after warning that no worker consumes the first step.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("wait-{}", t.ns));
    std::fs::create_dir_all(&dir).expect("dir");
    let nobody = dir.join("nobody.toml");
    std::fs::write(&nobody, "name = \"nobody\"\n\n[[steps]]\nstep = \"nobody\"\n").expect("spec");
    let nobody = nobody.to_str().expect("utf-8");
    let out =
        with_store(&["submit", nobody, "--no-check", "--wait", "--timeout", "2s"]).output().await.expect("submit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("no worker consumes step `nobody`"), "{err}");

    // Cancelled: 3, while it waits.
    let mut waiting = with_store(&["submit", nobody, "--no-check", "--wait", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    let mut lines = tokio::io::BufReader::new(waiting.stderr.take().expect("stderr")).lines();
    let first = lines.next_line().await.expect("read").expect("the job line");
    let job = first.split_whitespace().nth(1).expect("job id").to_owned();
    let out = warren(&t, &["cancel", &job, "--reason", "not needed after all"]).output().await.expect("cancel");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = tokio::time::timeout(Duration::from_secs(30), waiting.wait()).await.expect("returns").expect("wait");
    assert_eq!(status.code(), Some(3));

    // Broker unreachable: 5.
    let out = warren(&t, &["submit", spec, "--wait"])
        .env("WARREN_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .await
        .expect("submit");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&artifacts).ok();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_a_time_starts_where_the_batches_stamps_say_not_at_the_streams_start() {
    // 60 batches written just now (so the broker's own time index says "now" for all of them) but
    // stamped, as writers stamp them, a minute apart over the last hour: a read from 20 minutes
    // ago must start at the batch before the 40th, and still hold every event from then on.
    let t = TestNs::new("seek").await;
    warren::Declarer::new(&t.broker, &t.names).base().await.expect("base topology");
    let now = warren::envelope::now_ms();
    let publisher = t.broker.publisher().await.expect("publisher");
    let at = |i: u64| now - (60 - i) * 60_000;
    for i in 0..60u64 {
        let mut e = warren::JobEvent::new(
            EventKind::Succeeded,
            Uuid::now_v7(),
            Uuid::now_v7(),
            "p".into(),
            "s".into(),
            "w".into(),
            1,
        );
        e.at_ms = at(i);
        let body = warren::events::EventBatch::new(vec![e]).encode().expect("encode");
        let props = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/msgpack".into())
            .with_type(warren::events::EVENTS_SCHEMA.into())
            .with_timestamp(at(i) / 1000);
        publisher.publish(&t.names.events(), "seek", &body, props).await.expect("publish");
    }
    let since = at(40) - 1_000;
    let offset = warren::events::offset_before(&t.broker, &t.names, since).await.expect("bisect");
    assert_eq!(offset, Some(39), "the last batch stamped before the 40th minute");
    let read = warren::events::read_to_now(&t.broker, &t.names, warren::events::From::Time(since)).await.expect("read");
    let times: Vec<u64> = read.iter().map(|e| e.at_ms).collect();
    assert_eq!(times, (40..60).map(at).collect::<Vec<_>>(), "every event from then on, nothing before");
    // Before the first stamp: no offset (read from the start); the broker's index decides.
    assert_eq!(warren::events::offset_before(&t.broker, &t.names, at(0) - 60_000).await.expect("bisect"), None);
    t.cleanup().await;
}
