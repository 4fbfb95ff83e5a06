//! The worker runtime: consume a step's queue, run the handler, hand the output on with a
//! confirm before acking the input, retry through delay queues, dead-letter what cannot succeed,
//! stop gracefully and reconnect on its own.
//!
//! ```no_run
//! use warren::{Config, Context, StepError, Worker};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Num { n: u64 }
//! # impl warren::Payload for Num { const SCHEMA: &'static str = "example.Num/1"; }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(None, &[])?;
//! Worker::builder("double", &config)
//!     .build()
//!     .run(
//!         |_ctx: Context, input: Num| async move { Ok::<_, StepError>(Num { n: input.n * 2 }) },
//!         warren::shutdown_signal(),
//!     )
//!     .await?;
//! # Ok(()) }
//! ```

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    Channel,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    Broker, BrokerError, Config, EventSink, Names,
    artifacts::ArtifactStore,
    broker::{Publisher, hostname},
    envelope::Payload,
    topology::{Declarer, StepTopology, TopologyError},
};

mod acks;
mod context;
pub mod decide;
mod dedup;
mod delays;
mod handle;

pub use handle::{RecordedInput, inputs_key, inputs_prefix};
mod metrics;
mod readers;
pub use metrics::describe as describe_metrics;
mod retry;

pub use context::{Context, FanOut, Handler, StepOutput};
pub use retry::RetryPolicy;

use dedup::Dedup;
use metrics::Metrics;

/// A worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker holds a conflicting definition of this step's topology; retrying cannot help.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The broker refused the worker's credentials several times in a row.
    #[error(transparent)]
    AccessRefused(BrokerError),
}

/// Liveness and readiness of a worker, for health endpoints and supervisors.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Why the broker blocks the worker's publishes, while it does.
    blocked: Arc<Mutex<Option<String>>>,
    /// `warren_worker_ready{step}`: 1 while ready.
    gauge: Option<::metrics::Gauge>,
    /// `warren_broker_blocked{step}`: 1 while the broker blocks the worker's publishes.
    blocked_gauge: Option<::metrics::Gauge>,
}

impl Health {
    /// Whether the worker holds a live consumer on its queue and can hand work on: not while
    /// the broker blocks its publishes (a memory or disk alarm).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.blocked().is_none()
    }
    /// Why the worker is not ready, in a line; `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        if let Some(reason) = self.blocked() {
            return Some(format!(
                "the broker blocks publishes ({reason}): finished messages wait to be handed on until its alarm clears"
            ));
        }
        (!self.ready.load(Ordering::Relaxed)).then(|| "no consumer on the step queue".to_owned())
    }
    /// While the broker blocks the worker's publishes, the reason it gave.
    pub fn blocked(&self) -> Option<String> {
        self.blocked.lock().ok().and_then(|b| b.clone())
    }
    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.publish_ready();
    }
    fn set_blocked(&self, reason: Option<String>) {
        if let Some(g) = &self.blocked_gauge {
            g.set(if reason.is_some() { 1.0 } else { 0.0 });
        }
        if let Ok(mut b) = self.blocked.lock() {
            *b = reason;
        }
        self.publish_ready();
    }
    fn publish_ready(&self) {
        if let Some(g) = &self.gauge {
            g.set(if self.is_ready() { 1.0 } else { 0.0 });
        }
    }
}

/// Builds a [`Worker`]; every setting starts from the [`Config`].
#[derive(Debug, Clone)]
pub struct WorkerBuilder {
    step: String,
    config: Config,
    retry: RetryPolicy,
    max_duration: Option<Duration>,
    artifacts: Option<ArtifactStore>,
    version: String,
    descriptor: Option<crate::registry::StepDescriptor>,
    envelope_reads: Vec<u16>,
}

impl WorkerBuilder {
    /// Restricts the envelope versions the worker reads (default: every version this runtime
    /// reads, [`ENVELOPE_READS`](crate::envelope::ENVELOPE_READS)): it dead-letters other
    /// versions as poison, says in the registry that it reads only these, and writes the plain
    /// envelope. For compatibility tests that need a worker of an earlier protocol beside
    /// current ones (a mixed fleet in a rolling upgrade).
    pub fn reads_envelopes(mut self, versions: &[u16]) -> Self {
        self.envelope_reads = versions.to_vec();
        self
    }

