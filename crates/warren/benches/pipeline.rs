//! The runtime against bare lapin, in one run: a 3-hop pass-through pipeline (persistent
//! messages, publisher confirms, manual acks, each hop acking its input only after its output's
//! confirm), first saturated with `BENCH_JOBS` jobs (default 100,000), then open loop at
//! `BENCH_RATE` jobs/s (default 1,000) for `BENCH_SECS` seconds (default 5) for latency. Job
//! events are on for the runtime, as in production. The producer, each hop and the sink are
//! processes of their own (this binary again, with `BENCH_ROLE` set), so the bench's own
//! process only starts, waits and reads figures; the producer keeps up to 1,000 confirms in
//! flight in a sliding window, for every variant.
//!
//! The reference is the minimal correct bare pipeline: plain durable quorum queues, the default
//! exchange, no `mandatory`, each hop on a current-thread runtime (`minimal`). Beside it:
//! `minimal-mt` (the same hops on a two-thread runtime: the runtime flavour, measured),
//! `independent` (the same bare pipeline written again as plainly as lapin's examples, sharing
//! no code with the reference: a task per message, default runtime; a slow reference shows
//! itself against it). Between the reference and Warren, variants add one thing of Warren's at
//! a time (`BENCH_VARIANTS`): `+queue-args` (Warren's step queue arguments: delivery limit,
//! dead-letter exchange), `+mandatory` (those, and `mandatory` on the default exchange, as
//! Warren's hand-off publishes), `+exchange` (through a direct exchange instead, as Warren once
//! published), `+message` (`+mandatory` carrying Warren's envelope and properties: what the
//! message format costs, apart from the runtime), and `warren-no-events` (the runtime with job
//! events off). Each row gives throughput, CPU per hop, broker CPU per job and the bytes a
//! hop's connection moves per job (from `rabbitmqctl list_connections`).
//!
//! ```sh
//! cargo bench -p warren --bench pipeline
//! BENCH_VARIANTS=independent,minimal,warren BENCH_JOBS=20000 cargo bench -p warren --bench pipeline
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
use warren::{Client, Config, Declarer, Envelope, Hop, JobSpec, Names, Payload, StepError, StepTopology, Worker};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PREFETCH: u16 = 300;
/// Confirms the producer keeps in flight (a sliding window).
const WINDOW: usize = 1000;

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

async fn connect(url: &str, name: &str) -> Res<Connection> {
    Ok(Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into())).await?)
}

/// One pipeline: what each hop publishes through and what its queues carry.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// The same bare pipeline written independently of the reference, as plainly as possible.
    Independent,
    /// Plain durable quorum queues, the default exchange, no `mandatory`; current-thread hops.
    Minimal,
    /// The reference's hops on a two-thread runtime.
    MinimalMt,
    /// Warren's step queue arguments (delivery limit, dead-letter exchange).
    QueueArgs,
    /// Those, and `mandatory` on the default exchange, as Warren's hand-off publishes.
    Mandatory,
    /// Those, through a direct exchange (`mandatory` too), as Warren published before.
    Exchange,
    /// `+mandatory` carrying Warren's message (envelope, properties) instead of a bare 200-byte
    /// body: what the message format costs the broker, apart from the runtime.
    Message,
    /// `+message` in the compact envelope (version 2).
    Compact,
    /// The runtime with job events off: what the events cost.
    WarrenNoEvents,
    /// The runtime.
    Warren,
}

