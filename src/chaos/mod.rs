//! The chaos run: real worker processes of the test step on RabbitMQ nodes of its own, broken on
//! purpose while jobs flow, then counted: every job must reach the sink exactly once, nothing
//! healthy may end in a dead-letter queue, and nothing may be left in a queue.
//!
//! | scenario | what breaks |
//! | --- | --- |
//! | `kills` | 3 steps × 2 workers; a random worker SIGKILLed every second, every connection closed every 10 s |
//! | `rolling` | concurrency 1, default prefetch; every worker restarted with SIGTERM, one after another, for some rounds |
//! | `broker` | the node's app stopped and started, then the node killed with SIGKILL and started again |
//! | `cluster` | 3 nodes, quorum step queues; the node holding the leaders stopped and started again |
//! | `hostile` | a burst of garbage, wrong types, forged headers, huge bodies and missing properties among healthy jobs |
//! | `retries` | 3 nodes; while a tenth of the jobs (at most 1,000) wait out a retry delay, the node leading the delay queues stopped for good |
//! | `partition` | one worker of each step behind a proxy that stops forwarding without closing (heartbeat 5 s), held 20 s, then healed |
//! | `alarm` | the broker's memory alarm raised while jobs flow, a client submitting into it, cleared; then its disk alarm |
//!
//! `warren-chaos` runs them from the command line (docs/OPERATIONS.md); the end-to-end tests run
//! them at a reduced size.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;
use warren::{Broker, Client, Config, Context, Envelope, FanOut, Hop, JobSpec, Names, StepError, Worker, envelope};

use crate::{Behaviour, Probe};

mod fleet;
pub mod node;
pub mod proxy;

pub use fleet::{Slot, WorkerSpec};
pub use node::Node;
pub use proxy::Proxy;

/// A chaos run could not be carried out (as opposed to finding a fault, which its [`Row`] shows).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChaosError(pub String);

/// The scenarios, in the order the full run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Random SIGKILLs of workers and closed connections.
    Kills,
    /// Rolling SIGTERM restarts at concurrency 1.
    Rolling,
    /// The broker's app stopped and started, then the node killed and started.
    Broker,
    /// A 3-node cluster losing the node that holds the queue leaders.
    Cluster,
    /// Hostile input among healthy jobs.
    Hostile,
    /// A 3-node cluster losing, for good, the node that leads the delay queues while retries wait.
    Retries,
    /// Workers cut off from the broker without a close, past the heartbeat timeout, then healed.
    Partition,
    /// The broker's memory alarm, then its disk alarm, raised and cleared while jobs flow.
    Alarm,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::Kills,
        Scenario::Rolling,
        Scenario::Broker,
        Scenario::Cluster,
        Scenario::Hostile,
        Scenario::Retries,
        Scenario::Partition,
        Scenario::Alarm,
    ];

    /// The scenario's name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kills => "kills",
            Scenario::Rolling => "rolling",
            Scenario::Broker => "broker",
            Scenario::Cluster => "cluster",
            Scenario::Hostile => "hostile",
            Scenario::Retries => "retries",
            Scenario::Partition => "partition",
            Scenario::Alarm => "alarm",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How large a run is.
#[derive(Debug, Clone)]
pub struct Options {
    /// The worker binary: `warren-test-step`, `warren-exec` (with [`Options::step_args`]), or any
    /// worker that takes `--step STEP` and the `WARREN_*` environment and passes `warren.test.Probe/1`
    /// on as `warren-test-step` does.
    pub worker_bin: PathBuf,
    /// Arguments after `--step STEP`: for `warren-exec`, `--` and the step's program.
    pub step_args: Vec<String>,
    /// At most this many messages at once per worker (a step run as child processes runs one
    /// child per message in flight).
    pub max_concurrency: Option<usize>,
    /// Where nodes keep their data and workers their logs (a fresh folder per scenario below it,
    /// removed when the scenario meets its target). The `rabbitmq` user must be able to reach it:
    /// a folder under /tmp, not under /root.
    pub dir: PathBuf,
    /// Healthy jobs per scenario.
    pub jobs: usize,
    /// Rounds of rolling restarts.
    pub rounds: usize,
    /// Hostile messages in the `hostile` scenario.
    pub hostile: usize,
    /// Size of the huge hostile bodies, in bytes.
    pub huge_body: usize,
}

impl Options {
    /// The full size of the issue: 10,000 jobs, 5 rounds, 100 hostile messages with 50 MB bodies.
    pub fn full(worker_bin: PathBuf, dir: PathBuf) -> Self {
        Self {
            worker_bin,
            step_args: Vec::new(),
            max_concurrency: None,
            dir,
            jobs: 10_000,
            rounds: 5,
            hostile: 100,
            huge_body: 50 * 1024 * 1024,
        }
    }
}