    /// What the worker announces on `{ns}.registry` (its parameter schema, file parameters,
    /// about line). The step name, version, input and output schema ids, concurrency and maximum
    /// duration are filled in from the worker. Without one, the step takes any parameters.
    pub fn descriptor(mut self, descriptor: crate::registry::StepDescriptor) -> Self {
        self.descriptor = Some(descriptor);
        self
    }
    /// Messages handled at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }
    /// Messages the broker sends ahead of acks. Unset, it follows the concurrency, so the
    /// worker holds only messages it runs (see `docs/PROTOCOL.md`, crash counting).
    pub fn prefetch(mut self, n: u16) -> Self {
        self.config.prefetch = Some(n.max(1));
        self
    }
    /// The retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// The longest one message may take. A handler still running then fails with a retryable
    /// error, and the queue's consumer timeout is set beyond it so the broker does not close the
    /// channel under a long step.
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }
    /// The artifact store handlers reach through [`Context::store`], also used for step caching.
    pub fn artifacts(mut self, store: ArtifactStore) -> Self {
        self.artifacts = Some(store);
        self
    }
    /// The step's version: part of every cache key, so a new version never reuses old outputs.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
    /// Builds the worker.
    pub fn build(self) -> Worker {
        let host = hostname();
        let worker_id = format!("{}@{host}#{}", self.step, std::process::id());
        let names = Names::new(&self.config.namespace);
        let data_root = self.config.data_root.as_deref().map(Arc::from);
        let ready_gauge = ::metrics::gauge!("warren_worker_ready", "step" => self.step.clone());
        let blocked_gauge = ::metrics::gauge!("warren_broker_blocked", "step" => self.step.clone());
        blocked_gauge.set(0.0);
        Worker {
            data_root,
            registry: self.config.registry_scope().into(),
            dead_exchange: names.dead_exchange(),
            names,
            handler_limit: match (self.config.max_duration, self.max_duration) {
                (Some(c), Some(ceiling)) => Some(c.min(ceiling)),
                (c, d) => c.or(d),
            },
            topology: StepTopology {
                step: self.step.clone(),
                delivery_limit: self.config.delivery_limit,
                max_duration: self.max_duration,
            },
            step_name: self.step.as_str().into(),
            step: self.step,
            worker_id: worker_id.into(),
            retry: self.retry,
            health: Health {
                ready: Arc::default(),
                blocked: Arc::default(),
                gauge: Some(ready_gauge),
                blocked_gauge: Some(blocked_gauge),
            },
            config: self.config,
            descriptor: self.descriptor,
            artifacts: self.artifacts,
            version: self.version,
            envelope_reads: self.envelope_reads,
        }
    }
}

/// A worker for one step. See the [module documentation](self).
#[derive(Debug)]
pub struct Worker {
    step: String,
    step_name: Arc<str>,
    /// Made once: dead-lettering uses it on every dead letter.
    dead_exchange: String,
    config: Config,
    names: Names,
    topology: StepTopology,
    /// How long one handler run may take: the configured `max_duration_ms`, at most the step's own.
    handler_limit: Option<Duration>,
    retry: RetryPolicy,
    worker_id: Arc<str>,
    health: Health,
    artifacts: Option<ArtifactStore>,
    version: String,
    descriptor: Option<crate::registry::StepDescriptor>,
    data_root: Option<Arc<std::path::Path>>,
    /// The model registry's namespace, for handlers (see [`Context::registry_scope`]).
    registry: Arc<str>,
    /// The envelope versions it reads (see [`WorkerBuilder::reads_envelopes`]).
    envelope_reads: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("consumer lost: {0}")]
    Consumer(String),
}

