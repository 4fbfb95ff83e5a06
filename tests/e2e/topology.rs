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