/// What one scenario found. The target for every row: nothing lost, duplicated, healthy
/// dead-lettered or left over.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The scenario.
    pub scenario: &'static str,
    /// Healthy jobs submitted (hostile messages that are valid jobs included).
    pub submitted: usize,
    /// Jobs neither at the sink, nor dead-lettered, nor left in a queue.
    pub lost: usize,
    /// Jobs that reached the sink under two or more different message ids.
    pub duplicated: usize,
    /// Deliveries at the sink of a message id it already had (what dedup drops).
    pub redelivered_same_id: usize,
    /// Healthy jobs in a dead-letter queue, with kind and reason.
    pub healthy_dead: Vec<String>,
    /// Hostile messages in a dead-letter queue / hostile messages that were refused.
    pub hostile_dead: (usize, usize),
    /// Hostile dead letters without a reason header.
    pub hostile_without_reason: usize,
    /// Messages left in step and retry queues at the end.
    pub left: usize,
    /// Which queues they are in.
    pub left_in: Vec<String>,
    /// From the first job to the last at the sink.
    pub drain: Duration,
    /// Worker processes started beyond the initial ones while nothing killed them (scenario `hostile`).
    pub unplanned_restarts: u32,
    /// What was done to the system.
    pub actions: String,
}

impl Row {
    /// Whether the row meets the target.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.healthy_dead.is_empty()
            && self.left == 0
            && self.hostile_dead.0 == self.hostile_dead.1
            && self.hostile_without_reason == 0
            && self.unplanned_restarts == 0
    }

    /// The table's header line.
    pub fn header() -> String {
        format!(
            "{:<9} {:>9} {:>5} {:>10} {:>13} {:>12} {:>12} {:>5} {:>8}  {}",
            "scenario",
            "submitted",
            "lost",
            "duplicated",
            "same-id drop",
            "healthy dead",
            "hostile dead",
            "left",
            "drain",
            "actions"
        )
    }

    /// One table line.
    pub fn line(&self) -> String {
        let hostile = if self.hostile_dead.1 == 0 {
            "-".to_owned()
        } else {
            format!("{}/{}", self.hostile_dead.0, self.hostile_dead.1)
        };
        format!(
            "{:<9} {:>9} {:>5} {:>10} {:>13} {:>12} {:>12} {:>5} {:>7.1}s  {}",
            self.scenario,
            self.submitted,
            self.lost,
            self.duplicated,
            self.redelivered_same_id,
            self.healthy_dead.len(),
            hostile,
            self.left,
            self.drain.as_secs_f64(),
            self.actions
        )
    }
}

const STEPS: [&str; 3] = ["s1", "s2", "s3"];

/// What the sink saw: message ids per job, and deliveries in all.
#[derive(Debug, Default)]
struct SinkLog {
    ids: HashMap<u64, HashSet<Uuid>>,
    deliveries: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Everything a scenario runs on: nodes, workers, the sink and a client.
struct Rig {
    /// The scenario's folder (node data and worker logs); removed when the row meets the target.
    dir: PathBuf,
    nodes: Vec<Node>,
    config: Config,
    names: Names,
    spec: WorkerSpec,
    slots: Vec<Slot>,
    sink: Arc<Mutex<SinkLog>>,
    sink_stop: Option<tokio::sync::oneshot::Sender<()>>,
    sink_task: Option<tokio::task::JoinHandle<()>>,
    /// The proxy worker 0 of each step connects through (scenario `partition`).
    proxy: Option<Proxy>,
}

/// What a scenario's rig is made of.
#[derive(Debug, Default)]
struct Setup {
    nodes: usize,
    concurrency: usize,
    /// More environment for every worker.
    env: Vec<(String, String)>,
    /// Worker 0 of each step connects through a [`Proxy`] that can cut it off; every worker
    /// then runs with a 5 s heartbeat.
    proxied: bool,
}

impl Rig {
    async fn start(opts: &Options, scenario: Scenario, nodes: usize, concurrency: usize) -> Result<Rig, ChaosError> {
        Self::start_with(opts, scenario, Setup { nodes, concurrency, ..Setup::default() }).await
    }