impl Worker {
    /// A builder for a worker of `step`.
    pub fn builder(step: impl Into<String>, config: &Config) -> WorkerBuilder {
        WorkerBuilder {
            step: step.into(),
            retry: RetryPolicy {
                max_attempts: config.max_attempts,
                base: config.retry_base,
                max: config.retry_max,
                jitter: 0.2,
            },
            config: config.clone(),
            max_duration: None,
            artifacts: None,
            version: "0".to_owned(),
            descriptor: None,
            envelope_reads: crate::envelope::ENVELOPE_READS.to_vec(),
        }
    }

    /// The worker's health handle.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// This worker's id (`{step}@{host}#{pid}`), as in its events and dead-letter headers.
    pub fn id(&self) -> &str {
        &self.worker_id
    }

    /// What every session and message of this worker shares, its descriptor completed.
    fn into_shared<I, O, H>(mut self, handler: H) -> Arc<Shared<H>>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let d = self
            .descriptor
            .take()
            .unwrap_or_else(|| crate::registry::StepDescriptor::new(self.step.clone(), self.version.clone()));
        let d = d.completed::<I, O>(&self.step, &self.version, self.config.concurrency, self.topology.max_duration);
        let dynamic = |typed: &str, described: &str| (typed == "*" && described != "*").then(|| described.to_owned());
        let schemas = DynamicSchemas {
            input: dynamic(I::SCHEMA, &d.input),
            output: dynamic(<O::Payload as Payload>::SCHEMA, &d.output),
        };
        self.descriptor = Some(d);
        Arc::new(Shared {
            dedup: Mutex::new(Dedup::new(self.config.dedup_window)),
            semaphore: Arc::new(Semaphore::new(self.config.concurrency)),
            metrics: Metrics::new(&self.step),
            consumed: AtomicBool::new(false),
            cancelled: crate::control::Cancellations::default(),
            schemas,
            delays: delays::DelayQueues::default(),
            deprecations: crate::compat::Deprecations::default(),
            readers: readers::Readers::new(&self.step, self.envelope_pin()),
            worker: self,
            handler,
        })
    }

    /// Consumes the step's queue until `shutdown` completes, then stops taking messages, lets
    /// those in flight finish (up to the configured grace period) and closes. Reconnects with
    /// backoff whenever the connection or channel is lost.
    pub async fn run<I, O, H>(self, handler: H, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let shared = self.into_shared::<I, O, H>(handler);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures = 0u32;
        let mut refusals = 0u32;
        loop {
            let result = shared.session(shutdown.as_mut()).await;
            if shared.consumed.swap(false, Ordering::Relaxed) {
                // The broker was fine until now: the next reconnect starts from the base delay.
                failures = 0;
            }
            match result {
                Ok(()) => return Ok(()),
                Err(SessionError::Topology(e)) if e.is_conflict() => {
                    shared.worker.health.set_ready(false);
                    return Err(WorkerError::Topology(e));
                }
                Err(SessionError::Broker(e)) if e.is_access_refused() => {
                    // Not the broker being away: a wrong user or password. A few tries cover a
                    // broker still loading its users; then stop, so the supervisor shows it.
                    shared.worker.health.set_ready(false);
                    refusals += 1;
                    tracing::error!(step = %shared.worker.step, error = %e, attempt = refusals, of = ACCESS_TRIES, "credentials refused");
                    if refusals >= ACCESS_TRIES {
                        return Err(WorkerError::AccessRefused(e));
                    }
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(()),
                        _ = tokio::time::sleep(backoff(refusals, 2_000, 10_000)) => {}
                    }
                }
                Err(e) => {
                    shared.worker.health.set_ready(false);
                    refusals = 0;
                    failures += 1;
                    let backoff = reconnect_delay(failures);
                    tracing::warn!(step = %shared.worker.step, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "lost the broker; reconnecting");
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}

/// Consecutive credential refusals before a worker gives up.
const ACCESS_TRIES: u32 = 3;

fn reconnect_delay(failures: u32) -> Duration {
    backoff(failures, 100, 10_000)
}

/// Exponential backoff from `base_ms` doubling per failure up to `max_ms`, with "equal jitter"
/// (half fixed, half random) so that many workers losing one broker do not return in step.
pub(crate) fn backoff(failures: u32, base_ms: u64, max_ms: u64) -> Duration {
    let d = base_ms.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(max_ms);
    Duration::from_millis(d / 2 + fastrand::u64(0..=d / 2))
}

struct Shared<H> {
    worker: Worker,
    handler: H,
    dedup: Mutex<Dedup>,
    semaphore: Arc<Semaphore>,
    metrics: Metrics,
    /// Set by a session that got as far as consuming: the reconnect backoff starts again.
    consumed: AtomicBool,
    /// Jobs cancelled in this namespace, followed from `{ns}.control`.
    cancelled: crate::control::Cancellations,
    /// The schema ids a handler of any payload (`rmpv::Value`) takes and sends, from its
    /// descriptor: checked on every input, carried on every output.
    schemas: DynamicSchemas,
    /// The delay queues this worker publishes retries to, kept across reconnects.
    delays: delays::DelayQueues,
    /// Old forms this worker accepted (counted, their senders logged).
    deprecations: crate::compat::Deprecations,
    /// Which envelope version each next step's readers read, from the registry.
    readers: readers::Readers,
}

/// What the descriptor says a handler of any payload takes and sends (`None`: the handler's
/// own types say it, or anything goes).
#[derive(Debug, Default)]
struct DynamicSchemas {
    input: Option<String>,
    output: Option<String>,
}

#[derive(Clone)]
struct Session {
    broker: Broker,
    /// The consumer's channel: while it is open the input can still be acked, so a failed
    /// publish is worth trying again.
    consumer: Channel,
    publisher: Arc<PublisherSlot>,
    events: EventSink,
    /// Acks on `consumer`, batched with `multiple` where that is safe.
    acks: acks::AckBatcher,
    /// The delay queues the worker uses (shared by its sessions).
    delays: delays::DelayQueues,
}

/// Aborts a task when dropped (a session's helper tasks end with the session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The session's confirm-mode publishing channel, replaced by a fresh one when the broker nacks
/// on it or it breaks (seen during quorum leader elections: one channel nacking for 24 s).
struct PublisherSlot {
    broker: Broker,
    current: tokio::sync::Mutex<Publisher>,
}

impl PublisherSlot {
    async fn get(&self) -> Publisher {
        self.current.lock().await.clone()
    }

    /// Replaces `failed` with a new channel, unless another task already did. The old channel
    /// is closed, so confirms still pending on it fail and their publishes go out again.
    async fn replace(&self, failed: &Publisher) {
        let mut current = self.current.lock().await;
        if current.channel().id() != failed.channel().id() {
            return;
        }
        match self.broker.channel().await {
            Ok(ch) => match Publisher::new(ch).await {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut *current, fresh);
                    tokio::spawn(async move {
                        let close = old.channel().close(200, "replaced after a nack".into());
                        let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot open a fresh publishing channel yet"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot open a fresh publishing channel yet"),
        }
    }
}

/// What a session holds open while it consumes: its channel and consumer, the tasks that live
/// as long as it does, and what every message's handling shares.
struct Opened {
    channel: Channel,
    consumer: lapin::Consumer,
    tag: String,
    session: Session,
    /// Follows cancellations; ends with the connection, aborted when the session ends.
    control: AbortOnDrop,
    /// Follows the registry for what the next steps' readers read.
    readers: AbortOnDrop,
    /// Says the worker is alive in the registry.
    announcer: AbortOnDrop,
    /// Follows the broker's resource alarms into readiness.
    alarms: AbortOnDrop,
    /// Renews the delay queues' leases and nudges stuck ones.
    upkeep: AbortOnDrop,
    /// Publishes the batched job events.
    events_task: Option<tokio::task::JoinHandle<()>>,
}

impl<H> Shared<H> {
    /// One connection's life: connect and declare, consume until the stop or a broker failure,
    /// then (on the stop) finish what is in flight and close.
    async fn session<I, O>(
        self: &Arc<Self>,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(), SessionError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let broker = tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            b = Broker::connect(&self.worker.config, &self.worker.step) => b?,
        };
        let mut opened = self.open(&broker).await?;
        self.consume(&mut opened, shutdown).await?;
        self.stop(opened, &broker).await;
        Ok(())
    }

    /// Declares the step's topology, follows cancellations, and starts consuming (prefetch,
    /// publisher, event sink, registry announcements).
    async fn open(self: &Arc<Self>, broker: &Broker) -> Result<Opened, SessionError> {
        let w = &self.worker;
        let mut declarer = Declarer::new(broker, &w.names);
        declarer.base().await?;
        declarer.step(&w.topology).await?;
        let control = AbortOnDrop(self.cancelled.follow(broker, &w.names).await?);
        // Before the descriptor goes out: the follower knows it has read the past when it sees
        // a record written after it began, such as this worker's own.
        let readers = AbortOnDrop(self.readers.follow(broker, &w.names).await?);
        let channel = broker.channel().await?;
        let prefetch = w.config.effective_prefetch();
        if usize::from(prefetch) > w.config.concurrency {
            tracing::info!(step = %w.step, prefetch, concurrency = w.config.concurrency,
                "prefetch above concurrency: messages wait in this worker unstarted, and a hard kill returns \
                 them with a raised delivery count (see docs/PROTOCOL.md, crash counting)");
        }
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await.map_err(BrokerError::amqp("basic.qos"))?;
        let publisher = Publisher::new(broker.channel().await?).await?;
        let (events, events_task) = if w.config.events {
            let (sink, task) = EventSink::start(broker, &w.names, &w.step, w.config.events_version).await?;
            (sink, Some(task))
        } else {
            (EventSink::disabled(), None)
        };
        // The descriptor is in the registry before the queue has this consumer: whoever sees the
        // consumer (`warren demo`, a test, a submit right after `warren up`) finds the step announced.
        let announced = announce_descriptor(broker, &w.names, w.record_base()).await;
        let tag = format!("{}-{}", w.worker_id, &Uuid::now_v7().simple().to_string()[24..]);
        let queue = w.names.step_queue(&w.step);
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::amqp("basic.consume"))?;
        w.health.set_ready(true);
        self.consumed.store(true, Ordering::Relaxed);
        let announcer =
            AbortOnDrop(tokio::spawn(announce_loop(broker.clone(), w.names.clone(), w.record_base(), announced)));
        tracing::info!(step = %w.step, worker = %w.worker_id, connection = %broker.name(),
            concurrency = w.config.concurrency, prefetch, "consuming");
        let session = Session {
            broker: broker.clone(),
            consumer: channel.clone(),
            publisher: Arc::new(PublisherSlot { broker: broker.clone(), current: tokio::sync::Mutex::new(publisher) }),
            events,
            acks: acks::AckBatcher::start(),
            delays: self.delays.clone(),
        };
        let alarms =
            AbortOnDrop(tokio::spawn(follow_alarms(broker.blocked_changes(), w.health.clone(), w.step.clone())));
        self.delays.reconnected();
        let upkeep = AbortOnDrop(tokio::spawn(self.delays.clone().upkeep(broker.clone(), w.names.clone())));
        Ok(Opened { channel, consumer, tag, session, control, readers, announcer, alarms, upkeep, events_task })
    }

    /// Takes deliveries, one permit each, until the stop (`Ok`) or the broker takes the consumer
    /// away (`Err`: the caller reconnects).
    async fn consume<I, O>(
        self: &Arc<Self>,
        opened: &mut Opened,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(), SessionError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(()),
                p = self.semaphore.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Ok(()),
                d = opened.consumer.next() => d,
            };
            match next {
                Some(Ok(delivery)) => self.spawn_handle(&opened.session, delivery, permit),
                Some(Err(e)) => {
                    w.health.set_ready(false);
                    describe_channel_loss(&e, &w.topology);
                    return Err(SessionError::Consumer(e.to_string()));
                }
                None => {
                    w.health.set_ready(false);
                    return Err(SessionError::Consumer("the broker cancelled the consumer".into()));
                }
            }
        }
    }

    /// The graceful stop: take nothing more, finish what is in flight and what the broker already
    /// sent (returning it unstarted would raise its delivery count, see PROTOCOL.md), flush the
    /// acks, say goodbye in the registry, then close.
    async fn stop<I, O>(self: &Arc<Self>, opened: Opened, broker: &Broker)
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let Opened { channel, mut consumer, tag, session, control, readers, announcer, alarms, upkeep, events_task } =
            opened;
        drop(alarms);
        drop(upkeep);
        w.health.set_ready(false);
        tracing::info!(step = %w.step, "stopping: finishing messages in flight");
        let deadline = Instant::now() + w.config.shutdown_grace;
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        if tokio::time::timeout(Duration::from_secs(5), cancel).await.is_ok_and(|r| r.is_ok()) {
            // After cancel-ok the broker sends nothing more; the stream yields what it holds, then ends.
            let drain = async {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let Ok(permit) = self.semaphore.clone().acquire_owned().await else { break };
                    self.spawn_handle(&session, delivery, permit);
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), drain).await;
        }
        let all = w.config.concurrency as u32;
        match tokio::time::timeout_at(deadline.into(), self.semaphore.acquire_many(all)).await {
            Ok(_) => tracing::info!(step = %w.step, "all messages in flight finished"),
            Err(_) => tracing::warn!(step = %w.step, still_running = all as usize - self.semaphore.available_permits(),
                "shutdown grace period over; unfinished messages stay unacked for the broker to redeliver"),
        }
        // The acks of what finished must reach the broker before the channel closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), session.acks.flush()).await;
        drop(session);
        drop(control);
        drop(readers);
        drop(announcer);
        let mut stopped = w.record_base();
        stopped.kind = crate::registry::RecordKind::Stopped;
        stopped.descriptor = None;
        stopped.at_ms = crate::envelope::now_ms();
        let bye = crate::registry::announce(broker, &w.names, &stopped);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), bye).await {
            tracing::debug!(error = %e, "could not record the stop in the registry");
        }
        if let Some(task) = events_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), channel.close(200, "worker stopping".into())).await;
        broker.close().await;
    }
}

