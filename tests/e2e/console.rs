//! The web console over HTTP: sign-in by token, a viewer who cannot replay, CSRF on every
//! change, and an operator who finds a dead job's failure group, replays it once the cause is
//! fixed, and sees the job turn done — recorded in the history with the reason.

use std::{
    io::{Read, Write},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::{
    helpers::{TestNs, wait_for},
    ml::warren_bin,
};

pub const VIEWER: &str = "viewer-token-for-the-test";
pub const OPERATOR: &str = "operator-token-for-the-test";

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: String,
    pub(crate) body: String,
}

/// One HTTP/1.0 request; `cookie` is sent as is; a form body is URL-encoded by the caller.
pub(crate) fn http(addr: &str, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(f) = form {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", f.len()));
    }
    req.push_str("\r\n");
    if let Some(f) = form {
        req.push_str(f);
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply { status, headers: head.to_owned(), body: body.to_owned() })
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs in; returns the session cookie and the page's CSRF token.
pub(crate) fn sign_in(addr: &str, token: &str) -> (String, String) {
    let r = http(addr, "POST", "/login", None, Some(&format!("token={}", enc(token)))).expect("login");
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let page = http(addr, "GET", "/", Some(&cookie), None).expect("jobs page");
    let csrf = value_after(&page.body, "name=\"csrf\" value=\"").expect("a csrf token on the page");
    (cookie, csrf)
}

fn value_after(text: &str, marker: &str) -> Option<String> {
    let i = text.find(marker)? + marker.len();
    Some(text[i..].split('"').next()?.to_owned())
}

/// The textstats fleet without a data root, and a job of it that died at load because it named a
/// file there (the cause a test then fixes).
pub async fn dead_job(t: &TestNs, artifacts: &std::path::Path) -> (Child, String) {
    let up = fleet(t, artifacts, None);
    for s in ["load", "count", "report"] {
        t.wait_consumers(s, 1).await;
    }
    let out = Command::new(warren_bin())
        .args(["submit", "examples/textstats/pipeline.toml", "--no-check", "--set", "load.file=data:sample.txt"])
        .args(["--wait", "--json"])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_ARTIFACTS", artifacts)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("submit");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let dead: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dead["state"], "dead");
    (up, dead["job"].as_str().expect("job").to_owned())
}

pub fn fleet(t: &TestNs, artifacts: &std::path::Path, data_root: Option<&std::path::Path>) -> Child {
    let mut cmd = Command::new(warren_bin());
    cmd.args(["up", "--fleet", "examples/textstats/fleet.toml"])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_ARTIFACTS", artifacts)
        .env_remove("WARREN_DATA_ROOT")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(root) = data_root {
        cmd.env("WARREN_DATA_ROOT", root);
    }
    cmd.spawn().expect("warren up")
}

/// `warren console` of the test's namespace on a free port, with a viewer's and an operator's
/// token; returns once it answers.
pub async fn console(t: &TestNs, artifacts: &std::path::Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(warren_bin())
        .args(["console", "--listen", &addr])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_CONSOLE_VIEWER_TOKEN", VIEWER)
        .env("WARREN_CONSOLE_OPERATOR_TOKEN", OPERATOR)
        .env("WARREN_ARTIFACTS", artifacts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("console");
    wait_for("the console", Duration::from_secs(20), || async { http(&addr, "GET", "/login", None, None) }).await;
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_fixed_failure_from_the_console_and_a_viewer_cannot() {
    let mut t = TestNs::new("console").await;
    for s in ["load", "count", "report"] {
        t.remember(s);
    }
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let artifacts = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts").join(&t.ns);
    // The workers have no data root yet: a job naming a file there dies at load.
    let (mut up, job) = dead_job(&t, &artifacts).await;

    let (_console, addr) = console(&t, &artifacts).await;

    // Signed out: every page sends to the sign-in page; a wrong token is refused.
    let r = http(&addr, "GET", "/failures", None, None).expect("get");
    assert_eq!(r.status, 303);
    assert!(r.headers.to_ascii_lowercase().contains("location: /login"));
    assert_eq!(http(&addr, "POST", "/login", None, Some("token=wrong-token-000000")).expect("login").status, 401);

    // The viewer sees the failure group, without replay buttons, and cannot replay.
    let (viewer, viewer_csrf) = sign_in(&addr, VIEWER);
    // The jobs list (the console's live model of the stream) lists the dead job with its error,
    // once loaded; filtered by state.
    let row = format!("data-job=\"{job}\"");
    wait_for("the jobs list loaded", Duration::from_secs(30), || async {
        let list = http(&addr, "GET", "/?state=dead", Some(&viewer), None)?;
        (!list.body.contains("id=\"loading\"")).then_some(list)
    })
    .await;
    let list = http(&addr, "GET", "/?state=dead", Some(&viewer), None).expect("jobs list");
    assert!(list.body.contains(&row) && list.body.contains("jobs 1–1 of 1"), "{}", list.body);
    assert!(list.body.contains("sample.txt"), "the error shows: {}", list.body);
    let list = http(&addr, "GET", "/?state=done", Some(&viewer), None).expect("jobs list");
    assert!(!list.body.contains(&row) && list.body.contains("jobs 0–0 of 0"), "{}", list.body);
    let failures = http(&addr, "GET", "/failures", Some(&viewer), None).expect("failures");
    assert_eq!(failures.status, 200);
    let group = value_after(&failures.body, "data-group=\"").expect("a failure group");
    assert!(failures.body.contains(&job[..13]), "the group links the job");
    assert!(!failures.body.contains("/actions/replay"), "no replay for viewers");
    let form = format!("step=load&group={group}&csrf={viewer_csrf}&reason={}", enc("viewers may not do this"));
    assert_eq!(http(&addr, "POST", "/actions/replay", Some(&viewer), Some(&form)).expect("post").status, 403);

    // The operator's replay needs the session's CSRF token.
    let (operator, csrf) = sign_in(&addr, OPERATOR);
    let forged = format!("step=load&group={group}&csrf=forged&reason={}", enc("a forged request here"));
    assert_eq!(http(&addr, "POST", "/actions/replay", Some(&operator), Some(&forged)).expect("post").status, 403);

    // An edit the step does not take is refused before anything moves.
    let bad = format!(
        "step=load&group={group}&csrf={csrf}&set={}&reason={}",
        enc("bogus=1"),
        enc("trying a parameter that is not there")
    );
    let r = http(&addr, "POST", "/actions/replay", Some(&operator), Some(&bad)).expect("edit");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("nothing replayed") && r.body.contains("bogus"), "{}", r.body);
    let failures = http(&addr, "GET", "/failures", Some(&operator), None).expect("failures");
    assert!(failures.body.contains("<span class=\"count\">1</span>"), "the letter is still there");

    // Fix the cause (a data root for the workers), then replay from the console.
    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    up = fleet(&t, &artifacts, Some(&repo.join("examples/textstats/data")));
    for s in ["load", "count", "report"] {
        t.wait_consumers(s, 1).await;
    }
    let form = format!("step=load&group={group}&csrf={csrf}&reason={}", enc("the workers have a data root now"));
    let r = http(&addr, "POST", "/actions/replay", Some(&operator), Some(&form)).expect("replay");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("replayed 1 dead letter(s) of load"), "{}", r.body);
    wait_for("the job done in the console", Duration::from_secs(60), || async {
        let page = http(&addr, "GET", &format!("/jobs/{job}"), Some(&operator), None)?;
        page.body.contains("id=\"job-state\">done<").then_some(())
    })
    .await;
    // The list holds every event published before it was asked: the job is done there at once.
    let list = http(&addr, "GET", "/?state=done", Some(&viewer), None).expect("jobs list");
    assert!(list.body.contains(&row), "{}", list.body);
    assert!(!http(&addr, "GET", "/?state=dead", Some(&viewer), None).expect("list").body.contains(&row));
    let page = http(&addr, "GET", &format!("/jobs/{job}"), Some(&operator), None).expect("job page");
    assert!(
        page.body.contains("replay by console-operator") && page.body.contains("the workers have a data root now"),
        "{}",
        page.body
    );

    // Re-run the finished job from `count` with another parameter: a new job, linked both ways.
    let form = format!(
        "job={job}&from=count&csrf={csrf}&set={}&reason={}",
        enc("count.top=2"),
        enc("fewer words in the report")
    );
    let r = http(&addr, "POST", "/actions/rerun", Some(&operator), Some(&form)).expect("rerun");
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .expect("the new job's page")
        .trim()
        .to_owned();
    assert!(location.starts_with("/jobs/") && !location.ends_with(&job), "{location}");
    wait_for("the re-run done", Duration::from_secs(60), || async {
        let page = http(&addr, "GET", &location, Some(&operator), None)?;
        (page.body.contains("id=\"job-state\">done<")
            && page.body.contains(&format!("a re-run of <a href=\"/jobs/{job}\"")))
        .then_some(())
    })
    .await;
    let old = http(&addr, "GET", &format!("/jobs/{job}"), Some(&operator), None).expect("old job");
    assert!(old.body.contains(&format!("re-run as <a href=\"{location}\"")), "{}", old.body);

    // Queues and steps: counts, rates and the registered steps with their workers.
    let queues = http(&addr, "GET", "/queues", Some(&viewer), None).expect("queues");
    assert_eq!(queues.status, 200);
    assert!(queues.body.contains("done/min") && queues.body.contains("textstats.Document/1"), "{}", queues.body);

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    std::fs::remove_dir_all(&artifacts).ok();
    t.cleanup().await;
}