    async fn start_with(opts: &Options, scenario: Scenario, setup: Setup) -> Result<Rig, ChaosError> {
        let Setup { nodes, concurrency, env, proxied } = setup;
        let tag = &Uuid::now_v7().simple().to_string()[20..];
        let dir = opts.dir.join(format!("{}-{tag}", scenario.name()));
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| ChaosError(format!("{}: {e}", logs.display())))?;
        let prefix = format!("wchaos-{tag}");
        let mut started = Vec::new();
        for i in 0..nodes {
            started.push(Node::start(&dir, &prefix, i + 1).await?);
        }
        for n in started.iter().skip(1) {
            n.join(&started[0]).await?;
        }
        let urls = started.iter().map(Node::url).collect::<Vec<_>>().join(",");
        let namespace = format!("chaos-{}", scenario.name());
        let config = Config::load_from(
            None,
            [
                ("WARREN_AMQP_URL".to_owned(), urls.clone()),
                ("WARREN_NAMESPACE".to_owned(), namespace.clone()),
                ("WARREN_DEDUP_WINDOW".to_owned(), "0".to_owned()),
            ],
            &[],
        )
        .map_err(|e| ChaosError(e.to_string()))?;
        let spec = WorkerSpec {
            bin: opts.worker_bin.clone(),
            args: opts.step_args.clone(),
            urls,
            namespace: namespace.clone(),
            concurrency: opts.max_concurrency.map_or(concurrency, |m| concurrency.min(m)),
            logs,
            env,
        };
        let proxy = if proxied { Some(Proxy::start(started[0].port).await?) } else { None };
        let mut rig = Rig {
            dir: dir.clone(),
            nodes: started,
            names: Names::new(&namespace),
            config,
            spec,
            slots: Vec::new(),
            sink: Arc::default(),
            sink_stop: None,
            sink_task: None,
            proxy,
        };
        rig.start_sink();
        for step in STEPS {
            for i in 0..2 {
                let spec = match &rig.proxy {
                    // A partition shows only past the heartbeat timeout: 5 s makes that 10 s.
                    Some(p) if i == 0 => WorkerSpec {
                        urls: format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=5", p.port),
                        ..rig.spec.clone()
                    },
                    Some(_) => WorkerSpec { urls: format!("{}?heartbeat=5", rig.spec.urls), ..rig.spec.clone() },
                    None => rig.spec.clone(),
                };
                rig.slots.push(Slot::start(&spec, step, i));
            }
        }
        rig.wait_consumers(2, Duration::from_secs(60)).await?;
        Ok(rig)
    }

    /// The sink is a Warren worker in this process (it reconnects like any other) that writes
    /// down every delivery; with no dedup window it sees redeliveries of the same id too.
    fn start_sink(&mut self) {
        let log = self.sink.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = Worker::builder("sink", &self.config).concurrency(64).build();
        let handler = move |ctx: Context, probe: Probe| {
            let log = log.clone();
            async move {
                if let Ok(mut l) = log.lock() {
                    let now = Instant::now();
                    l.first.get_or_insert(now);
                    l.last = Some(now);
                    l.deliveries += 1;
                    l.ids.entry(probe.seq).or_default().insert(ctx.message_id);
                }
                Ok::<_, StepError>(FanOut::<Probe>(Vec::new()))
            }
        };
        self.sink_task = Some(tokio::spawn(async move {
            if let Err(e) = worker.run(handler, async move { drop(stopped.await) }).await {
                tracing::error!(error = %e, "the chaos sink stopped");
            }
        }));
        self.sink_stop = Some(stop);
    }

    fn at_sink(&self) -> usize {
        self.sink.lock().map(|l| l.ids.len()).unwrap_or(0)
    }