impl<H> Shared<H> {
    fn spawn_handle<I, O>(
        self: &Arc<Self>,
        session: &Session,
        delivery: lapin::message::Delivery,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let this = Arc::clone(self);
        let session = session.clone();
        session.acks.started(delivery.delivery_tag);
        let f = async move {
            this.metrics.in_flight.increment(1.0);
            this.handle(&session, delivery).await;
            this.metrics.in_flight.decrement(1.0);
            drop(permit);
        };
        tokio::spawn(f);
    }
}

impl Worker {
    /// The envelope version this worker writes whatever its readers read: the configured one, or
    /// the plain one for a worker that does not read the compact one (an earlier protocol's).
    fn envelope_pin(&self) -> Option<u16> {
        if self.envelope_reads.contains(&crate::envelope::ENVELOPE_COMPACT) {
            self.config.envelope_version
        } else {
            Some(crate::envelope::ENVELOPE_VERSION)
        }
    }

    /// This worker's registry record, with its descriptor.
    fn record_base(&self) -> crate::registry::Record {
        crate::registry::Record {
            v: 1,
            kind: crate::registry::RecordKind::Descriptor,
            step: self.step.clone(),
            worker: self.worker_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            health_addr: self.config.health_addr.clone(),
            version: self.version.clone(),
            at_ms: crate::envelope::now_ms(),
            descriptor: self.descriptor.clone(),
            protocol: Some(crate::compat::Versions {
                envelope_reads: self.envelope_reads.clone(),
                ..crate::compat::Versions::current(self.config.events_version, self.envelope_pin())
            }),
        }
    }
}

