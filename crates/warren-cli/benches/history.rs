//! History at scale: what an operator waits for when the events stream is large. Fills a
//! namespace's events stream with `BENCH_EVENTS` job events (default 10,000,000: a tenth as
//! many jobs of five steps, a `succeeded` and a `report` each, submitted over the last
//! `BENCH_HOURS` hours, default 24, as version-2 batches of 1,000 events, each stamped with the
//! time its events say it was written), then times, `BENCH_TRIES` times each (default 3):
//! `warren jobs --since 1h` and `--since 24h` (the real binary), the console's start-up (until
//! its live jobs list has caught up with the stream; with its memory then), its jobs page
//! (`warren console`, signed in, `GET /?hours=24`) and the page of the job submitted in the
//! middle of the window. Deletes the namespace's queues at the end, unless `BENCH_KEEP` is set
//! (to try the commands and the console on it by hand).
//!
//! ```sh
//! cargo bench -p warren-cli --bench history
//! BENCH_EVENTS=1000000 cargo bench -p warren-cli --bench history
//! ```

use std::{
    io::{Read, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::BasicProperties;
use uuid::Uuid;
use warren::{
    Broker, Config, Declarer, EventKind, JobEvent, Names,
    events::{EVENTS_SCHEMA, EventBatch},
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const STEPS: [&str; 5] = ["ingest", "validate", "features", "train", "register"];

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A UUIDv7 of time `ms` (the job's submission), unique by `n`.
fn job_id(ms: u64, n: u64) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[8..16].copy_from_slice(&n.to_be_bytes());
    b[6] = 0x70;
    b[8] = 0x80 | (b[8] & 0x3f);
    Uuid::from_bytes(b)
}

/// The ten events of job `n`, submitted at `at_ms`: each step succeeded, with a report.
fn job_events(n: u64, at_ms: u64, worker: &Arc<str>, pipeline: &Arc<str>) -> Vec<JobEvent> {
    let job = job_id(at_ms, n);
    let mut out = Vec::with_capacity(10);
    let mut message = job;
    for (i, step) in STEPS.iter().enumerate() {
        let at = at_ms + 40 * (i as u64 + 1);
        let base =
            JobEvent::new(EventKind::Succeeded, job, message, pipeline.clone(), (*step).into(), worker.clone(), 1);
        out.push(JobEvent {
            at_ms: at,
            duration_ms: Some(30),
            outputs: 1,
            last_step: i == STEPS.len() - 1,
            ..base.clone()
        });
        out.push(JobEvent {
            kind: EventKind::Report,
            at_ms: at,
            detail: Some(rmpv::Value::Map(vec![("rows".into(), 150.into())])),
            ..base
        });
        message = warren::envelope::derive_message_id(message, step, 0);
    }
    out
}

/// Publishes `events` events (`events / 10` jobs) spread over the last `hours` hours; returns
/// the id of the job in the middle.
async fn fill(broker: &Broker, names: &Names, events: u64, hours: u64) -> Res<Uuid> {
    let jobs = events / 10;
    let now = warren::envelope::now_ms();
    let span = hours * 3_600_000;
    let (worker, pipeline): (Arc<str>, Arc<str>) = ("bench@host#1".into(), "bench".into());
    let publisher = broker.publisher().await?;
    let exchange = names.events();
    let mut confirms = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(1000);
    let started = Instant::now();
    for n in 0..jobs {
        let at = now - span + span * n / jobs.max(1);
        batch.extend(job_events(n, at, &worker, &pipeline));
        if batch.len() >= 1000 || n + 1 == jobs {
            // Stamped as a day of real traffic would have: when its writer published it (the
            // broker's own time index still says "just now": readers bisect on these stamps).
            let written = batch.iter().map(|e| e.at_ms).max().unwrap_or(at);
            let body = EventBatch::new(std::mem::take(&mut batch)).encode()?;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/msgpack".into())
                .with_type(EVENTS_SCHEMA.into())
                .with_timestamp(written / 1000);
            confirms.push(publisher.send(&exchange, "bench", &body, props).await?);
            while confirms.len() >= 50 {
                if let Some(c) = confirms.next().await {
                    warren::Publisher::check(c?, &exchange, "bench")?;
                }
            }
        }
        if n % (jobs / 10).max(1) == 0 && n > 0 {
            println!("  {} of {events} events written ({:.0} s)", n * 10, started.elapsed().as_secs_f64());
        }
    }
    while let Some(c) = confirms.next().await {
        warren::Publisher::check(c?, &exchange, "bench")?;
    }
    println!("  {events} events written in {:.0} s", started.elapsed().as_secs_f64());
    let middle = jobs / 2;
    Ok(job_id(now - span + span * middle / jobs.max(1), middle))
}

/// One HTTP/1.0 request; returns the status, the headers and the body.
fn http(addr: &str, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Res<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(f) = form {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{f}",
            f.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, head.to_owned(), body.to_owned()))
}

fn warren_cmd(ns: &str, url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.env("WARREN_NAMESPACE", ns).env("WARREN_AMQP_URL", url).env_remove("RUST_LOG");
    cmd
}

fn main() -> Res<()> {
    let url = std::env::var("WARREN_AMQP_URL").unwrap_or_else(|_| warren::config::DEFAULT_AMQP_URL.into());
    let events = env_u64("BENCH_EVENTS", 10_000_000);
    let hours = env_u64("BENCH_HOURS", 24).max(1);
    let tries = env_u64("BENCH_TRIES", 3).max(1);
    let ns = format!("hbench-{}", std::process::id());
    let mut config = Config::load_from(None, [("WARREN_AMQP_URL".to_owned(), url.clone())], &[])?;
    config.namespace = ns.clone();
    let names = Names::new(&ns);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let broker = rt.block_on(Broker::connect(&config, "history-bench"))?;
    rt.block_on(Declarer::new(&broker, &names).base())?;
    println!(
        "history at scale: {events} events ({} jobs of 10 events) over the last {hours} h in {ns}.events",
        events / 10
    );
    let outcome = (|| -> Res<()> {
        let middle = rt.block_on(fill(&broker, &names, events, hours))?;
        println!("\n{:<34} {:>9} {:>9} {:>9}", "what", "try 1 s", "median s", "rows");
        for window in ["1h", "24h"] {
            let mut cli = Vec::new();
            let mut rows = 0;
            for _ in 0..tries {
                let t = Instant::now();
                let out =
                    warren_cmd(&ns, &url).args(["jobs", "--since", window, "--limit", "2000000", "--json"]).output()?;
                cli.push(t.elapsed().as_secs_f64());
                if !out.status.success() {
                    return Err(format!("warren jobs: {}", String::from_utf8_lossy(&out.stderr)).into());
                }
                rows = String::from_utf8_lossy(&out.stdout).matches("\"job\"").count();
            }
            report(&format!("warren jobs --since {window}"), &cli, rows);
        }

        let token = format!("bench-viewer-{}", Uuid::now_v7().simple());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut console = warren_cmd(&ns, &url)
            .args(["console", "--listen", &addr])
            .env("WARREN_CONSOLE_VIEWER_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let result = (|console: &std::process::Child, middle: Uuid| -> Res<()> {
            let end = Instant::now() + Duration::from_secs(30);
            let cookie = loop {
                if let Ok((_, head, _)) = http(&addr, "POST", "/login", None, Some(&format!("token={token}"))) {
                    let cookie = head.lines().find_map(|l| {
                        let l = l.to_ascii_lowercase();
                        l.strip_prefix("set-cookie: ").map(|c| c.split(';').next().unwrap_or("").to_owned())
                    });
                    if let Some(c) = cookie {
                        break c;
                    }
                }
                if Instant::now() > end {
                    return Err("the console did not let the bench sign in within 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(100)); // retry interval of a deadline-bound start-up
            };
            // The console loads its live list once (the last 24 hours) and says so on the page
            // until it has caught up.
            let loading = Instant::now();
            loop {
                let (code, _, body) = http(&addr, "GET", "/?hours=24", Some(&cookie), None)?;
                if code == 200 && !body.contains("id=\"loading\"") {
                    break;
                }
                if loading.elapsed() > Duration::from_secs(900) {
                    return Err("the console's jobs list did not catch up within 15 minutes".into());
                }
                std::thread::sleep(Duration::from_millis(200)); // poll interval of a deadline-bound wait
            }
            let rss = std::fs::read_to_string(format!("/proc/{}/status", console.id()))
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l[6..].trim().to_owned()))
                .unwrap_or_else(|| "?".into());
            println!(
                "{:<34} {:>9.2} {:>9} {:>9}   (console memory then: {rss})",
                "console start-up: list loaded",
                loading.elapsed().as_secs_f64(),
                "",
                ""
            );
            let mut page = Vec::new();
            let mut rows = 0;
            for _ in 0..tries {
                let t = Instant::now();
                let (code, _, body) = http(&addr, "GET", "/?hours=24", Some(&cookie), None)?;
                page.push(t.elapsed().as_secs_f64());
                if code != 200 {
                    return Err(format!("the jobs page answered {code}").into());
                }
                rows = body.matches("<tr").count().saturating_sub(1);
            }
            report("console jobs page (24 h)", &page, rows);
            let mut page = Vec::new();
            for _ in 0..tries {
                let t = Instant::now();
                let (code, _, body) = http(&addr, "GET", &format!("/jobs/{middle}"), Some(&cookie), None)?;
                page.push(t.elapsed().as_secs_f64());
                if code != 200 || !body.contains("id=\"job-state\">done<") {
                    return Err(format!("the job page answered {code}: {body}").into());
                }
            }
            report(&format!("console job page ({} h old job)", hours / 2), &page, 1);
            Ok(())
        })(&console, middle);
        let _ = console.kill();
        let _ = console.wait();
        result
    })();
    let keep = std::env::var_os("BENCH_KEEP").is_some();
    if keep {
        println!("kept namespace {ns} (BENCH_KEEP): try WARREN_NAMESPACE={ns} warren jobs --since 2h");
    }
    rt.block_on(async {
        if keep {
            broker.close().await;
            return;
        }
        if let Err(e) = Declarer::new(&broker, &names).delete(&[]).await {
            eprintln!("could not delete namespace {ns}: {e}");
        }
        broker.close().await;
    });
    outcome
}

fn report(what: &str, secs: &[f64], rows: usize) {
    let mut sorted = secs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    println!("{what:<34} {:>9.2} {median:>9.2} {rows:>9}", secs.first().copied().unwrap_or(f64::NAN));
}