    /// Consumers on every step queue, read through a short-lived connection (nodes come and go).
    async fn consumers(&self) -> Option<Vec<u32>> {
        let broker = Broker::connect(&self.config, "chaos-probe").await.ok()?;
        let ch = broker.channel().await.ok()?;
        let mut out = Vec::new();
        for step in STEPS {
            let q = ch
                .queue_declare(
                    self.names.step_queue(step).as_str().into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .ok()?;
            out.push(q.consumer_count());
        }
        broker.close().await;
        Some(out)
    }

    async fn wait_consumers(&self, n: u32, deadline: Duration) -> Result<(), ChaosError> {
        let end = Instant::now() + deadline;
        loop {
            if self.consumers().await.is_some_and(|c| c.iter().all(|&k| k >= n)) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(ChaosError(format!("the workers did not all consume within {deadline:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // polling interval
        }
    }

    async fn wait_sink(&self, n: usize, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while self.at_sink() < n {
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // polling interval
        }
        true
    }

    /// Waits until `n` jobs are at the sink, or until nothing arrived for `stall`; then until
    /// the step queues hold nothing ready (redeliveries of work already handed on still pass
    /// through and are dropped by id), within `stall` again.
    async fn drain(&self, n: usize, stall: Duration) {
        let mut seen = self.at_sink();
        let mut since = Instant::now();
        while seen < n && since.elapsed() < stall {
            tokio::time::sleep(Duration::from_millis(100)).await; // polling interval
            let now = self.at_sink();
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
        let end = Instant::now() + stall;
        while Instant::now() < end {
            if self.pending().await.is_some_and(|(n, _)| n == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // polling interval
        }
    }

    /// Messages in the step and retry queues, ready or unacked, and which queues hold them, as
    /// the first node that answers reports them.
    async fn pending(&self) -> Option<(usize, Vec<String>)> {
        for node in &self.nodes {
            let Ok(listing) = node.ctl(&["list_queues", "-q", "--no-table-headers", "name", "messages"]).await else {
                continue;
            };
            let (steps, retries) = (format!("{}.step.", self.names.namespace()), self.names.retry_prefix());
            let mut total = 0;
            let mut detail = Vec::new();
            for line in listing.lines() {
                let mut parts = line.split_whitespace();
                let (Some(name), Some(n)) = (parts.next(), parts.next()) else { continue };
                let n: usize = n.parse().unwrap_or(0);
                if (name.starts_with(&steps) || name.starts_with(&retries)) && n > 0 {
                    total += n;
                    detail.push(format!("{name}: {n}"));
                }
            }
            return Some((total, detail));
        }
        None
    }

    /// The delay queues of the namespace as the first node that answers lists them: name,
    /// messages and leader (`None` when no node answers).
    async fn delay_queues(&self) -> Option<Vec<(String, usize, String)>> {
        for node in &self.nodes {
            let Ok(listing) =
                node.ctl(&["list_queues", "-q", "--no-table-headers", "name", "messages", "leader"]).await
            else {
                continue;
            };
            let prefix = self.names.retry_prefix();
            return Some(
                listing
                    .lines()
                    .filter_map(|line| {
                        let mut parts = line.split_whitespace();
                        let (name, n, leader) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
                        name.starts_with(&prefix).then(|| (name.to_owned(), n.parse().unwrap_or(0), leader.to_owned()))
                    })
                    .collect(),
            );
        }
        None
    }

    async fn submit(&self, seqs: std::ops::Range<u64>, sleep_ms: u64) -> Result<(), ChaosError> {
        let behaviour = Behaviour { sleep_ms, ..Default::default() };
        self.submit_as(seqs, |_| behaviour.clone()).await
    }

    /// Submits jobs whose hop at each step behaves as `behaviour(step)` says.
    async fn submit_as(
        &self,
        seqs: std::ops::Range<u64>,
        behaviour: impl Fn(&str) -> Behaviour,
    ) -> Result<(), ChaosError> {
        let mut slip: Vec<Hop> = Vec::new();
        for step in STEPS {
            slip.push(Hop::with_params(step, &behaviour(step)).map_err(|e| ChaosError(e.to_string()))?);
        }
        slip.push(Hop::new("sink"));
        let client = Client::connect(&self.config).await.map_err(|e| ChaosError(e.to_string()))?;
        let jobs: Vec<JobSpec<Probe>> =
            seqs.map(|seq| JobSpec::new("chaos", slip.clone(), Probe { seq, hops: 0 })).collect();
        for chunk in jobs.chunks(1000) {
            client.submit_many(chunk).await.map_err(|e| ChaosError(format!("submit: {e}")))?;
        }
        client.broker().close().await;
        Ok(())
    }

    /// Stops everything and counts. `expected` are the jobs that must reach the sink.
    async fn finish(mut self, scenario: Scenario, expected: &HashSet<u64>, hostile: usize) -> Result<Row, ChaosError> {
        let unplanned: u32 = self.slots.iter().map(|s| s.starts.load(std::sync::atomic::Ordering::SeqCst) - 1).sum();
        for slot in std::mem::take(&mut self.slots) {
            slot.stop().await;
        }
        if let Some(stop) = self.sink_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.sink_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        let mut row = Row { scenario: scenario.name(), submitted: expected.len(), ..Row::default() };
        {
            let log = self.sink.lock().map_err(|_| ChaosError("sink log poisoned".into()))?;
            row.duplicated = log.ids.values().filter(|ids| ids.len() > 1).count();
            let distinct: usize = log.ids.values().map(HashSet::len).sum();
            row.redelivered_same_id = log.deliveries - distinct;
            if let (Some(a), Some(b)) = (log.first, log.last) {
                row.drain = b - a;
            }
            let arrived = log.ids.keys().filter(|k| expected.contains(k)).count();
            row.lost = expected.len() - arrived;
        }
        if scenario == Scenario::Hostile {
            row.unplanned_restarts = unplanned;
        }

        // Dead letters, classified; then whatever is left in step and retry queues.
        let broker = Broker::connect(&self.config, "chaos-count").await.map_err(|e| ChaosError(e.to_string()))?;
        let ch = broker.channel().await.map_err(|e| ChaosError(e.to_string()))?;
        for step in STEPS.iter().chain(["sink"].iter()) {
            let queue = self.names.dead_queue(step);
            while let Ok(Some(m)) = ch.basic_get(queue.as_str().into(), BasicGetOptions::default()).await {
                let d = &m.delivery;
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let kind = envelope::header_str(&d.properties, envelope::headers::ERROR_KIND).unwrap_or("");
                let reason = envelope::header_str(&d.properties, envelope::headers::ERROR).unwrap_or("");
                match Envelope::<Probe>::decode(&d.data) {
                    Ok(env) if expected.contains(&env.payload.seq) => {
                        row.lost -= 1;
                        row.healthy_dead.push(format!("seq {} at {step}: {kind}: {reason}", env.payload.seq));
                    }
                    _ => {
                        row.hostile_dead.0 += 1;
                        if reason.is_empty() || kind.is_empty() {
                            row.hostile_without_reason += 1;
                        }
                    }
                }
            }
        }
        row.hostile_dead.1 = hostile;
        let (left, left_in) =
            self.pending().await.ok_or_else(|| ChaosError("no node answers `rabbitmqctl list_queues`".into()))?;
        row.left = left;
        row.left_in = left_in;
        row.lost = row.lost.saturating_sub(left);
        broker.close().await;
        for node in &self.nodes {
            node.shutdown().await;
        }
        if row.ok() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(row)
    }
}

/// Runs one scenario and returns its row.
pub async fn run(scenario: Scenario, opts: &Options) -> Result<Row, ChaosError> {
    match scenario {
        Scenario::Kills => kills(opts).await,
        Scenario::Rolling => rolling(opts).await,
        Scenario::Broker => broker(opts).await,
        Scenario::Cluster => cluster(opts).await,
        Scenario::Hostile => hostile(opts).await,
        Scenario::Retries => retries(opts).await,
        Scenario::Partition => partition(opts).await,
        Scenario::Alarm => alarm(opts).await,
    }
}

fn all(n: usize) -> HashSet<u64> {
    (0..n as u64).collect()
}

const STALL: Duration = Duration::from_secs(90);

/// Each step's simulated work per message: long enough that faults land among messages in flight.
const HANDLER_MS: u64 = 50;

async fn kills(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Kills, 1, 8).await?;
    rig.submit(0..opts.jobs as u64, HANDLER_MS).await?;
    let (mut kills, mut closes) = (0, 0);
    let start = Instant::now();
    let mut last_close = Instant::now();
    let mut last_progress = (rig.at_sink(), Instant::now());
    while rig.at_sink() < opts.jobs && last_progress.1.elapsed() < STALL {
        tokio::time::sleep(Duration::from_secs(1)).await; // the fault schedule: one kill a second
        if rig.at_sink() >= opts.jobs {
            break;
        }
        let victim = &rig.slots[fastrand::usize(..rig.slots.len())];
        victim.signal("KILL").await?;
        kills += 1;
        if last_close.elapsed() >= Duration::from_secs(10) {
            rig.nodes[0].ctl(&["close_all_connections", "chaos: connections closed"]).await?;
            closes += 1;
            last_close = Instant::now();
        }
        if rig.at_sink() != last_progress.0 {
            last_progress = (rig.at_sink(), Instant::now());
        }
    }
    let actions = format!(
        "{kills} SIGKILLs, {closes} close-all-connections in {:.0}s, until {} of {} were through",
        start.elapsed().as_secs_f64(),
        rig.at_sink(),
        opts.jobs
    );
    rig.drain(opts.jobs, STALL).await;
    let mut row = rig.finish(Scenario::Kills, &all(opts.jobs), 0).await?;
    row.actions = actions;
    Ok(row)
}

async fn rolling(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Rolling, 1, 1).await?;
    rig.submit(0..opts.jobs as u64, 5).await?;
    let mut restarts = 0;
    let mut through = Vec::new();
    'rounds: for _ in 0..opts.rounds {
        for slot in &rig.slots {
            if rig.at_sink() >= opts.jobs {
                break 'rounds;
            }
            let before = slot.signal("TERM").await?;
            let end = Instant::now() + Duration::from_secs(60);
            while slot.starts.load(std::sync::atomic::Ordering::SeqCst) == before && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(50)).await; // polling interval
            }
            rig.wait_consumers(2, Duration::from_secs(60)).await?;
            restarts += 1;
        }
        through.push(rig.at_sink().to_string());
    }
    rig.drain(opts.jobs, STALL).await;
    let actions = format!(
        "{restarts} SIGTERM restarts (concurrency 1, prefetch default); jobs through after each round: {}",
        through.join(", ")
    );
    let mut row = rig.finish(Scenario::Rolling, &all(opts.jobs), 0).await?;
    row.actions = actions;
    Ok(row)
}

async fn broker(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Broker, 1, 8).await?;
    rig.submit(0..opts.jobs as u64, HANDLER_MS).await?;
    let node = &rig.nodes[0];
    rig.wait_sink(opts.jobs / 4, STALL).await;
    let at_stop = rig.at_sink();
    node.ctl(&["stop_app"]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself
    node.ctl(&["start_app"]).await?;
    rig.wait_sink(opts.jobs / 2, STALL).await;
    let at_kill = rig.at_sink();
    node.kill_hard().await?;
    node.boot().await?;
    rig.drain(opts.jobs, STALL).await;
    let mut row = rig.finish(Scenario::Broker, &all(opts.jobs), 0).await?;
    row.actions = format!(
        "stop_app for 3 s at {at_stop} of {n} through; SIGKILL of the node and restart at {at_kill}",
        n = opts.jobs
    );
    Ok(row)
}

async fn cluster(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Cluster, 3, 8).await?;
    rig.submit(0..opts.jobs as u64, HANDLER_MS).await?;
    // The node that holds most step queue leaders.
    let listing = rig.nodes[0].ctl(&["list_queues", "-q", "--no-table-headers", "name", "leader"]).await?;
    let mut leaders: BTreeMap<String, usize> = BTreeMap::new();
    for line in listing.lines().filter(|l| l.contains(".step.")) {
        if let Some(leader) = line.split_whitespace().nth(1) {
            *leaders.entry(leader.to_owned()).or_default() += 1;
        }
    }
    let leader = leaders.iter().max_by_key(|(_, n)| **n).map(|(name, _)| name.clone()).unwrap_or_default();
    let victim = rig
        .nodes
        .iter()
        .find(|n| n.name == leader)
        .ok_or_else(|| ChaosError(format!("no node of ours leads the step queues ({listing})")))?;
    rig.wait_sink(opts.jobs / 4, STALL).await;
    let at_stop = rig.at_sink();
    victim.ctl(&["stop_app"]).await?;
    rig.wait_sink(opts.jobs * 3 / 5, STALL).await;
    let at_start = rig.at_sink();
    victim.ctl(&["start_app"]).await?;
    rig.drain(opts.jobs, STALL).await;
    let mut row = rig.finish(Scenario::Cluster, &all(opts.jobs), 0).await?;
    row.actions = format!(
        "stop_app of the leaders' node {leader} at {at_stop} of {n} through, start_app at {at_start}",
        n = opts.jobs
    );
    Ok(row)
}