/// Announces the worker's descriptor, then says it is alive every [`registry::HEARTBEAT`]
/// and repeats the descriptor every [`registry::DESCRIPTOR_EVERY`], until aborted.
///
/// [`registry::HEARTBEAT`]: crate::registry::HEARTBEAT
/// [`registry::DESCRIPTOR_EVERY`]: crate::registry::DESCRIPTOR_EVERY
async fn announce_loop(
    broker: Broker,
    names: Names,
    base: crate::registry::Record,
    mut last_descriptor: Option<Instant>,
) {
    use crate::registry::{DESCRIPTOR_EVERY, HEARTBEAT, RecordKind, announce};
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if last_descriptor.is_some() {
        // The first tick is immediate: the descriptor was just announced, so wait a heartbeat.
        ticks.tick().await;
    }
    loop {
        ticks.tick().await;
        let mut record = base.clone();
        record.at_ms = crate::envelope::now_ms();
        if last_descriptor.is_some_and(|t| t.elapsed() < DESCRIPTOR_EVERY) {
            record.kind = RecordKind::Alive;
            record.descriptor = None;
        }
        match announce(&broker, &names, &record).await {
            Ok(()) if record.kind == RecordKind::Descriptor => last_descriptor = Some(Instant::now()),
            Ok(()) => {}
            Err(e) => tracing::warn!(step = %base.step, error = %e, "could not announce the worker in the registry"),
        }
    }
}