impl Variant {
    const ALL: [Variant; 10] = [
        Variant::Independent,
        Variant::Minimal,
        Variant::MinimalMt,
        Variant::QueueArgs,
        Variant::Mandatory,
        Variant::Exchange,
        Variant::Message,
        Variant::Compact,
        Variant::WarrenNoEvents,
        Variant::Warren,
    ];
    /// What a plain `cargo bench` runs.
    const DEFAULT: [Variant; 6] = [
        Variant::Independent,
        Variant::Minimal,
        Variant::Message,
        Variant::Compact,
        Variant::WarrenNoEvents,
        Variant::Warren,
    ];
    fn name(self) -> &'static str {
        match self {
            Variant::Independent => "independent",
            Variant::Minimal => "minimal",
            Variant::MinimalMt => "minimal-mt",
            Variant::QueueArgs => "+queue-args",
            Variant::Mandatory => "+mandatory",
            Variant::Exchange => "+exchange",
            Variant::Message => "+message",
            Variant::Compact => "+compact",
            Variant::WarrenNoEvents => "warren-no-events",
            Variant::Warren => "warren",
        }
    }
    fn runtime(self) -> bool {
        matches!(self, Variant::Warren | Variant::WarrenNoEvents)
    }
    fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name().trim_start_matches('+') == name.trim_start_matches('+'))
    }
    /// The exchange a bare hop publishes to (`""` is the default exchange).
    fn exchange(self, ns: &str) -> String {
        if self == Variant::Exchange { format!("{ns}.bare") } else { String::new() }
    }
    fn mandatory(self) -> bool {
        matches!(
            self,
            Variant::Mandatory
                | Variant::Exchange
                | Variant::Message
                | Variant::Compact
                | Variant::Warren
                | Variant::WarrenNoEvents
        )
    }
    /// Whether its messages are Warren's (envelope and properties) rather than a bare body.
    fn warren_messages(self) -> bool {
        matches!(self, Variant::Message | Variant::Compact | Variant::Warren | Variant::WarrenNoEvents)
    }
    fn queue_args(self, ns: &str, queue: &str) -> FieldTable {
        if matches!(self, Variant::Minimal | Variant::MinimalMt | Variant::Independent) {
            let mut t = FieldTable::default();
            t.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
            t
        } else {
            warren::topology::step_queue_args(
                &Names::new(ns),
                &StepTopology { step: queue.to_owned(), delivery_limit: 5, max_duration: None },
            )
        }
    }
}