/// The hostile burst: each message with what it is and whether it is a valid job that must
/// still reach the sink.
fn hostile_messages(opts: &Options, first_seq: u64) -> Vec<(Vec<u8>, BasicProperties, Option<u64>)> {
    let step = STEPS[0];
    let valid = |seq: u64| {
        let mut slip: Vec<Hop> = STEPS.iter().map(|s| Hop::new(*s)).collect();
        slip.push(Hop::new("sink"));
        Envelope {
            v: envelope::ENVELOPE_VERSION,
            job_id: Uuid::now_v7(),
            message_id: Uuid::now_v7(),
            causation_id: None,
            pipeline: "chaos".into(),
            slip,
            schema: <Probe as warren::Payload>::SCHEMA.into(),
            payload: Probe { seq, hops: 0 },
        }
    };
    let props_of = |env: &Envelope<Probe>| {
        envelope::properties(
            &envelope::EnvelopeMeta { job_id: env.job_id, message_id: env.message_id, step, schema: &env.schema },
            1,
        )
    };
    let with = |props: BasicProperties, name: &str, value: AMQPValue| {
        let mut t = props.headers().clone().unwrap_or_default();
        t.insert(name.into(), value);
        props.with_headers(t)
    };
    let mut out = Vec::new();
    for (seq, i) in (first_seq..).zip(0..opts.hostile) {
        let env = valid(seq);
        let body = env.encode().unwrap_or_default();
        let props = props_of(&env);
        let kind = i % 12;
        let msg: (Vec<u8>, BasicProperties, bool) = match kind {
            0 => ((0..200).map(|_| fastrand::u8(..)).collect(), BasicProperties::default(), false),
            1 => (b"{\"json\": true}".to_vec(), props, false),
            2 => {
                // Wrong types: the job id as a number, the slip as a string.
                let v = rmpv::Value::Map(vec![
                    ("v".into(), 1.into()),
                    ("job_id".into(), 42.into()),
                    ("message_id".into(), true.into()),
                    ("pipeline".into(), 7.into()),
                    ("slip".into(), "s1".into()),
                    ("schema".into(), rmpv::Value::Nil),
                    ("payload".into(), rmpv::Value::Nil),
                ]);
                let mut b = Vec::new();
                let _ = rmpv::encode::write_value(&mut b, &v);
                (b, props, false)
            }
            3 => (body, with(props, envelope::headers::DELIVERY_COUNT, AMQPValue::LongLongInt(1000)), true),
            4 => (body, with(props, envelope::headers::ATTEMPT, AMQPValue::LongLongInt(1 << 40)), true),
            5 => (body, with(props, envelope::headers::ATTEMPT, AMQPValue::LongString("x".into())), true),
            6 if i < 24 || opts.huge_body <= 1024 * 1024 => {
                (vec![0xc1; opts.huge_body], BasicProperties::default(), false)
            }
            6 => (vec![0xc1; 1024], BasicProperties::default(), false),
            7 => (body, BasicProperties::default(), true),
            8 => {
                let mut e = valid(seq);
                e.v = 99;
                (e.encode().unwrap_or_default(), props, false)
            }
            9 => {
                let mut e = valid(seq);
                e.slip.remove(0);
                (e.encode().unwrap_or_default(), props, false)
            }
            10 => {
                let mut e = valid(seq);
                e.schema = "someone.Else/1".into();
                (e.encode().unwrap_or_default(), props, false)
            }
            _ => (body, with(props, "x-death", AMQPValue::LongString("forged".into())), true),
        };
        let (b, p, ok) = msg;
        out.push((b, p, ok.then_some(seq)));
    }
    out
}

