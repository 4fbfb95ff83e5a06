//! The test harness: a namespace per test, worker processes, a sink, events and dead letters.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio::{
    process::{Child, Command},
    sync::{Mutex, mpsc},
};
use uuid::Uuid;
use warren::{Broker, Client, Config, Declarer, Envelope, Hop, JobEvent, JobSpec, Names, StepTopology};
use warren_e2e::Probe;

pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_warren-test-step");

/// The `rabbitmqctl` command: `$WARREN_TEST_RABBITMQCTL` (e.g. `docker compose exec -T rabbitmq
/// rabbitmqctl` for the compose broker), else `rabbitmqctl` on this machine.
pub fn rabbitmqctl() -> Command {
    let line = std::env::var("WARREN_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".to_owned());
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap_or("rabbitmqctl"));
    cmd.args(words);
    cmd
}

pub fn amqp_url() -> String {
    std::env::var("WARREN_AMQP_URL").unwrap_or_else(|_| warren::config::DEFAULT_AMQP_URL.to_owned())
}

/// Waits for `check` to return `Some`, polling until `deadline`; panics with `what` otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, deadline, Duration::from_millis(20), Duration::from_millis(250), check).await
}

/// [`wait_for`] at a fixed interval, for checks that are themselves slow (a container's health
/// check, a command run in a container).
pub async fn wait_every<T, F, Fut>(what: &str, deadline: Duration, every: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, deadline, every, every, check).await
}

/// Polls `check` from a pause of `first`, doubling up to `most`, until `deadline`.
async fn poll<T, F, Fut>(what: &str, deadline: Duration, first: Duration, most: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    let mut pause = first;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(pause).await; // polling interval, not synchronisation
        pause = (pause * 2).min(most);
    }
}

/// One test's namespace on the broker, with its own connection.
pub struct TestNs {
    pub ns: String,
    pub names: Names,
    pub config: Config,
    pub broker: Broker,
    pub client: Client,
    steps: Vec<String>,
    logs: PathBuf,
}

