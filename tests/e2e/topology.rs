//! Declaring topology: idempotent, and a conflict is a clear error.

use lapin::options::QueueDeclareOptions;
use warren::{Declarer, StepTopology, TopologyError};

use crate::helpers::TestNs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_twice_is_a_no_op_and_a_conflict_names_queue_and_argument() {
    let mut t = TestNs::new("topology").await;
    let step = StepTopology {
        step: "train".into(),
        delivery_limit: 5,
        max_duration: Some(std::time::Duration::from_secs(7200)),
    };
    for _ in 0..2 {
        let mut d = Declarer::new(&t.broker, &t.names);
        d.base().await.expect("base declares again");
        d.step(&step).await.expect("step declares again");
    }
    t.remember("train");

    // `evaluate`'s queue was declared earlier with another delivery limit.
    let ch = t.broker.channel().await.expect("channel");
    let earlier = StepTopology { step: "evaluate".into(), delivery_limit: 3, max_duration: None };
    let args = warren::topology::step_queue_args(&t.names, &earlier);
    ch.queue_declare(t.names.step_queue("evaluate").as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("hand-made queue");
    t.remember("evaluate");
    let conflicting = StepTopology { step: "evaluate".into(), delivery_limit: 5, max_duration: None };
    let err = Declarer::new(&t.broker, &t.names).step(&conflicting).await.expect_err("conflict");
    match &err {
        TopologyError::Conflict { object, argument, .. } => {
            assert!(object.contains(&t.names.step_queue("evaluate")), "{object}");
            assert_eq!(argument, "x-delivery-limit");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("x-delivery-limit") && msg.contains("evaluate"), "{msg}");

    // A worker on that step refuses to start, saying why, instead of retrying forever.
    let mut w = t.spawn_worker("evaluate", &[]);
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(20), w.wait()).await.expect("exits").expect("wait");
    assert!(!status.success());
    let log = std::fs::read_dir(t.log_dir())
        .expect("logs")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("x-delivery-limit"), "worker log names the argument: {log}");
    t.cleanup().await;
}

#[tokio::test]
async fn a_bad_setting_stops_a_worker_with_one_line_and_exit_code_2() {
    for (env, flag, named) in [
        (Some(("WARREN_PREFETCH", "lots")), None, "WARREN_PREFETCH"),
        (Some(("WARREN_AMQP_URL", "http://user:s3cret@host")), None, "WARREN_AMQP_URL"),
        (None, Some("--concurrency=0"), "--concurrency"),
        (None, Some("--no-such-flag"), "--no-such-flag"),
    ] {
        let mut cmd = tokio::process::Command::new(crate::helpers::WORKER_BIN);
        cmd.args(["--step", "x"]);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let out = cmd.output().await.expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{named}: {stderr}");
        assert!(stderr.contains(named), "names {named}: {stderr}");
        assert!(!stderr.contains("s3cret"), "no password in errors: {stderr}");
        if env.is_some() || flag == Some("--concurrency=0") {
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
    }
}