async fn hostile(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Hostile, 1, 8).await?;
    let healthy = opts.jobs.min(2_000);
    let burst = hostile_messages(opts, healthy as u64);
    let mut expected = all(healthy);
    let mut refused = 0;
    let broker = Broker::connect(&rig.config, "chaos-hostile").await.map_err(|e| ChaosError(e.to_string()))?;
    let publisher = broker.publisher().await.map_err(|e| ChaosError(e.to_string()))?;
    rig.submit(0..(healthy / 2) as u64, 2).await?;
    for (body, props, valid) in &burst {
        publisher
            .publish(&rig.names.steps_exchange(), STEPS[0], body, props.clone())
            .await
            .map_err(|e| ChaosError(format!("publish a hostile message: {e}")))?;
        match valid {
            Some(seq) => {
                expected.insert(*seq);
            }
            None => refused += 1,
        }
    }
    drop(publisher);
    broker.close().await;
    rig.submit((healthy / 2) as u64..healthy as u64, 2).await?;
    rig.drain(expected.len(), STALL).await;
    let mut row = rig.finish(Scenario::Hostile, &expected, refused).await?;
    row.actions = format!(
        "{} hostile messages ({} must be refused, {} valid with forged headers or no properties) among {healthy} jobs",
        burst.len(),
        refused,
        burst.len() - refused
    );
    Ok(row)
}

