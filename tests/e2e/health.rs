//! Every worker serves /healthz, /readyz and /metrics on its configured address.

use std::{
    io::{Read, Write},
    time::Duration,
};

use crate::{
    helpers::{TestNs, envelope_for, props_for, wait_for},
    ml::worker_bin,
};

pub(crate) fn get(addr: &str, path: &str) -> Option<(u16, String)> {
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

/// `warren up` with a health address and a concurrency: every worker gets its own port (the
/// given one, then the next ones) and the concurrency reaches every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gives_each_worker_its_own_health_port_and_the_configured_concurrency() {
    let mut t = TestNs::new("upports").await;
    for s in crate::ml::ML_STEPS {
        t.remember(s);
    }
    // Nine consecutive ports from a random base below the kernel's ephemeral range (32768 on).
    let base = 20_000 + fastrand::u16(0..4_900) * 2;
    let addr = format!("127.0.0.1:{base}");
    let _ = worker_bin("train"); // builds the worker binaries `warren up` runs
    let up = tokio::process::Command::new(crate::ml::warren_bin())
        .args(["--concurrency", "3", "--health-addr", &addr, "up"])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_ARTIFACTS", t.log_dir())
        .env_remove("WARREN_HEALTH_ADDR")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("warren up");
    for i in 0..9u16 {
        let worker = format!("127.0.0.1:{}", base + i);
        wait_for(&format!("/readyz on {worker}"), Duration::from_secs(60), || async {
            get(&worker, "/readyz").filter(|(c, _)| *c == 200)
        })
        .await;
    }
    crate::helpers::signal(&up, "TERM").await;
    let out = up.wait_with_output().await.expect("up output");
    let text = String::from_utf8_lossy(&out.stdout);
    let plain = crate::helpers::strip_ansi(&text);
    assert!(plain.contains(&format!("[train#0] health and metrics on http://127.0.0.1:{}/", base + 6)), "{plain}");
    assert!(plain.contains("step=train") && plain.contains("concurrency=3"), "train runs 3 at once as configured");
    assert!(!plain.contains("Address already in use"), "{plain}");
    t.cleanup().await;
}

/// Metric families in Prometheus text, and whether each has a `# HELP` line.
fn families(text: &str) -> std::collections::BTreeMap<String, bool> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.entry(rest.split_whitespace().next().unwrap_or_default().to_owned()).or_insert(false);
        }
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            out.insert(rest.split_whitespace().next().unwrap_or_default().to_owned(), true);
        }
    }
    out
}

/// The `warren_*` metric names an expression uses (histogram series folded to their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("warren_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every metric a worker or the exporter exports is described, and the shipped alert rules and
/// Grafana dashboard use only metrics that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_the_dashboard_use_only_metrics_that_exist_and_every_metric_is_described() {
    use serde::Deserialize;
    let mut t = TestNs::new("metricsdoc").await;
    t.remember("validate");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = tokio::process::Command::new(worker_bin("validate"))
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_HEALTH_ADDR", &addr)
        .env("WARREN_ARTIFACTS", std::env::temp_dir().join(&t.ns))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    t.wait_consumers("validate", 1).await;
    let env = envelope_for("validate", 1);
    t.publish_raw("validate", b"\xc1 not an envelope", props_for(&env)).await;
    let body = wait_for("dead-letter metrics", Duration::from_secs(20), || async {
        get(&addr, "/metrics").map(|(_, b)| b).filter(|b| b.contains("warren_dead_letters_total"))
    })
    .await;
    let mut exported = families(&body);
    let out = tokio::process::Command::new(crate::ml::warren_bin())
        .args(["queues", "--prometheus", "--step", "validate"])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .output()
        .await
        .expect("warren queues --prometheus");
    exported.extend(families(&String::from_utf8_lossy(&out.stdout)));
    for (name, described) in &exported {
        assert!(described, "{name} has no # HELP description");
    }
    assert!(exported.contains_key("warren_worker_ready") && exported.contains_key("warren_queue_ready"));

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let alerts_text = std::fs::read_to_string(root.join("alerts.yml")).expect("alerts.yml");
    let alerts = serde_json::Value::deserialize(serde_yaml_ng::Deserializer::from_str(&alerts_text)).expect("YAML");
    let mut exprs: Vec<String> = Vec::new();
    for group in alerts["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert!(rule["alert"].is_string() && rule["annotations"]["summary"].is_string(), "{rule}");
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana-dashboard.json")).expect("dashboard"))
            .expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 10);
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} uses no Warren metric");
        for name in names {
            assert!(exported.contains_key(&name), "`{expr}` uses {name}, which nothing exports");
        }
    }
    t.cleanup().await;
}