impl TestNs {
    /// A fresh namespace `t-{label}-{random}`; fails with instructions if no broker answers.
    pub async fn new(label: &str) -> Self {
        let ns = format!("t-{label}-{}", &Uuid::now_v7().simple().to_string()[20..]);
        let config = Config::load_from(
            None,
            [("WARREN_AMQP_URL".to_owned(), amqp_url()), ("WARREN_NAMESPACE".to_owned(), ns.clone())],
            &[],
        )
        .expect("test config");
        let end = Instant::now() + Duration::from_secs(20);
        let broker = loop {
            match Broker::connect(&config, "test").await {
                Ok(b) => break b,
                Err(e) if Instant::now() > end => panic!(
                    "RabbitMQ is not reachable ({e}). Start it with `rabbitmq-server -detached` \
                     (or `docker compose up -d rabbitmq`), or set WARREN_AMQP_URL."
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await, // retry interval of a deadline-bound connect
            }
        };
        let client = Client::connect(&config).await.expect("client connects");
        let names = Names::new(&ns);
        Declarer::new(&broker, &names).base().await.expect("declare base topology");
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs").join(&ns);
        std::fs::create_dir_all(&logs).expect("log dir");
        Self { ns, names, config, broker, client, steps: Vec::new(), logs }
    }

    /// Declares a step the test itself consumes (a sink) or inspects.
    pub async fn declare_step(&mut self, step: &str) {
        Declarer::new(&self.broker, &self.names)
            .step(&StepTopology { step: step.into(), delivery_limit: self.config.delivery_limit, max_duration: None })
            .await
            .expect("declare step");
        self.remember(step);
    }

    pub fn remember(&mut self, step: &str) {
        if !self.steps.iter().any(|s| s == step) {
            self.steps.push(step.to_owned());
        }
    }

    /// A worker process for `step`, with extra environment.
    pub fn spawn_worker(&mut self, step: &str, env: &[(&str, &str)]) -> Child {
        self.remember(step);
        spawn_worker_process(&self.ns, step, env, &self.logs)
    }

    /// Where a worker's log goes.
    pub fn log_dir(&self) -> PathBuf {
        self.logs.clone()
    }

    /// Waits until `step`'s queue has at least `n` consumers.
    pub async fn wait_consumers(&self, step: &str, n: u32) {
        let queue = self.names.step_queue(step);
        wait_for(&format!("{n} consumer(s) on {queue}"), Duration::from_secs(30), || async {
            let (_, consumers) = self.queue_counts(&queue).await?;
            (consumers >= n).then_some(())
        })
        .await
    }

    /// (ready messages, consumers) of a queue, or None if it does not exist.
    pub async fn queue_counts(&self, queue: &str) -> Option<(u32, u32)> {
        let ch = self.broker.channel().await.ok()?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .ok()?;
        let _ = ch.close(200, "".into()).await;
        Some((q.message_count(), q.consumer_count()))
    }

    /// Submits probes `seqs` along `slip`.
    pub async fn submit(&self, slip: &[Hop], seqs: impl IntoIterator<Item = u64>) -> Vec<Uuid> {
        let jobs: Vec<JobSpec<Probe>> =
            seqs.into_iter().map(|seq| JobSpec::new("test", slip.to_vec(), Probe { seq, hops: 0 })).collect();
        self.client.submit_many(&jobs).await.expect("submit")
    }

    /// Publishes raw bytes to a step, as a foreign or broken client would.
    pub async fn publish_raw(&self, step: &str, body: &[u8], props: BasicProperties) {
        let publisher = self.broker.publisher().await.expect("publisher");
        publisher.publish(&self.names.steps_exchange(), step, body, props).await.expect("raw publish");
    }

    /// Consumes a sink step's queue into a [`Sink`].
    pub async fn sink(&self, step: &str) -> Sink {
        let ch = self.broker.channel().await.expect("sink channel");
        ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = ch
            .basic_consume(
                self.names.step_queue(step).as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("sink consume");
        let state = Arc::new(Mutex::new(SinkState::default()));
        let s = state.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let env = Envelope::<Probe>::decode(&d.data).expect("sink receives valid envelopes");
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let mut st = s.lock().await;
                if st.seen.insert(env.message_id, env.payload.clone()).is_some() {
                    st.duplicates += 1;
                } else {
                    st.probes.push(env.payload);
                }
            }
        });
        Sink { state }
    }

    /// All events of this namespace seen so far and from now on.
    pub async fn events(&self) -> Events {
        let rx = warren::events::subscribe(&self.broker, &self.names).await.expect("subscribe to events");
        Events { rx, seen: Vec::new() }
    }

    /// Waits until `step`'s dead-letter queue holds at least `n` letters.
    pub async fn wait_dead_letters(&self, step: &str, n: u32, deadline: Duration) {
        let queue = self.names.dead_queue(step);
        wait_for(&format!("{n} dead letter(s) of {step}"), deadline, || async {
            self.queue_counts(&queue).await.filter(|(count, _)| *count >= n)
        })
        .await;
    }

    /// Takes every dead letter of `step` out of its queue.
    pub async fn take_dead_letters(&self, step: &str) -> Vec<(BasicProperties, Vec<u8>)> {
        let ch = self.broker.channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(self.names.dead_queue(step).as_str().into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            let _ = m.delivery.acker.ack(BasicAckOptions::default()).await;
            out.push((m.delivery.properties.clone(), m.delivery.data.clone()));
        }
        out
    }

    /// Closes every broker connection whose client-provided name belongs to `step`'s workers
    /// in this namespace (never another test's connections).
    pub async fn close_worker_connections(&self, step: &str) -> usize {
        let marker = format!("{}/{step}@", self.ns);
        let out = rabbitmqctl()
            .args(["list_connections", "-s", "pid", "client_properties"])
            .output()
            .await
            .expect("rabbitmqctl runs (as root, or set WARREN_TEST_RABBITMQCTL)");
        let text = String::from_utf8_lossy(&out.stdout);
        let pids: Vec<String> = text
            .lines()
            .filter(|l| l.contains(&marker))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        for pid in &pids {
            let status = rabbitmqctl()
                .args(["close_connection", pid, "closed by an e2e test"])
                .output()
                .await
                .expect("rabbitmqctl close_connection");
            assert!(status.status.success(), "close_connection {pid}: {}", String::from_utf8_lossy(&status.stderr));
        }
        pids.len()
    }

    /// Deletes what this test declared. Bounded, so a broker hiccup at the end cannot hang the run.
    pub async fn cleanup(self) {
        let steps: Vec<&str> = self.steps.iter().map(String::as_str).collect();
        let work = async {
            Declarer::new(&self.broker, &self.names).delete(&steps).await.expect("cleanup");
            self.client.broker().close().await;
            self.broker.close().await;
        };
        if tokio::time::timeout(Duration::from_secs(30), work).await.is_err() {
            eprintln!("cleanup of namespace {} did not finish within 30 s", self.ns);
        }
    }
}