/// How long a retry waits in the `retries` scenario: long enough for a tenth of the jobs to pile
/// up in the delay queues before the node goes.
const RETRY_DELAY_MS: u64 = 15_000;

/// (f) Retries survive the loss of a node: a tenth of the jobs (at most 1,000) fail once at s2
/// and wait out a 15 s delay in the (quorum) delay queues; the node leading those queues is
/// stopped for good while they wait, and every one of them must come back from another node.
async fn retries(opts: &Options) -> Result<Row, ChaosError> {
    let env = vec![
        ("WARREN_RETRY_BASE_MS".to_owned(), RETRY_DELAY_MS.to_string()),
        ("WARREN_RETRY_MAX_MS".to_owned(), RETRY_DELAY_MS.to_string()),
    ];
    let rig = Rig::start_with(opts, Scenario::Retries, Setup { nodes: 3, concurrency: 8, env, proxied: false }).await?;
    let waiting = (opts.jobs / 10).clamp(1, 1_000);
    let half = (waiting + (opts.jobs - waiting) / 2) as u64;
    let flaky =
        |step: &str| Behaviour { fail_times: u32::from(step == "s2"), sleep_ms: HANDLER_MS, ..Default::default() };
    rig.submit_as(0..waiting as u64, flaky).await?;
    rig.submit(waiting as u64..half, HANDLER_MS).await?;
    // Wait until (nearly) all of them sit in delay queues.
    let end = Instant::now() + STALL;
    let queues = loop {
        let queues = rig.delay_queues().await.unwrap_or_default();
        let held: usize = queues.iter().map(|(_, n, _)| n).sum();
        if held >= waiting * 9 / 10 || Instant::now() > end {
            break queues;
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // polling interval
    };
    let held: usize = queues.iter().map(|(_, n, _)| n).sum();
    let mut leaders: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n, leader) in &queues {
        *leaders.entry(leader.clone()).or_default() += n;
    }
    let leader = leaders.iter().max_by_key(|(_, n)| **n).map(|(name, _)| name.clone()).unwrap_or_default();
    let on_leader = leaders.get(&leader).copied().unwrap_or(0);
    let victim = rig.nodes.iter().position(|n| n.name == leader).ok_or_else(|| {
        ChaosError(format!("no node of ours leads the delay queues ({held} of {waiting} retries seen in {queues:?})"))
    })?;
    // Stopped for good: its disk and its replicas are gone as far as the cluster can tell.
    rig.nodes[victim].ctl(&["stop_app"]).await?;
    let at_stop = rig.at_sink();
    rig.submit(half..opts.jobs as u64, HANDLER_MS).await?;
    // The delay queues answer again from the other nodes, with new leaders.
    let end = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let qs = rig.delay_queues().await.unwrap_or_default();
        let moved = qs.iter().filter(|(_, _, l)| !l.is_empty() && *l != leader).count();
        if (moved > 0 && moved == qs.len()) || Instant::now() > end {
            break moved;
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // polling interval
    };
    // A retry whose dead-lettering back to s2 was refused while s2's leader moved is tried again
    // by the broker after its confirm timeout (2 minutes by default): wait that out.
    rig.drain(opts.jobs, STALL + Duration::from_secs(150)).await;
    let mut row = rig.finish(Scenario::Retries, &all(opts.jobs), 0).await?;
    row.actions = format!(
        "{held} of {waiting} retries waiting {RETRY_DELAY_MS} ms in {} delay queues, {on_leader} of them on {leader}, \
         stopped for good at {at_stop} of {n} through; {moved} delay queues led from another node after",
        queues.len(),
        n = opts.jobs
    );
    Ok(row)
}

/// How long the `partition` scenario holds its cut: past two 5 s heartbeats on both ends.
const PARTITION: Duration = Duration::from_secs(20);

