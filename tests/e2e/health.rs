//! Every worker serves /healthz, /readyz and /metrics on its configured address.

use std::{
    io::{Read, Write},
    time::Duration,
};

use crate::{
    helpers::{TestNs, envelope_for, props_for, wait_for},
    ml::worker_bin,
};

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_health_readiness_and_prometheus_metrics() {
    let mut t = TestNs::new("health").await;
    t.remember("validate");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(t.log_dir().join("validate.log")).expect("log");
    let _worker = tokio::process::Command::new(worker_bin("validate"))
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_HEALTH_ADDR", &addr)
        .env("WARREN_ARTIFACTS", std::env::temp_dir().join(&t.ns))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");

    wait_for("/healthz", Duration::from_secs(20), || async { get(&addr, "/healthz").filter(|(c, _)| *c == 200) }).await;
    wait_for("/readyz to turn ready", Duration::from_secs(20), || async {
        get(&addr, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;

    let env = envelope_for("validate", 1);
    t.publish_raw("validate", b"\xc1 not an envelope", props_for(&env)).await;
    let body = wait_for("dead-letter metrics", Duration::from_secs(20), || async {
        get(&addr, "/metrics").map(|(_, b)| b).filter(|b| b.contains("warren_dead_letters_total"))
    })
    .await;
    let line = body.lines().find(|l| l.starts_with("warren_dead_letters_total")).expect("series");
    assert!(line.contains("step=\"validate\"") && line.contains("kind=\"poison\"") && line.ends_with(" 1"), "{line}");
    assert!(body.contains("warren_messages_total{") && body.contains("outcome=\"dead\""), "{body}");
    assert!(body.contains("warren_in_flight"), "{body}");
    t.cleanup().await;
}