pub fn spawn_worker_process(ns: &str, step: &str, env: &[(&str, &str)], logs: &std::path::Path) -> Child {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let log = std::fs::File::create(logs.join(format!("{step}-{n}.log"))).expect("log file");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--step")
        .arg(step)
        .env("WARREN_AMQP_URL", amqp_url())
        .env("WARREN_NAMESPACE", ns)
        .env("WARREN_RETRY_BASE_MS", "100")
        .env("WARREN_SHUTDOWN_GRACE_MS", "10000")
        .env("RUST_LOG", "info,lapin=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the warren-test-step binary")
}

/// Sends `signal` (TERM, KILL) to a child process.
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("child still running");
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await.expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Restarts a worker whenever it exits, until stopped, as a process supervisor would.
pub struct Supervisor {
    stop: tokio::sync::watch::Sender<bool>,
    pub starts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    pub fn start(ns: &TestNs, step: &str, env: &[(&str, &str)]) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let starts = Arc::new(AtomicU32::new(0));
        let (ns_name, step, logs) = (ns.ns.clone(), step.to_owned(), ns.log_dir());
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let n = starts.clone();
        let task = tokio::spawn(async move {
            loop {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut child = spawn_worker_process(&ns_name, &step, &env, &logs);
                n.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = child.wait() => {}
                    _ = stopped.changed() => {
                        let _ = signal(&child, "TERM").await;
                        let _ = child.wait().await;
                        return;
                    }
                }
            }
        });
        Self { stop, starts, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Default)]
pub struct SinkState {
    pub seen: HashMap<Uuid, Probe>,
    pub probes: Vec<Probe>,
    pub duplicates: u32,
}

/// What reached a sink step.
pub struct Sink {
    pub state: Arc<Mutex<SinkState>>,
}

impl Sink {
    /// Waits until `n` distinct messages arrived.
    pub async fn wait_count(&self, n: usize, deadline: Duration) -> Vec<Probe> {
        wait_for(&format!("{n} messages at the sink"), deadline, || async {
            let st = self.state.lock().await;
            (st.probes.len() >= n).then(|| st.probes.clone())
        })
        .await
    }
    pub async fn duplicates(&self) -> u32 {
        self.state.lock().await.duplicates
    }
}

/// Job events read from the namespace's stream.
pub struct Events {
    rx: mpsc::UnboundedReceiver<JobEvent>,
    pub seen: Vec<JobEvent>,
}

impl Events {
    /// Waits until an event matching `pred` has been seen, and returns it.
    pub async fn wait(&mut self, what: &str, deadline: Duration, pred: impl Fn(&JobEvent) -> bool) -> JobEvent {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let end = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out after {deadline:?} waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }
}