/// (g) A partition without a close: one worker of each step behind a proxy that stops
/// forwarding (no FIN, no RST), held past the heartbeat timeout while jobs flow, then healed.
async fn partition(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start_with(
        opts,
        Scenario::Partition,
        Setup { nodes: 1, concurrency: 8, proxied: true, ..Setup::default() },
    )
    .await?;
    // Half the jobs before the cut, the rest once healed: jobs flow through the cut and through
    // the workers that were cut off, after.
    let half = (opts.jobs / 2) as u64;
    rig.submit(0..half, HANDLER_MS).await?;
    rig.wait_sink(opts.jobs / 8, STALL).await;
    let at_cut = rig.at_sink();
    let before = rig.consumers().await.unwrap_or_default();
    let proxy = rig.proxy.as_ref().ok_or_else(|| ChaosError("the partition rig has no proxy".into()))?;
    proxy.cut();
    let cut_at = Instant::now();
    // The broker drops the cut-off workers' consumers once their heartbeats stop; the other
    // workers keep going meanwhile.
    let mut dropped_after = None;
    while cut_at.elapsed() < PARTITION {
        if dropped_after.is_none() && rig.consumers().await.is_some_and(|c| c.iter().all(|&k| k < 2)) {
            dropped_after = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // the partition's length, polled
    }
    let during = rig.at_sink() - at_cut;
    proxy.heal();
    rig.wait_consumers(2, STALL).await?;
    let back_after = cut_at.elapsed();
    rig.submit(half..opts.jobs as u64, HANDLER_MS).await?;
    rig.drain(opts.jobs, STALL).await;
    let mut row = rig.finish(Scenario::Partition, &all(opts.jobs), 0).await?;
    row.actions = format!(
        "3 of 6 workers cut off without a close at {at_cut} of {n} through ({before:?} consumers), held {} s: broker \
         dropped them after {}, {during} jobs through meanwhile; healed, all consuming again {:.0} s after the cut; \
         the other half submitted then",
        PARTITION.as_secs(),
        dropped_after.map(|d| format!("{:.0} s", d.as_secs_f64())).unwrap_or_else(|| "never".into()),
        back_after.as_secs_f64(),
        n = opts.jobs
    );
    Ok(row)
}

/// How long each alarm of the `alarm` scenario lasts.
const ALARM: Duration = Duration::from_secs(8);

/// (h) Resource alarms while jobs flow: the memory alarm raised (every publisher blocked, a
/// client submitting into it told why), held, cleared; then the disk alarm the same way.
async fn alarm(opts: &Options) -> Result<Row, ChaosError> {
    let rig = Rig::start(opts, Scenario::Alarm, 1, 8).await?;
    let node = &rig.nodes[0];
    let third = (opts.jobs / 3) as u64;
    rig.submit(0..third, HANDLER_MS).await?;
    rig.wait_sink(opts.jobs / 6, STALL).await;
    let mut said = Vec::new();
    let raises: [(&str, &[&str], &[&str]); 2] = [
        (
            "memory",
            &["set_vm_memory_high_watermark", "absolute", "1MB"],
            &["set_vm_memory_high_watermark", "absolute", "3GB"],
        ),
        ("disk", &["set_disk_free_limit", "100000GB"], &["set_disk_free_limit", "1GB"]),
    ];
    let mut next = third;
    for (i, (what, raise, clear)) in raises.into_iter().enumerate() {
        let at = rig.at_sink();
        node.ctl(raise).await?;
        // A client submitting into the alarm: its publishes wait, and its connection says why.
        let client = Client::connect(&rig.config).await.map_err(|e| ChaosError(e.to_string()))?;
        let blocked = client.broker().blocked_changes();
        let upto = if i == 0 { 2 * third } else { opts.jobs as u64 };
        let batch: Vec<JobSpec<Probe>> = (next..upto)
            .map(|seq| {
                let slip = STEPS
                    .iter()
                    .map(|s| Hop::with_params(*s, &Behaviour { sleep_ms: HANDLER_MS, ..Default::default() }))
                    .chain([Ok(Hop::new("sink"))])
                    .collect::<Result<Vec<Hop>, _>>()
                    .unwrap_or_default();
                JobSpec::new("chaos", slip, Probe { seq, hops: 0 })
            })
            .collect();
        next = upto;
        let submitting = tokio::spawn(async move {
            for chunk in batch.chunks(1000) {
                client.submit_many(chunk).await.map_err(|e| ChaosError(format!("submit: {e}")))?;
            }
            client.broker().close().await;
            Ok::<(), ChaosError>(())
        });
        let reason = wait_blocked(blocked, Duration::from_secs(30)).await;
        tokio::time::sleep(ALARM).await; // the alarm itself
        let during = rig.at_sink() - at;
        node.ctl(clear).await?;
        submitting.await.map_err(|e| ChaosError(format!("the submitting task: {e}")))??;
        said.push(format!(
            "{what} alarm {} s: client told {:?}, {during} jobs through meanwhile",
            ALARM.as_secs(),
            reason.unwrap_or_else(|| "nothing".into())
        ));
    }
    rig.drain(opts.jobs, STALL).await;
    let mut row = rig.finish(Scenario::Alarm, &all(opts.jobs), 0).await?;
    row.actions = format!("{}; each cleared, every job through after", said.join("; "));
    Ok(row)
}

/// The reason a connection is blocked for, once it is, within `deadline`.
async fn wait_blocked(mut blocked: tokio::sync::watch::Receiver<Option<String>>, deadline: Duration) -> Option<String> {
    tokio::time::timeout(deadline, async {
        loop {
            if let Some(r) = blocked.borrow_and_update().clone() {
                return Some(r);
            }
            if blocked.changed().await.is_err() {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten()
}