/// What a bare hop publishes with: persistent, or (`+message`) the properties it received.
fn forwarded(variant: Variant, d: &lapin::message::Delivery) -> BasicProperties {
    if variant.warren_messages() { d.properties.clone() } else { persistent() }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// One bare hop: consume `from`, publish to `to`, ack after the confirm, many in flight.
async fn bare_hop(url: String, from: String, to: String, variant: Variant) -> Res<()> {
    let exchange = variant.exchange(&std::env::var("WARREN_NAMESPACE")?);
    let options = BasicPublishOptions { mandatory: variant.mandatory(), ..Default::default() };
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
                    .basic_publish(exchange.as_str().into(), to.as_str().into(), options, &d.data, forwarded(variant, &d))
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

/// The sink: consumes `n` messages, acks them, and prints `{n} {p50 µs} {p99 µs}` of their
/// latencies (now minus the send time `decode` reads from a body) when the last has arrived.
async fn sink(url: &str, queue: &str, n: u64, decode: fn(&[u8]) -> Option<u64>) -> Res<()> {
    let conn = connect(url, "bench-sink").await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut latencies = Vec::with_capacity(n as usize);
    let mut acks = FuturesUnordered::new();
    while (latencies.len() as u64) < n {
        tokio::select! {
            Some(d) = consumer.next() => {
                let d = d?;
                latencies.push(decode(&d.data).map_or(0, |sent| now_us().saturating_sub(sent)));
                acks.push(async move { d.acker.ack(BasicAckOptions::default()).await });
            }
            Some(r) = acks.next(), if !acks.is_empty() => { r?; }
        }
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    latencies.sort_unstable();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    println!("{n} {} {}", pick(0.50).copied().unwrap_or(0), pick(0.99).copied().unwrap_or(0));
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

/// Publishes `n` messages to `first` with up to [`WINDOW`] confirms in flight: saturating
/// (`rate` = None), or open loop at `rate` a second (each on its schedule, whatever the
/// confirms of earlier ones are doing).
async fn produce(url: &str, ns: &str, first: &str, variant: Variant, n: u64, rate: Option<u64>) -> Res<()> {
    let conn = connect(url, "bench-producer").await?;
    let pch = conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = variant.exchange(ns);
    let options = BasicPublishOptions { mandatory: variant.mandatory(), ..Default::default() };
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    for seq in 0..n {
        if let Some(rate) = rate {
            let due = start + Duration::from_micros(seq * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let (body, props) = if variant.warren_messages() {
            // The client writes a job's first message in the plain envelope; `+compact` shows
            // what the compact one would cost on every hop.
            let version = if variant == Variant::Compact { 2 } else { 1 };
            warren_message(seq, version)?
        } else {
            (bare_body(seq), persistent())
        };
        let c = pch.basic_publish(exchange.as_str().into(), first.into(), options, &body, props).await?;
        pending.push(c);
        while pending.len() >= WINDOW {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// A job's first message exactly as the runtime's client writes it (`Client::submit`), in
/// envelope `version`.
fn warren_message(seq: u64, version: u16) -> Res<(Vec<u8>, BasicProperties)> {
    let job = job(seq);
    let env = warren::envelope::EnvelopeRef {
        v: version,
        job_id: uuid::Uuid::now_v7(),
        message_id: uuid::Uuid::now_v7(),
        causation_id: None,
        pipeline: &job.pipeline,
        slip: &job.slip,
        schema: &job.schema,
        payload: &job.payload,
    };
    let meta = warren::envelope::EnvelopeMeta {
        job_id: env.job_id,
        message_id: env.message_id,
        step: "h1",
        schema: &job.schema,
    };
    Ok((env.encode()?, warren::envelope::properties(&meta, 1)))
}

fn slip() -> Vec<Hop> {
    vec![Hop::new("h1"), Hop::new("h2"), Hop::new("h3"), Hop::new("sink")]
}

fn job(seq: u64) -> JobSpec<Tick> {
    JobSpec::new("bench", slip(), Tick { seq, sent_us: now_us(), pad: vec![0; 150] })
}

/// The same bare pipeline, written again without looking at the reference above: the plainest
/// lapin program for each part (a task per message in the hops, the default multi-thread
/// runtime, a semaphore for the producer's window). Its own queues, its own code.
mod independent {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use lapin::{
        BasicProperties, Connection, ConnectionProperties,
        options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions},
        types::FieldTable,
    };
    use tokio::sync::Semaphore;

    use super::Res;

    async fn open(url: &str) -> Res<Connection> {
        Ok(Connection::connect(url, ConnectionProperties::default().with_connection_name("bench-independent".into()))
            .await?)
    }

    /// Forward every message from `from` to `to`; ack each once its copy is confirmed.
    pub async fn hop(url: &str, from: &str, to: &str) -> Res<()> {
        let conn = open(url).await?;
        let input = conn.create_channel().await?;
        input.basic_qos(300, BasicQosOptions::default()).await?;
        let output = conn.create_channel().await?;
        output.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut deliveries =
            input.basic_consume(from.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        let to = to.to_owned();
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery?;
            let output = output.clone();
            let to = to.clone();
            tokio::spawn(async move {
                let props = BasicProperties::default().with_delivery_mode(2);
                let sent = output
                    .basic_publish("".into(), to.as_str().into(), BasicPublishOptions::default(), &delivery.data, props)
                    .await;
                if let Ok(confirm) = sent
                    && confirm.await.is_ok()
                {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
            });
        }
        Ok(())
    }

    /// Publish `n` 200-byte messages (the send time first), at most 1,000 unconfirmed.
    pub async fn produce(url: &str, first: &str, n: u64) -> Res<()> {
        let conn = open(url).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let window = Arc::new(Semaphore::new(1000));
        for seq in 0..n {
            let permit = window.clone().acquire_owned().await?;
            let mut body = vec![0u8; 200];
            body[..8].copy_from_slice(&super::now_us().to_be_bytes());
            body[8..16].copy_from_slice(&seq.to_be_bytes());
            let props = BasicProperties::default().with_delivery_mode(2);
            let confirm =
                ch.basic_publish("".into(), first.into(), BasicPublishOptions::default(), &body, props).await?;
            tokio::spawn(async move {
                let _ = confirm.await;
                drop(permit);
            });
        }
        let _all_confirmed = window.acquire_many(1000).await?;
        conn.close(200, "done".into()).await?;
        Ok(())
    }
}

/// Processes of this same binary started with `BENCH_ROLE` set: hops, a producer or a sink.
struct Procs {
    children: Vec<std::process::Child>,
}

impl Procs {
    fn spawn(
        role: &str,
        variant: Variant,
        pairs: &[(String, String)],
        url: &str,
        ns: &str,
        env: &[(&str, String)],
    ) -> Res<Self> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for (from, to) in pairs {
            children.push(
                std::process::Command::new(&exe)
                    .env("BENCH_ROLE", role)
                    .env("BENCH_VARIANT", variant.name())
                    .env("BENCH_FROM", from)
                    .env("BENCH_TO", to)
                    .env("WARREN_AMQP_URL", url)
                    .env("WARREN_NAMESPACE", ns)
                    .env("WARREN_PREFETCH", PREFETCH.to_string())
                    .env("WARREN_CONCURRENCY", PREFETCH.to_string())
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdout(std::process::Stdio::piped())
                    .spawn()?,
            );
        }
        Ok(Self { children })
    }

    /// CPU time used so far by each process.
    fn cpu(&self) -> Vec<Duration> {
        self.children.iter().map(|c| cpu_time_of(&format!("/proc/{}/stat", c.id()))).collect()
    }

    /// The largest value of a `/proc/{pid}/status` field (`VmRSS`, `VmHWM`) among the
    /// processes, in MB.
    fn memory_mb(&self, field: &str) -> f64 {
        let kb = |pid: u32| -> Option<u64> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        self.children.iter().filter_map(|c| kb(c.id())).max().unwrap_or(0) as f64 / 1024.0
    }

    /// Waits (polling every 2 ms, up to `deadline`) for every process to exit by itself (a
    /// producer, a sink) and returns what they printed.
    async fn wait(self, deadline: Duration) -> Res<String> {
        self.wait_for(deadline, true).await
    }

    async fn wait_for(mut self, deadline: Duration, must_succeed: bool) -> Res<String> {
        let end = Instant::now() + deadline;
        let mut out = String::new();
        for mut c in std::mem::take(&mut self.children) {
            let status = loop {
                if let Some(status) = c.try_wait()? {
                    break status;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    return Err(format!("a bench process did not finish within {deadline:?}").into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            if let Some(mut stdout) = c.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut out)?;
            }
            if must_succeed && !status.success() {
                return Err(format!("bench process exited with {status}").into());
            }
        }
        Ok(out)
    }

    /// Stops every process with SIGTERM (hops; the independent ones simply die of it).
    async fn stop(self) -> Res<()> {
        for c in &self.children {
            std::process::Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        }
        self.wait_for(Duration::from_secs(60), false).await.map(|_| ())
    }
}

impl Drop for Procs {
    /// A bench that fails half-way must not leave its processes running.
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs as one bench process (see [`Procs`]): a hop until SIGTERM, a producer or a sink until
/// done.
fn run_role(role: &str) -> Res<()> {
    let from = std::env::var("BENCH_FROM")?;
    let to = std::env::var("BENCH_TO")?;
    let url = std::env::var("WARREN_AMQP_URL")?;
    let ns = std::env::var("WARREN_NAMESPACE")?;
    let variant = Variant::parse(&std::env::var("BENCH_VARIANT")?).ok_or("unknown BENCH_VARIANT")?;
    let n = env_u64("BENCH_N", 0);
    let rate = Some(env_u64("BENCH_PRODUCE_RATE", 0)).filter(|r| *r > 0);
    let rt = match (role, variant) {
        // The independent pipeline runs as a plain `#[tokio::main]` program would.
        (_, Variant::Independent) | ("hop", Variant::MinimalMt) => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?
        }
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    rt.block_on(async move {
        match (role, variant) {
            ("hop", Variant::Independent) => independent::hop(&url, &from, &to).await,
            ("produce", Variant::Independent) if rate.is_none() => independent::produce(&url, &from, n).await,
            ("hop", v) if v.runtime() => {
                let config = Config::load(None, &[])?;
                Worker::builder(from, &config)
                    .build()
                    .run(|_, t: Tick| async move { Ok::<_, StepError>(t) }, warren::shutdown_signal())
                    .await?;
                Ok(())
            }
            ("hop", _) => bare_hop(url, from, to, variant).await,
            ("produce", _) => produce(&url, &ns, &from, variant, n, rate).await,
            ("sink", v) if v.runtime() => {
                // The runtime's hops write the compact envelope to a step only when every reader
                // of it says it reads it: the sink says so, as a worker would.
                let _announcing = tokio::spawn(announce_sink(url.clone(), ns.clone()));
                sink(&url, &from, n, runtime_sent).await
            }
            ("sink", v) => sink(&url, &from, n, if v.warren_messages() { runtime_sent } else { bare_sent }).await,
            (other, _) => Err(format!("unknown BENCH_ROLE {other}").into()),
        }
    })
}

/// Says in the registry, every 10 s, that step `sink` has a live reader of both envelopes.
async fn announce_sink(url: String, ns: String) -> Res<()> {
    let mut config = Config::load_from(None, [("WARREN_AMQP_URL".to_owned(), url)], &[])?;
    config.namespace = ns.clone();
    let broker = warren::Broker::connect(&config, "bench-sink-registry").await?;
    let names = Names::new(&ns);
    loop {
        let record = warren::registry::Record {
            v: 1,
            kind: warren::registry::RecordKind::Alive,
            step: "sink".into(),
            worker: format!("sink@bench#{}", std::process::id()),
            host: "bench".into(),
            pid: std::process::id(),
            health_addr: None,
            version: "1".into(),
            at_ms: warren::envelope::now_ms(),
            descriptor: None,
            protocol: Some(warren::compat::Versions::current(2, None)),
        };
        warren::registry::announce(&broker, &names, &record).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
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

/// Bytes the broker received and sent so far on connections whose client properties (with the
/// connection's name) `is_hop` accepts (`rabbitmqctl list_connections`; `None` where
/// rabbitmqctl is not at hand).
fn wire_bytes(is_hop: impl Fn(&str) -> bool) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "client_properties", "recv_oct", "send_oct", "-q", "--no-table-headers"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.rsplitn(3, '\t');
                let sent: u64 = f.next()?.trim().parse().ok()?;
                let recv: u64 = f.next()?.trim().parse().ok()?;
                is_hop(f.next()?).then_some(sent + recv)
            })
            .sum(),
    )
}

struct Figures {
    jobs_per_s: f64,
    hop_cpu_us_per_job: f64,
    broker_cpu_us_per_job: f64,
    wire_bytes_per_hop_job: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Largest resident set of a hop process once consuming, before the first job (MB).
    idle_rss_mb: f64,
    /// Largest peak resident set of a hop process over the run (MB).
    peak_rss_mb: f64,
}

/// What a run sets up and tears down: its queues, the hops, and what tells its hop connections
/// apart.
struct Pipeline {
    conn: Connection,
    hops: Procs,
    /// The queue the producer publishes to, and the one the sink consumes.
    first: String,
    last: String,
    teardown: Teardown,
    is_hop: Box<dyn Fn(&str) -> bool + Send>,
    ns: String,
}

/// What a run declared, to delete after it.
enum Teardown {
    Bare { ch: lapin::Channel, queues: Vec<String>, exchange: String },
    Warren { client: Client, names: Names },
}

impl Teardown {
    async fn run(self, conn: Connection) -> Res<()> {
        match self {
            Teardown::Bare { ch, queues, exchange } => {
                for q in &queues {
                    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
                }
                if !exchange.is_empty() {
                    ch.exchange_delete(exchange.as_str().into(), Default::default()).await?;
                }
            }
            Teardown::Warren { client, names } => {
                Declarer::new(client.broker(), &names).delete(&["h1", "h2", "h3", "sink"]).await?;
                client.broker().close().await;
            }
        }
        let _ = conn.close(200, "bye".into()).await;
        Ok(())
    }
}

async fn pipeline(url: &str, ns: &str, variant: Variant) -> Res<Pipeline> {
    let conn = connect(url, "bench-setup").await?;
    if variant.runtime() {
        let ns = format!("{ns}.rt");
        let names = Names::new(&ns);
        let mut config = Config::load_from(None, [("WARREN_AMQP_URL".to_owned(), url.to_owned())], &[])?;
        config.namespace = ns.clone();
        let client = Client::connect(&config).await?;
        let mut declarer = Declarer::new(client.broker(), &names);
        declarer.base().await?;
        declarer
            .step(&StepTopology { step: "sink".into(), delivery_limit: config.delivery_limit, max_duration: None })
            .await?;
        let pairs: Vec<(String, String)> = ["h1", "h2", "h3"].iter().map(|s| (s.to_string(), String::new())).collect();
        let events = [("WARREN_EVENTS", (variant == Variant::Warren).to_string())];
        let hops = Procs::spawn("hop", variant, &pairs, url, &ns, &events)?;
        wait_consumers(&conn, &["h1", "h2", "h3"].map(|s| names.step_queue(s))).await?;
        let prefix = format!("{ns}/h");
        return Ok(Pipeline {
            conn,
            hops,
            first: names.step_queue("h1"),
            last: names.step_queue("sink"),
            teardown: Teardown::Warren { client, names },
            is_hop: Box::new(move |props| props.contains(&prefix)),
            ns,
        });
    }
    let ch = conn.create_channel().await?;
    let kind = if variant == Variant::Independent { "independent" } else { "bare" };
    let queues: Vec<String> = (1..=4).map(|i| format!("{ns}.{kind}.q{i}")).collect();
    let exchange = variant.exchange(ns);
    if !exchange.is_empty() {
        let durable = lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
    }
    for q in &queues {
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), variant.queue_args(ns, q)).await?;
        if !exchange.is_empty() {
            ch.queue_bind(
                q.as_str().into(),
                exchange.as_str().into(),
                q.as_str().into(),
                Default::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    let pairs: Vec<(String, String)> = (0..3).map(|i| (queues[i].clone(), queues[i + 1].clone())).collect();
    let hops = Procs::spawn("hop", variant, &pairs, url, ns, &[])?;
    wait_consumers(&conn, &queues[..3]).await?;
    let conn_name = if variant == Variant::Independent { "bench-independent" } else { "bench-bare-hop" };
    Ok(Pipeline {
        conn,
        hops,
        first: queues[0].clone(),
        last: queues[3].clone(),
        teardown: Teardown::Bare { ch, queues, exchange },
        is_hop: Box::new(move |props| props.contains(conn_name)),
        ns: ns.to_owned(),
    })
}

impl Pipeline {
    /// Runs `n` jobs through: a sink process for them first, then a producer (`rate` 0:
    /// saturating); returns once the sink has them all, with the sink's p50 and p99 in ms.
    async fn pass(&self, url: &str, variant: Variant, n: u64, rate: u64) -> Res<(f64, f64)> {
        let env = [("BENCH_N", n.to_string()), ("BENCH_PRODUCE_RATE", rate.to_string())];
        let sink = Procs::spawn("sink", variant, &[(self.last.clone(), String::new())], url, &self.ns, &env)?;
        wait_consumers(&self.conn, std::slice::from_ref(&self.last)).await?;
        let producer = Procs::spawn("produce", variant, &[(self.first.clone(), String::new())], url, &self.ns, &env)?;
        let report = sink.wait(Duration::from_secs(600)).await?;
        producer.wait(Duration::from_secs(60)).await?;
        let fields: Vec<f64> = report.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        match fields[..] {
            [got, p50, p99] if got as u64 == n => Ok((p50 / 1000.0, p99 / 1000.0)),
            _ => Err(format!("the sink reported {report:?}").into()),
        }
    }
}

/// One run of `variant`: `jobs` saturated, or `(rate, secs)` open loop for latency.
async fn bench(url: &str, ns: &str, variant: Variant, jobs: u64, latency: Option<(u64, u64)>) -> Res<Figures> {
    let p = pipeline(url, ns, variant).await?;
    let idle_rss_mb = p.hops.memory_mb("VmRSS:");
    // rabbitmqctl first: its start-up costs CPU that is not the pipeline's.
    let w0 = wire_bytes(&p.is_hop);
    let (t0, c0, b0) = (Instant::now(), p.hops.cpu(), broker_cpu());
    if jobs > 0 {
        p.pass(url, variant, jobs, 0).await?;
    }
    let (elapsed, cpu, broker) = (t0.elapsed(), hop_cpu(&c0, &p.hops.cpu()), broker_cpu() - b0);
    let wire = match (w0, wire_bytes(&p.is_hop)) {
        (Some(a), Some(b)) if jobs > 0 => b.saturating_sub(a) as f64 / jobs as f64 / 3.0,
        _ => f64::NAN,
    };
    let (mut p50_ms, mut p99_ms) = (f64::NAN, f64::NAN);
    if let Some((rate, secs)) = latency {
        (p50_ms, p99_ms) = p.pass(url, variant, rate * secs, rate).await?;
    }
    let peak_rss_mb = p.hops.memory_mb("VmHWM:");
    p.hops.stop().await?;
    p.teardown.run(p.conn).await?;
    let per_job = |d: Duration| if jobs > 0 { d.as_micros() as f64 / jobs as f64 } else { f64::NAN };
    Ok(Figures {
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        hop_cpu_us_per_job: per_job(cpu),
        broker_cpu_us_per_job: per_job(broker),
        wire_bytes_per_hop_job: wire,
        p50_ms,
        p99_ms,
        idle_rss_mb,
        peak_rss_mb,
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
        return run_role(&role);
    }
    let url = std::env::var("WARREN_AMQP_URL").unwrap_or_else(|_| warren::config::DEFAULT_AMQP_URL.into());
    let jobs = env_u64("BENCH_JOBS", 100_000);
    let rounds = env_u64("BENCH_ROUNDS", 3).max(1);
    let rate = env_u64("BENCH_RATE", 1_000);
    let secs = env_u64("BENCH_SECS", 5);
    let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
    let variants: Vec<Variant> = match std::env::var("BENCH_VARIANTS") {
        Ok(list) => list
            .split(',')
            .map(|v| {
                Variant::parse(v.trim())
                    .ok_or_else(|| format!("BENCH_VARIANTS: unknown variant `{v}` ({})", names.join(", ")))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => Variant::DEFAULT.to_vec(),
    };
    if !variants.contains(&Variant::Minimal) || !variants.contains(&Variant::Warren) {
        return Err("BENCH_VARIANTS must include minimal and warren".into());
    }
    let ns = format!("bench-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        println!(
            "3-hop pipeline, the producer, each hop and the sink a process of its own: persistent, confirms (a sliding window of {WINDOW} at the producer), manual acks, quorum queues, prefetch {PREFETCH}"
        );
        println!("{rounds} rounds of {jobs} jobs saturated (order rotated per round), then {rate} jobs/s open loop for {secs} s");
        println!("job events on for warren\n");
        println!("{:<16} {:>10} {:>16} {:>18} {:>14}", "round", "jobs/s", "µs CPU/hop/job*", "µs broker CPU/job", "bytes/hop/job");
        let mut runs: Vec<Vec<Figures>> = variants.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds as usize {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let f = bench(&url, &ns, variants[i], jobs, None).await?;
                println!(
                    "{:<16} {:>10.0} {:>16.1} {:>18.1} {:>14.0}",
                    format!("{} {}", round + 1, variants[i].name()),
                    f.jobs_per_s,
                    f.hop_cpu_us_per_job,
                    f.broker_cpu_us_per_job,
                    f.wire_bytes_per_hop_job
                );
                runs[i].push(f);
            }
        }
        // Latency: minimal, warren-no-events (when asked for) and warren in turn, as many times
        // as there were rounds.
        let (mut minimal_lat, mut quiet_lat, mut warren_lat) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            minimal_lat.push(bench(&url, &ns, Variant::Minimal, 0, Some((rate, secs))).await?);
            if variants.contains(&Variant::WarrenNoEvents) {
                quiet_lat.push(bench(&url, &ns, Variant::WarrenNoEvents, 0, Some((rate, secs))).await?);
            }
            warren_lat.push(bench(&url, &ns, Variant::Warren, 0, Some((rate, secs))).await?);
        }
        let lat = |runs: &[Figures], f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
        println!(
            "\n{:<16} {:>10} {:>16} {:>18} {:>14} {:>8} {:>8} {:>9} {:>9}",
            "median",
            "jobs/s",
            "µs CPU/hop/job*",
            "µs broker CPU/job",
            "bytes/hop/job",
            "p50 ms",
            "p99 ms",
            "idle MB†",
            "peak MB†"
        );
        let med = |i: usize, f: fn(&Figures) -> f64| median(runs[i].iter().map(f).collect());
        for (i, v) in variants.iter().enumerate() {
            let latency = match v {
                Variant::Minimal => Some(&minimal_lat),
                Variant::WarrenNoEvents => Some(&quiet_lat),
                Variant::Warren => Some(&warren_lat),
                _ => None,
            };
            println!(
                "{:<16} {:>10.0} {:>16.1} {:>18.1} {:>14.0} {:>8} {:>8} {:>9.1} {:>9.1}",
                v.name(),
                med(i, |f| f.jobs_per_s),
                med(i, |f| f.hop_cpu_us_per_job),
                med(i, |f| f.broker_cpu_us_per_job),
                med(i, |f| f.wire_bytes_per_hop_job),
                latency.map_or("-".into(), |l| format!("{:.2}", lat(l, |f| f.p50_ms))),
                latency.map_or("-".into(), |l| format!("{:.2}", lat(l, |f| f.p99_ms))),
                med(i, |f| f.idle_rss_mb),
                med(i, |f| f.peak_rss_mb),
            );
        }
        let at = |v: Variant| variants.iter().position(|x| *x == v);
        let (m, w) = (at(Variant::Minimal).unwrap_or(0), at(Variant::Warren).unwrap_or(0));
        if let Some(ind) = at(Variant::Independent) {
            println!(
                "\nreference (minimal) / independent bare pipeline: throughput {:.2}, broker CPU per job {:.2} (the reference is sound within 10%: 0.90..1.10)",
                med(m, |f| f.jobs_per_s) / med(ind, |f| f.jobs_per_s),
                med(m, |f| f.broker_cpu_us_per_job) / med(ind, |f| f.broker_cpu_us_per_job),
            );
        }
        // This machine's speed drifts by more than the differences measured: the ratio within
        // each round (the variants ran minutes apart), then its median, is the sturdier figure.
        let paired = |f: fn(&Figures) -> f64| median(runs[w].iter().zip(&runs[m]).map(|(a, b)| f(a) / f(b)).collect());
        let paired_lat = median(warren_lat.iter().zip(&minimal_lat).map(|(a, b)| a.p99_ms / b.p99_ms).collect());
        println!(
            "warren / minimal bare, median of each round's ratio: throughput {:.2} (target >= 0.95, aim >= 1.0), broker CPU per job {:.2} (target <= 1.0), p99 at {rate} jobs/s {:.2} (target <= 1.20)",
            paired(|f| f.jobs_per_s),
            paired(|f| f.broker_cpu_us_per_job),
            paired_lat
        );
        println!(
            "warren / minimal bare, ratio of the medians: throughput {:.2}, broker CPU per job {:.2}, p99 {:.2}",
            med(w, |f| f.jobs_per_s) / med(m, |f| f.jobs_per_s),
            med(w, |f| f.broker_cpu_us_per_job) / med(m, |f| f.broker_cpu_us_per_job),
            lat(&warren_lat, |f| f.p99_ms) / lat(&minimal_lat, |f| f.p99_ms)
        );
        println!("* CPU of one hop process per job (mean of the three), broker excluded; bytes are what one hop's connection moves per job, both ways");
        println!("† resident memory of the largest hop process: once consuming, before any job (VmRSS), and its peak over the run (VmHWM); the hops are this bench binary, so a worker binary holds less or the same");
        Ok(())
    })
}