impl Events {
    /// Waits until `n` events matching `pred` have been seen.
    pub async fn wait_count(&mut self, what: &str, deadline: Duration, n: usize, pred: impl Fn(&JobEvent) -> bool) {
        let end = tokio::time::Instant::now() + deadline;
        while self.seen.iter().filter(|e| pred(e)).count() < n {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(e)) => self.seen.push(e),
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out after {deadline:?} waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }
}

/// A string header of a message.
pub fn header(props: &BasicProperties, name: &str) -> Option<String> {
    warren::envelope::header_str(props, name).map(str::to_owned)
}

pub fn hop(step: &str, behaviour: &warren_e2e::Behaviour) -> Hop {
    Hop::with_params(step, behaviour).expect("params encode")
}

pub fn envelope_for(step: &str, seq: u64) -> Envelope<Probe> {
    let job_id = Uuid::now_v7();
    Envelope {
        v: warren::envelope::ENVELOPE_VERSION,
        job_id,
        message_id: Uuid::now_v7(),
        causation_id: None,
        pipeline: "test".into(),
        slip: vec![Hop::new(step), Hop::new("sink")],
        schema: <Probe as warren::Payload>::SCHEMA.into(),
        payload: Probe { seq, hops: 0 },
    }
}

pub fn props_for_any<P: warren::Payload>(env: &Envelope<P>) -> BasicProperties {
    warren::envelope::properties(
        &warren::envelope::EnvelopeMeta {
            job_id: env.job_id,
            message_id: env.message_id,
            step: env.step(),
            schema: &env.schema,
        },
        1,
    )
}

pub fn props_for(env: &Envelope<Probe>) -> BasicProperties {
    props_for_any(env)
}

/// Text without terminal colour codes (worker logs carry them).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl TestNs {
    /// Announces the descriptors of ML steps, as their workers would at start, without running
    /// them: each binary's `--describe` output goes to the namespace's registry.
    pub async fn register_steps(&self, steps: &[&str]) {
        for step in steps {
            let out = std::process::Command::new(crate::ml::worker_bin(step))
                .arg("--describe")
                .output()
                .expect("run the worker binary with --describe");
            assert!(out.status.success(), "{step} --describe: {}", String::from_utf8_lossy(&out.stderr));
            let descriptor: warren::registry::StepDescriptor =
                serde_json::from_slice(&out.stdout).expect("a descriptor");
            let record = warren::registry::Record {
                v: 1,
                kind: warren::registry::RecordKind::Descriptor,
                step: (*step).to_owned(),
                worker: format!("{step}@test#0"),
                host: "test".into(),
                pid: std::process::id(),
                health_addr: None,
                version: descriptor.version.clone(),
                at_ms: warren::envelope::now_ms(),
                descriptor: Some(descriptor),
                protocol: None,
            };
            warren::registry::announce(&self.broker, &self.names, &record).await.expect("announce");
        }
    }
}

/// A registry entry of model `name` scoring `accuracy`, pointing at no real model: for tests of
/// the registry's reading and moving, not of predictions.
pub fn model_entry(name: &str, accuracy: f64) -> warren_schemas::models::Entry {
    warren_schemas::models::Entry {
        name: name.into(),
        version: 0,
        model: warren_schemas::ArtifactRef { uri: "file:///nowhere".into(), hash: "sha256:00".into(), bytes: 1 },
        metrics: [("accuracy".to_owned(), accuracy)].into(),
        metric: "accuracy".into(),
        candidate: serde_json::json!({ "algorithm": "logistic" }),
        signature: None,
        dataset_hash: "sha256:00".into(),
        seed: 1,
        job_id: "none".into(),
        pipeline: name.into(),
        code_version: "test".into(),
        registered_by: "the tests".into(),
        registered_at_ms: warren::envelope::now_ms(),
        format: warren_schemas::models::ModelFormat::Warren,
        onnx: None,
    }
}