/// Follows the broker's `connection.blocked` notices into the worker's health: not ready, the
/// `warren_broker_blocked` gauge, and a log line when the alarm starts and when it clears.
async fn follow_alarms(mut blocked: tokio::sync::watch::Receiver<Option<String>>, health: Health, step: String) {
    let mut since: Option<Instant> = None;
    loop {
        let reason = blocked.borrow_and_update().clone();
        match (&reason, since) {
            (Some(r), None) => {
                tracing::warn!(step = %step, reason = %r,
                    "the broker blocks publishes (a resource alarm): finished messages wait to be handed on; not ready until it clears");
                since = Some(Instant::now());
            }
            (None, Some(at)) => {
                tracing::info!(step = %step, blocked_ms = at.elapsed().as_millis() as u64, "the broker takes publishes again");
                since = None;
            }
            _ => {}
        }
        health.set_blocked(reason);
        if blocked.changed().await.is_err() {
            health.set_blocked(None);
            return;
        }
    }
}

/// Announces the worker's descriptor once, before it consumes: `Some(when)` if the broker took it
/// (the loop then starts with a heartbeat), `None` if not (the loop tries again).
async fn announce_descriptor(broker: &Broker, names: &Names, mut record: crate::registry::Record) -> Option<Instant> {
    record.at_ms = crate::envelope::now_ms();
    match crate::registry::announce(broker, names, &record).await {
        Ok(()) => Some(Instant::now()),
        Err(e) => {
            tracing::warn!(step = %record.step, error = %e, "could not announce the worker in the registry");
            None
        }
    }
}

