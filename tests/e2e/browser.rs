//! The console in a real browser (Debian's chromium through chromedriver): an operator signs
//! in, finds a dead job's failure group, replays it once the cause is fixed and sees the job turn
//! done; a viewer gets no replay button. The operator finds the job with the search box, sees the
//! pager and the queues' charts, promotes and rolls back a model with a reason, and the page
//! follows a dark system theme. With WARREN_SCREENSHOTS=DIR it also saves the jobs page and the
//! job's timeline as PNGs (the README's screenshots).

use std::{process::Stdio, time::Duration};

use fantoccini::{ClientBuilder, Locator};
use tokio::process::Command;

use crate::{
    console::{OPERATOR, VIEWER, dead_job, fleet},
    helpers::{TestNs, wait_for},
    ml::warren_bin,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> fantoccini::Client {
    browser_with(driver_port, profile, &[]).await
}

async fn browser_with(driver_port: u16, profile: &std::path::Path, extra: &[&str]) -> fantoccini::Client {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ]
    .iter()
    .chain(extra)
    .map(|a| (*a).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session through chromedriver")
}

async fn sign_in(c: &fantoccini::Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("token")).await.expect("token field").send_keys(token).await.expect("type");
    c.find(Locator::Id("sign-in")).await.expect("button").click().await.expect("sign in");
    c.wait().for_element(Locator::Id("jobs")).await.expect("the jobs page after signing in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and chromium-driver; .ci/run runs it with `cargo test --test e2e -- --ignored`"]
async fn in_a_browser_an_operator_replays_a_fixed_failure_and_a_viewer_cannot() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: `apt-get install -y chromium chromium-driver` (.ci/run does it)"
        );
    }
    let mut t = TestNs::new("browser").await;
    for s in ["load", "count", "report"] {
        t.remember(s);
    }
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{}", t.ns));
    let artifacts = scratch.join("artifacts");
    let (mut up, job) = dead_job(&t, &artifacts).await;
    register_two_versions(&artifacts, &t.ns).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _console = Command::new(warren_bin())
        .args(["console", "--listen", &format!("127.0.0.1:{port}")])
        .env("WARREN_AMQP_URL", crate::helpers::amqp_url())
        .env("WARREN_NAMESPACE", &t.ns)
        .env("WARREN_CONSOLE_VIEWER_TOKEN", VIEWER)
        .env("WARREN_CONSOLE_OPERATOR_TOKEN", OPERATOR)
        .env("WARREN_ARTIFACTS", &artifacts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("console");
    let driver_port = free_port();
    let _driver = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver");
    wait_for("the console and chromedriver", Duration::from_secs(20), || async {
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        (up(port) && up(driver_port)).then_some(())
    })
    .await;

    // A viewer sees the failure group but no replay button.
    let viewer = browser(driver_port, &scratch.join("viewer-profile")).await;
    sign_in(&viewer, &base, VIEWER).await;
    viewer.goto(&format!("{base}/failures")).await.expect("failures");
    viewer.wait().for_element(Locator::Css("section.group")).await.expect("a failure group");
    let buttons = viewer.find_all(Locator::Css("form[action='/actions/replay']")).await.expect("query");
    assert!(buttons.is_empty(), "a viewer has no replay button");
    viewer.close().await.expect("close");

    // Fix the cause: the workers get a data root.
    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    up = fleet(&t, &artifacts, Some(&repo.join("examples/textstats/data")));
    for s in ["load", "count", "report"] {
        t.wait_consumers(s, 1).await;
    }

    // The operator finds the group of the dead job and replays it with a reason.
    let c = browser(driver_port, &scratch.join("operator-profile")).await;
    sign_in(&c, &base, OPERATOR).await;
    if let Ok(dir) = std::env::var("WARREN_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(format!("{dir}/console-jobs.png"), c.screenshot().await.expect("screenshot")).expect("save");
    }
    c.goto(&format!("{base}/failures")).await.expect("failures");
    let group = c.wait().for_element(Locator::Css("section.group")).await.expect("a failure group");
    let text = group.text().await.expect("text");
    assert!(text.contains(&job[..13]) && text.contains("refused to read"), "{text}");
    let form = group.find(Locator::Css("form[action='/actions/replay']")).await.expect("the replay form");
    form.find(Locator::Css("input[name='reason']"))
        .await
        .expect("reason")
        .send_keys("the workers have a data root now")
        .await
        .expect("type");
    form.find(Locator::Css("button")).await.expect("button").click().await.expect("replay");
    let result = c.wait().for_element(Locator::Id("result")).await.expect("the replay's result");
    assert!(result.text().await.expect("text").contains("replayed 1 dead letter(s)"));

    // The job turns done on its page.
    wait_for("the job's page to say done", Duration::from_secs(60), || async {
        c.goto(&format!("{base}/jobs/{job}")).await.ok()?;
        let state = c.find(Locator::Id("job-state")).await.ok()?.text().await.ok()?;
        (state == "done").then_some(())
    })
    .await;
    if let Ok(dir) = std::env::var("WARREN_SCREENSHOTS") {
        std::fs::write(format!("{dir}/console-job.png"), c.screenshot().await.expect("screenshot")).expect("save");
    }
    search_pager_and_charts(&c, &base, &job).await;
    models_promote_and_roll_back(&c, &base).await;
    c.close().await.expect("close");

    // A dark system theme gives a dark page.
    let dark = browser_with(driver_port, &scratch.join("dark-profile"), &["--force-dark-mode"]).await;
    sign_in(&dark, &base, VIEWER).await;
    let background = dark.execute("return getComputedStyle(document.body).backgroundColor", vec![]).await.expect("js");
    assert_eq!(background, serde_json::json!("rgb(20, 23, 28)"), "the dark theme's background");
    dark.close().await.expect("close");

    crate::helpers::signal(&up, "TERM").await;
    let _ = tokio::time::timeout(Duration::from_secs(60), up.wait()).await;
    std::fs::remove_dir_all(&scratch).ok();
    t.cleanup().await;
}

