//! The runtime against bare lapin, in one process run: a 3-hop pass-through pipeline
//! (persistent messages, publisher confirms, manual acks, each hop acking its input only after
//! its output's confirm), first saturated with `BENCH_JOBS` jobs (default 100,000), then open
//! loop at `BENCH_RATE` jobs/s (default 1,000) for `BENCH_SECS` seconds (default 5) for latency.
//! Job events are on for the runtime, as in production. Each hop is its own process (this
//! binary again, with `BENCH_ROLE` set) on a current-thread runtime, as the workers run.
//!
//! ```sh
//! cargo bench -p warren --bench pipeline
//! ```

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use warren::{Client, Config, Declarer, Envelope, Hop, JobSpec, Names, Payload, StepError, StepTopology, Worker};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PREFETCH: u16 = 300;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    sent_us: u64,
    pad: Vec<u8>,
}

impl Payload for Tick {
    const SCHEMA: &'static str = "bench.Tick/1";
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU time of a process so far (user + system), from its /proc stat file.
fn cpu_time_of(stat_file: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Counts arrivals at the sink and collects latencies.
#[derive(Default)]
struct Arrivals {
    count: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

impl Arrivals {
    fn record(&self, sent_us: u64) {
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push(now_us().saturating_sub(sent_us));
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    async fn wait_for(&self, n: u64, deadline: Duration) -> Res<()> {
        let end = Instant::now() + deadline;
        while self.count.load(Ordering::Relaxed) < n {
            if Instant::now() > end {
                return Err(format!("only {} of {n} arrived", self.count.load(Ordering::Relaxed)).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
    fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
    }
    fn percentiles(&self) -> (f64, f64) {
        let mut l = self.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_unstable();
        let pick = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0);
        (pick(0.50) as f64 / 1000.0, pick(0.99) as f64 / 1000.0)
    }
}

async fn connect(url: &str, name: &str) -> Res<Connection> {
    Ok(Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into())).await?)
}

/// The bare pipeline's queues get the arguments of Warren's step queues (quorum, delivery limit,
/// dead-letter exchange), and its hops publish through a direct exchange as Warren's do: the
/// same pipeline on the broker, without the runtime.
fn step_queue_args(ns: &str, queue: &str) -> FieldTable {
    warren::topology::step_queue_args(
        &Names::new(ns),
        &StepTopology { step: queue.to_owned(), delivery_limit: 5, max_duration: None },
    )
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// One bare hop: consume `from`, publish to `to`, ack after the confirm, many in flight.
async fn bare_hop(url: String, from: String, to: String) -> Res<()> {
    let exchange = format!("{}.bare", std::env::var("WARREN_NAMESPACE")?);
    let mut stop = std::pin::pin!(warren::shutdown_signal());
    let conn = connect(&url, "bench-bare-hop").await?;
    let cch = conn.create_channel().await?;
    cch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(from.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = stop.as_mut() => break,
            Some(d) = consumer.next() => {
                let d = d?;
                let confirm = pch
                    .basic_publish(exchange.as_str().into(), to.as_str().into(), BasicPublishOptions { mandatory: true, ..Default::default() }, &d.data, persistent())
                    .await?;
                inflight.push(async move {
                    confirm.await?;
                    d.acker.ack(BasicAckOptions::default()).await
                });
            }
            Some(r) = inflight.next(), if !inflight.is_empty() => { r?; }
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// The sink: consume, ack, record latency. `decode` extracts the send time from a body.
async fn sink(
    url: String,
    queue: String,
    arrivals: Arc<Arrivals>,
    decode: fn(&[u8]) -> Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> Res<()> {
    let conn = connect(&url, "bench-sink").await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(d) = consumer.next() => {
                let d = d?;
                if let Some(sent) = decode(&d.data) {
                    arrivals.record(sent);
                }
                acks.push(async move { d.acker.ack(BasicAckOptions::default()).await });
            }
            Some(r) = acks.next(), if !acks.is_empty() => { r?; }
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

fn bare_body(seq: u64) -> Vec<u8> {
    let mut body = vec![0u8; 200];
    body[..8].copy_from_slice(&now_us().to_be_bytes());
    body[8..16].copy_from_slice(&seq.to_be_bytes());
    body
}

fn bare_sent(body: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(body.get(..8)?.try_into().ok()?))
}

fn runtime_sent(body: &[u8]) -> Option<u64> {
    Envelope::<Tick>::decode(body).ok().map(|e| e.payload.sent_us)
}

/// Publishes `n` jobs: saturating (rate = None) with up to 1,000 confirms in flight, or open loop.
async fn produce(n: u64, rate: Option<u64>, mut publish_one: impl AsyncFnMut(u64) -> Res<()>) -> Res<()> {
    let start = Instant::now();
    for seq in 0..n {
        if let Some(rate) = rate {
            let due = start + Duration::from_micros(seq * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        publish_one(seq).await?;
    }
    Ok(())
}

/// A hop process: this same binary started with `BENCH_ROLE` set.
struct Hops {
    children: Vec<std::process::Child>,
}

impl Hops {
    fn spawn(role: &str, hops: &[(String, String)], url: &str, ns: &str) -> Res<Self> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for (from, to) in hops {
            children.push(
                std::process::Command::new(&exe)
                    .env("BENCH_ROLE", role)
                    .env("BENCH_FROM", from)
                    .env("BENCH_TO", to)
                    .env("WARREN_AMQP_URL", url)
                    .env("WARREN_NAMESPACE", ns)
                    .env("WARREN_PREFETCH", PREFETCH.to_string())
                    .env("WARREN_CONCURRENCY", PREFETCH.to_string())
                    .spawn()?,
            );
        }
        Ok(Self { children })
    }

    /// CPU time used so far by each hop process.
    fn cpu(&self) -> Vec<Duration> {
        self.children.iter().map(|c| cpu_time_of(&format!("/proc/{}/stat", c.id()))).collect()
    }

    fn stop(mut self) -> Res<()> {
        let mut children = std::mem::take(&mut self.children);
        for c in &children {
            std::process::Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        }
        for c in &mut children {
            let status = c.wait()?;
            if !status.success() {
                return Err(format!("hop exited with {status}").into());
            }
        }
        Ok(())
    }
}

impl Drop for Hops {
    /// A bench that fails half-way must not leave its hop processes running.
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs as one hop process until SIGTERM (see [`Hops`]).
fn run_hop(role: &str) -> Res<()> {
    let from = std::env::var("BENCH_FROM")?;
    let to = std::env::var("BENCH_TO")?;
    let url = std::env::var("WARREN_AMQP_URL")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match role {
            "bare" => bare_hop(url, from, to).await,
            _ => {
                let config = Config::load(None, &[])?;
                Worker::builder(from, &config)
                    .build()
                    .run(|_, t: Tick| async move { Ok::<_, StepError>(t) }, warren::shutdown_signal())
                    .await?;
                Ok(())
            }
        }
    })
}

/// Waits until each queue has a consumer. A passive declare of a missing queue closes its
/// channel, so each try takes a new one.
async fn wait_consumers(conn: &Connection, queues: &[String]) -> Res<()> {
    let end = Instant::now() + Duration::from_secs(30);
    for q in queues {
        loop {
            let ch = conn.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            if let Ok(info) = ch.queue_declare(q.as_str().into(), passive, FieldTable::default()).await
                && info.consumer_count() > 0
            {
                break;
            }
            if Instant::now() > end {
                return Err(format!("no consumer on {q}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The broker's CPU time so far, if its process (beam.smp) runs on this machine.
fn broker_cpu() -> Duration {
    let Ok(out) = std::process::Command::new("pgrep").arg("-o").arg("beam.smp").output() else {
        return Duration::ZERO;
    };
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if pid.is_empty() { Duration::ZERO } else { cpu_time_of(&format!("/proc/{pid}/stat")) }
}

struct Figures {
    jobs_per_s: f64,
    hop_cpu_us_per_job: f64,
    broker_cpu_us_per_job: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn bench_bare(url: &str, ns: &str, jobs: u64, latency: Option<(u64, u64)>) -> Res<Figures> {
    let conn = connect(url, "bench-bare-setup").await?;
    let ch = conn.create_channel().await?;
    let queues: Vec<String> = (1..=4).map(|i| format!("{ns}.bare.q{i}")).collect();
    let exchange = format!("{ns}.bare");
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await?;
    for q in &queues {
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), step_queue_args(ns, q)).await?;
        ch.queue_bind(
            q.as_str().into(),
            exchange.as_str().into(),
            q.as_str().into(),
            Default::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let (stop_tx, stop) = watch::channel(false);
    let arrivals = Arc::new(Arrivals::default());
    let pairs: Vec<(String, String)> = (0..3).map(|i| (queues[i].clone(), queues[i + 1].clone())).collect();
    let hops = Hops::spawn("bare", &pairs, url, ns)?;
    wait_consumers(&conn, &queues[..3]).await?;
    let sink_task = tokio::spawn(sink(url.into(), queues[3].clone(), arrivals.clone(), bare_sent, stop.clone()));

    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let first = queues[0].clone();
    let publish = |window: usize| {
        let pch = pch.clone();
        let first = first.clone();
        let exchange = exchange.clone();
        let mut pending = FuturesUnordered::new();
        async move |seq: u64| -> Res<()> {
            let c = pch
                .basic_publish(
                    exchange.as_str().into(),
                    first.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &bare_body(seq),
                    persistent(),
                )
                .await?;
            pending.push(c);
            while pending.len() >= window {
                if let Some(r) = pending.next().await {
                    r?;
                }
            }
            Ok(())
        }
    };

    let (t0, c0, b0) = (Instant::now(), hops.cpu(), broker_cpu());
    produce(jobs, None, publish(1000)).await?;
    arrivals.wait_for(jobs, Duration::from_secs(600)).await?;
    let (elapsed, cpu, broker) = (t0.elapsed(), hop_cpu(&c0, &hops.cpu()), broker_cpu() - b0);
    arrivals.reset();
    let (mut p50_ms, mut p99_ms) = (f64::NAN, f64::NAN);
    if let Some((rate, secs)) = latency {
        produce(rate * secs, Some(rate), publish(1)).await?;
        arrivals.wait_for(rate * secs, Duration::from_secs(60)).await?;
        (p50_ms, p99_ms) = arrivals.percentiles();
    }

    hops.stop()?;
    let _ = stop_tx.send(true);
    sink_task.await??;
    for q in &queues {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    ch.exchange_delete(exchange.as_str().into(), Default::default()).await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(Figures {
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        hop_cpu_us_per_job: cpu.as_micros() as f64 / jobs as f64,
        broker_cpu_us_per_job: broker.as_micros() as f64 / jobs as f64,
        p50_ms,
        p99_ms,
    })
}

async fn bench_runtime(url: &str, ns: &str, jobs: u64, latency: Option<(u64, u64)>) -> Res<Figures> {
    let mut config = Config::load_from(None, [("WARREN_AMQP_URL".to_owned(), url.to_owned())], &[])?;
    config.namespace = format!("{ns}.rt");
    config.prefetch = Some(PREFETCH);
    config.concurrency = PREFETCH as usize;
    let names = Names::new(&config.namespace);
    let client = Client::connect(&config).await?;
    let mut declarer = Declarer::new(client.broker(), &names);
    declarer.base().await?;
    declarer
        .step(&StepTopology { step: "sink".into(), delivery_limit: config.delivery_limit, max_duration: None })
        .await?;

    let (stop_tx, stop) = watch::channel(false);
    let pairs: Vec<(String, String)> = ["h1", "h2", "h3"].iter().map(|s| (s.to_string(), String::new())).collect();
    let hops = Hops::spawn("warren", &pairs, url, &config.namespace)?;
    let conn = connect(url, "bench-runtime-setup").await?;
    wait_consumers(&conn, &["h1", "h2", "h3"].map(|s| names.step_queue(s))).await?;
    let arrivals = Arc::new(Arrivals::default());
    let sink_task =
        tokio::spawn(sink(url.into(), names.step_queue("sink"), arrivals.clone(), runtime_sent, stop.clone()));
    let slip = vec![Hop::new("h1"), Hop::new("h2"), Hop::new("h3"), Hop::new("sink")];
    let job = |seq: u64| JobSpec::new("bench", slip.clone(), Tick { seq, sent_us: now_us(), pad: vec![0; 150] });

    let (t0, c0, b0) = (Instant::now(), hops.cpu(), broker_cpu());
    let mut seq = 0;
    while seq < jobs {
        let batch: Vec<_> = (seq..(seq + 1000).min(jobs)).map(job).collect();
        client.submit_many(&batch).await?;
        seq += batch.len() as u64;
    }
    arrivals.wait_for(jobs, Duration::from_secs(600)).await?;
    let (elapsed, cpu, broker) = (t0.elapsed(), hop_cpu(&c0, &hops.cpu()), broker_cpu() - b0);
    arrivals.reset();
    let (mut p50_ms, mut p99_ms) = (f64::NAN, f64::NAN);
    if let Some((rate, secs)) = latency {
        produce(rate * secs, Some(rate), async |seq| {
            client.submit(&job(seq)).await?;
            Ok(())
        })
        .await?;
        arrivals.wait_for(rate * secs, Duration::from_secs(60)).await?;
        (p50_ms, p99_ms) = arrivals.percentiles();
    }

    hops.stop()?;
    let _ = stop_tx.send(true);
    sink_task.await??;
    Declarer::new(client.broker(), &names).delete(&["h1", "h2", "h3", "sink"]).await?;
    client.broker().close().await;
    Ok(Figures {
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        hop_cpu_us_per_job: cpu.as_micros() as f64 / jobs as f64,
        broker_cpu_us_per_job: broker.as_micros() as f64 / jobs as f64,
        p50_ms,
        p99_ms,
    })
}

/// CPU per hop: the mean over the hop processes of what each used between two readings.
fn hop_cpu(before: &[Duration], after: &[Duration]) -> Duration {
    let total: Duration = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).sum();
    total / before.len().max(1) as u32
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Res<()> {
    if let Ok(role) = std::env::var("BENCH_ROLE") {
        return run_hop(&role);
    }
    let url = std::env::var("WARREN_AMQP_URL").unwrap_or_else(|_| warren::config::DEFAULT_AMQP_URL.into());
    let jobs = env_u64("BENCH_JOBS", 100_000);
    let rounds = env_u64("BENCH_ROUNDS", 3).max(1);
    let rate = env_u64("BENCH_RATE", 1_000);
    let secs = env_u64("BENCH_SECS", 5);
    let ns = format!("bench-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        println!(
            "3-hop pipeline, one process per hop: persistent, confirms, manual acks, quorum queues, prefetch {PREFETCH}"
        );
        println!(
            "{rounds} rounds of {jobs} jobs saturated (alternating order), then {rate} jobs/s open loop for {secs} s"
        );
        println!("job events on for warren\n");
        println!("{:<12} {:>10} {:>16} {:>18}", "round", "jobs/s", "µs CPU/hop/job*", "µs broker CPU/job");
        let (mut bare, mut runtime) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order: [bool; 2] = if round % 2 == 0 { [false, true] } else { [true, false] };
            for is_runtime in order {
                let f = if is_runtime {
                    bench_runtime(&url, &ns, jobs, None).await?
                } else {
                    bench_bare(&url, &ns, jobs, None).await?
                };
                let name = if is_runtime { "warren" } else { "bare lapin" };
                println!(
                    "{:<12} {:>10.0} {:>16.1} {:>18.1}",
                    format!("{} {name}", round + 1),
                    f.jobs_per_s,
                    f.hop_cpu_us_per_job,
                    f.broker_cpu_us_per_job
                );
                if is_runtime { runtime.push(f) } else { bare.push(f) }
            }
        }
        let bare_lat = bench_bare(&url, &ns, 0, Some((rate, secs))).await?;
        let runtime_lat = bench_runtime(&url, &ns, 0, Some((rate, secs))).await?;
        println!(
            "\n{:<12} {:>10} {:>16} {:>18} {:>10} {:>10}",
            "median", "jobs/s", "µs CPU/hop/job*", "µs broker CPU/job", "p50 ms", "p99 ms"
        );
        let mut ratios = Vec::new();
        for (name, runs, lat) in [("bare lapin", &bare, &bare_lat), ("warren", &runtime, &runtime_lat)] {
            let jps = median(runs.iter().map(|f| f.jobs_per_s).collect());
            ratios.push(jps);
            println!(
                "{name:<12} {:>10.0} {:>16.1} {:>18.1} {:>10.2} {:>10.2}",
                jps,
                median(runs.iter().map(|f| f.hop_cpu_us_per_job).collect()),
                median(runs.iter().map(|f| f.broker_cpu_us_per_job).collect()),
                lat.p50_ms,
                lat.p99_ms
            );
        }
        println!("\nratio warren / bare lapin (median throughput): {:.2} (target >= 0.80)", ratios[1] / ratios[0]);
        println!("* CPU of one hop process per job (mean of the three), broker excluded");
        Ok(())
    })
}