/// Logs why the broker took the channel away, naming the setting to change where there is one.
fn describe_channel_loss(error: &lapin::Error, topology: &StepTopology) {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    // RabbitMQ closes the channel with PRECONDITION_FAILED, "delivery acknowledgement on channel
    // N timed out": the kind is typed, the reason only in the broker's words.
    let consumer_timeout = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
                && amqp.get_message().as_str().contains("acknowledgement")
        }
        _ => false,
    };
    let text = error.to_string();
    if consumer_timeout {
        tracing::error!(step = %topology.step, error = %text,
            "the broker closed the channel because a message was not acked within its consumer timeout; \
             on RabbitMQ 3.12+ the step's max_duration sets x-consumer-timeout on its queue, on older brokers \
             raise `consumer_timeout` in rabbitmq.conf above the step's longest run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_its_base_and_stays_under_its_cap() {
        for _ in 0..200 {
            let first = reconnect_delay(1).as_millis() as u64;
            assert!((50..=100).contains(&first), "the first reconnect waits 50-100 ms, not {first}");
            let late = reconnect_delay(30).as_millis() as u64;
            assert!((5_000..=10_000).contains(&late), "capped at 10 s: {late}");
            let third = backoff(3, 50, 5_000).as_millis() as u64;
            assert!((100..=200).contains(&third), "{third}");
        }
    }
}