/// Two versions of model `flowers` in the console's store: v1 scores 0.90, v2 0.95.
async fn register_two_versions(artifacts: &std::path::Path, ns: &str) {
    use warren_schemas::models::ModelRegistry;
    let store = warren::artifacts::ArtifactStore::open(&artifacts.display().to_string()).expect("store");
    let registry = ModelRegistry::new(&store, ns, "flowers");
    for accuracy in [0.90, 0.95] {
        let mut entry = crate::helpers::model_entry("flowers", accuracy);
        registry.add(&mut entry).await.expect("register a version");
    }
}

/// The search box opens a job by its id; the jobs page says how many it shows; the queues page
/// draws its charts.
async fn search_pager_and_charts(c: &fantoccini::Client, base: &str, job: &str) {
    c.goto(base).await.expect("jobs");
    // The list reloads itself on job events: read the pager as it is when it says something.
    wait_for("the pager's count", Duration::from_secs(20), || async {
        let pager = c.find(Locator::Id("pager")).await.ok()?.text().await.ok()?;
        (pager.starts_with("jobs 1–") && pager.contains(" of ")).then_some(())
    })
    .await;
    let search = c.find(Locator::Id("search")).await.expect("the search box");
    search.send_keys(&format!("{job}\u{E007}")).await.expect("type and press enter");
    c.wait().for_element(Locator::Id("job-state")).await.expect("the job's page");
    assert!(c.current_url().await.expect("url").path().ends_with(job), "the search opened the job");
    c.goto(&format!("{base}/queues")).await.expect("queues");
    c.wait().for_element(Locator::Css("#queues svg.chart.done")).await.expect("a done-per-minute chart");
    let bars = c.find_all(Locator::Css("#queues tr[data-step='count'] svg.chart.done rect")).await.expect("bars");
    assert_eq!(bars.len(), 60, "one bar a minute for the last hour");
    screenshot(c, "console-queues.png").await;
}

/// Promote v1 then v2 to production (each with a reason), then roll production back to v1.
async fn models_promote_and_roll_back(c: &fantoccini::Client, base: &str) {
    // The page reloads after each form: wait for what the new one shows, never read the old one.
    let shows = |expected: &'static [(&'static str, &'static str)], what: &'static str| async move {
        wait_for(what, Duration::from_secs(20), || async {
            for (v, aliases) in expected {
                let css = format!("#versions tr[data-version='{v}'] td.aliases");
                let text = c.find(Locator::Css(&css)).await.ok()?.text().await.ok()?;
                if text != *aliases {
                    return None;
                }
            }
            Some(())
        })
        .await
    };
    let submit = |css: String, reason: &'static str| async move {
        let form = c.wait().for_element(Locator::Css(&css)).await.expect("the form");
        form.find(Locator::Css("input[name='reason']")).await.expect("reason").send_keys(reason).await.expect("type");
        form.find(Locator::Css("button")).await.expect("button").click().await.expect("submit");
    };
    c.goto(&format!("{base}/models")).await.expect("models");
    c.wait().for_element(Locator::LinkText("flowers")).await.expect("the model").click().await.expect("open it");
    shows(&[("1", ""), ("2", "")], "the model's versions, no alias yet").await;
    submit("#versions tr[data-version='1'] form.promote".into(), "passed the shadow test").await;
    shows(&[("1", "production"), ("2", "")], "v1 promoted").await;
    submit("#versions tr[data-version='2'] form.promote".into(), "passed the shadow test").await;
    shows(&[("1", ""), ("2", "production")], "v2 promoted: it beats v1").await;
    submit("form.rollback".into(), "bad predictions in prod").await;
    shows(&[("1", "production"), ("2", "")], "production rolled back to v1").await;
    screenshot(c, "console-model.png").await;
}

/// Saves the page as `name` in $WARREN_SCREENSHOTS, when it is set.
async fn screenshot(c: &fantoccini::Client, name: &str) {
    if let Ok(dir) = std::env::var("WARREN_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(format!("{dir}/{name}"), c.screenshot().await.expect("screenshot")).expect("save");
    }
}
