//! The worker runtime: consume a step's queue, run the handler, hand the output on with a
//! confirm before acking the input, retry through delay queues, dead-letter what cannot succeed,
//! stop gracefully and reconnect on its own.
//!
//! ```no_run
//! use warren::{Config, Context, StepError, Worker};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Num { n: u64 }
//! # impl warren::Payload for Num { const SCHEMA: &'static str = "example.Num/1"; }
//! # async fn example() -> Result<(), warren::WorkerError> {
//! let config = Config::load(None, &[]).expect("config");
//! Worker::builder("double", &config)
//!     .build()
//!     .run(
//!         |_ctx: Context, input: Num| async move { Ok::<_, StepError>(Num { n: input.n * 2 }) },
//!         warren::shutdown_signal(),
//!     )
//!     .await
//! # }
//! ```

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, future::join_all};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    Broker, BrokerError, Config, DeadKind, EventKind, EventSink, JobEvent, Names, StepError,
    artifacts::{ArtifactStore, content_hash},
    broker::{Publisher, hostname},
    envelope::{self, Envelope, EnvelopeHead, EnvelopeMeta, Payload, headers},
    topology::{Declarer, StepTopology, TopologyError},
};

/// A worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker holds a conflicting definition of this step's topology; retrying cannot help.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// When and how often a retryable failure is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// Upper bound of the delay (before jitter).
    pub max: Duration,
    /// Random extra delay, as a fraction of the delay (0.2 adds up to 20%). Never negative, so a
    /// delay is never shorter than the backoff.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): exponential, capped, with jitter, and
    /// rounded up to two significant digits so retries share a bounded set of delay queues.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max).as_millis() as u64;
        let jittered = capped + (capped as f64 * self.jitter * fastrand::f64()) as u64;
        Duration::from_millis(round_up_2_digits(jittered.max(1)))
    }
}

fn round_up_2_digits(ms: u64) -> u64 {
    if ms < 100 {
        return ms;
    }
    let unit = 10u64.pow(ms.ilog10() - 1);
    ms.div_ceil(unit) * unit
}

/// Liveness and readiness of a worker, for health endpoints and supervisors.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Whether the worker holds a live consumer on its queue.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// What a handler gets besides its input.
#[derive(Debug, Clone)]
pub struct Context {
    /// The job.
    pub job_id: Uuid,
    /// The message being handled.
    pub message_id: Uuid,
    /// The pipeline the job runs.
    pub pipeline: Arc<str>,
    /// This step.
    pub step: Arc<str>,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Earlier deliveries of this message that were never acked (crashes, timeouts).
    pub delivery_count: u32,
    /// This worker's id.
    pub worker: Arc<str>,
    /// The remaining hops after this step.
    pub next: Arc<[envelope::Hop]>,
    params: rmpv::Value,
    events: EventSink,
    artifacts: Option<ArtifactStore>,
}

impl Context {
    /// The worker's artifact store; a permanent error if the worker was built without one.
    pub fn store(&self) -> Result<&ArtifactStore, StepError> {
        self.artifacts.as_ref().ok_or_else(|| StepError::permanent(format!("step {} has no artifact store", self.step)))
    }

    /// A deterministic artifact key for this job and step: `{pipeline}/{job}/{step}/{name}`. A
    /// redelivered message writes the same key again.
    pub fn artifact_key(&self, name: &str) -> String {
        format!("{}/{}/{}/{name}", self.pipeline, self.job_id, self.step)
    }

    /// This step's parameters from the routing slip, decoded as `T`. A parameter of the wrong
    /// form is a permanent error naming it.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        let value = match &self.params {
            rmpv::Value::Nil => rmpv::Value::Map(vec![]),
            v => v.clone(),
        };
        envelope::from_msgpack_value(&value)
            .map_err(|e| StepError::permanent(format!("bad parameters for step {}: {e}", self.step)))
    }

    /// This step's parameters as they are on the wire.
    pub fn raw_params(&self) -> &rmpv::Value {
        &self.params
    }

    /// Publishes a `report` event for this job (metrics, a refusal, a cache hit).
    pub fn report(&self, detail: rmpv::Value) {
        self.events.emit(JobEvent {
            kind: EventKind::Report,
            detail: Some(detail),
            ..self.event_base(EventKind::Report)
        });
    }

    fn event_base(&self, kind: EventKind) -> JobEvent {
        JobEvent {
            kind,
            job_id: self.job_id,
            message_id: self.message_id,
            pipeline: self.pipeline.clone(),
            step: self.step.clone(),
            worker: self.worker.clone(),
            at_ms: envelope::now_ms(),
            attempt: self.attempt,
            delivery_count: self.delivery_count,
            duration_ms: None,
            delay_ms: None,
            error: None,
            error_kind: None,
            outputs: 0,
            last_step: false,
            detail: None,
        }
    }
}

/// What a handler returns on success: one payload, or a [`FanOut`] of any number.
pub trait StepOutput: Send + 'static {
    /// The payload type sent to the next step.
    type Payload: Payload;
    /// The payloads to publish, in order.
    fn into_payloads(self) -> Vec<Self::Payload>;
}

impl<P: Payload> StepOutput for P {
    type Payload = P;
    fn into_payloads(self) -> Vec<P> {
        vec![self]
    }
}

/// Any number of outputs (none included): each becomes its own message to the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct FanOut<P>(pub Vec<P>);

impl<P: Payload> StepOutput for FanOut<P> {
    type Payload = P;
    fn into_payloads(self) -> Vec<P> {
        self.0
    }
}

/// A step's logic: an async function from context and input to output or [`StepError`].
pub trait Handler<I, O>: Send + Sync + 'static {
    /// Handles one message.
    fn call(&self, ctx: Context, input: I) -> impl Future<Output = Result<O, StepError>> + Send;
}

impl<F, Fut, I, O> Handler<I, O> for F
where
    F: Fn(Context, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, StepError>> + Send,
{
    fn call(&self, ctx: Context, input: I) -> impl Future<Output = Result<O, StepError>> + Send {
        self(ctx, input)
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
}

impl WorkerBuilder {
    /// Messages handled at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }
    /// Messages the broker sends ahead of acks.
    pub fn prefetch(mut self, n: u16) -> Self {
        self.config.prefetch = n.max(1);
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
        Worker {
            names: Names::new(&self.config.namespace),
            topology: StepTopology {
                step: self.step.clone(),
                delivery_limit: self.config.delivery_limit,
                max_duration: self.max_duration,
            },
            step_name: self.step.as_str().into(),
            step: self.step,
            worker_id: worker_id.into(),
            retry: self.retry,
            health: Health::default(),
            config: self.config,
            artifacts: self.artifacts,
            version: self.version,
        }
    }
}

/// A worker for one step. See the [module documentation](self).
#[derive(Debug)]
pub struct Worker {
    step: String,
    step_name: Arc<str>,
    config: Config,
    names: Names,
    topology: StepTopology,
    retry: RetryPolicy,
    worker_id: Arc<str>,
    health: Health,
    artifacts: Option<ArtifactStore>,
    version: String,
}

enum SessionEnd {
    Stopped,
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

    /// Consumes the step's queue until `shutdown` completes, then stops taking messages, lets
    /// those in flight finish (up to the configured grace period) and closes. Reconnects with
    /// backoff whenever the connection or channel is lost.
    pub async fn run<I, O, H>(self, handler: H, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let shared = Arc::new(Shared {
            dedup: Mutex::new(Dedup::new(self.config.dedup_window)),
            semaphore: Arc::new(Semaphore::new(self.config.concurrency)),
            metrics: Metrics::new(&self.step),
            worker: self,
            handler,
        });
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            match shared.session(shutdown.as_mut()).await {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Err(SessionError::Topology(e)) if e.is_conflict() => {
                    shared.worker.health.set_ready(false);
                    return Err(WorkerError::Topology(e));
                }
                Err(e) => {
                    shared.worker.health.set_ready(false);
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

fn reconnect_delay(failures: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << failures.min(8)).min(10_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

struct Shared<H> {
    worker: Worker,
    handler: H,
    dedup: Mutex<Dedup>,
    semaphore: Arc<Semaphore>,
    metrics: Metrics,
}

/// The worker's metric handles, made once: recording is an atomic add per message (a no-op when
/// no recorder is installed).
struct Metrics {
    succeeded: metrics::Counter,
    retried: metrics::Counter,
    duplicate: metrics::Counter,
    dead: metrics::Counter,
    handler_seconds: metrics::Histogram,
    in_flight: metrics::Gauge,
    step: String,
}

impl Metrics {
    fn new(step: &str) -> Self {
        let s = step.to_owned();
        let outcome = |o: &'static str| metrics::counter!("warren_messages_total", "step" => s.clone(), "outcome" => o);
        Self {
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            duplicate: outcome("duplicate"),
            dead: outcome("dead"),
            handler_seconds: metrics::histogram!("warren_handler_seconds", "step" => s.clone()),
            in_flight: metrics::gauge!("warren_in_flight", "step" => s.clone()),
            step: s,
        }
    }
    fn dead_letter(&self, kind: DeadKind) {
        self.dead.increment(1);
        metrics::counter!("warren_dead_letters_total", "step" => self.step.clone(), "kind" => kind.as_str())
            .increment(1);
    }
}

#[derive(Clone)]
struct Session {
    broker: Broker,
    publisher: Publisher,
    events: EventSink,
}

impl<H> Shared<H> {
    async fn session<I, O>(
        self: &Arc<Self>,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<SessionEnd, SessionError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let broker = tokio::select! {
            _ = shutdown.as_mut() => return Ok(SessionEnd::Stopped),
            b = Broker::connect(&w.config, &w.step) => b?,
        };
        let mut declarer = Declarer::new(&broker, &w.names);
        declarer.base().await?;
        declarer.step(&w.topology).await?;

        let consume_channel = broker.channel().await?;
        consume_channel
            .basic_qos(w.config.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(BrokerError::amqp("basic.qos"))?;
        let publisher = Publisher::new(broker.channel().await?).await?;
        let (events, events_task) = if w.config.events {
            let (sink, task) = EventSink::start(&broker, &w.names, &w.step).await?;
            (sink, Some(task))
        } else {
            (EventSink::disabled(), None)
        };
        let tag = format!("{}-{}", w.worker_id, &Uuid::now_v7().simple().to_string()[24..]);
        let mut consumer = consume_channel
            .basic_consume(
                w.names.step_queue(&w.step).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::amqp("basic.consume"))?;
        w.health.set_ready(true);
        tracing::info!(step = %w.step, worker = %w.worker_id, connection = %broker.name(),
            concurrency = w.config.concurrency, prefetch = w.config.prefetch, "consuming");
        let session = Session { broker: broker.clone(), publisher, events };

        loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.as_mut() => break,
                p = self.semaphore.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.as_mut() => break,
                d = consumer.next() => d,
            };
            match next {
                Some(Ok(delivery)) => {
                    let this = Arc::clone(self);
                    let session = session.clone();
                    tokio::spawn(async move {
                        this.metrics.in_flight.increment(1.0);
                        this.handle(&session, delivery).await;
                        this.metrics.in_flight.decrement(1.0);
                        drop(permit);
                    });
                }
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

        // Graceful stop: take nothing more, finish what is in flight, then close.
        w.health.set_ready(false);
        tracing::info!(step = %w.step, "stopping: waiting for messages in flight");
        let _ = consume_channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
        let all = w.config.concurrency as u32;
        match tokio::time::timeout(w.config.shutdown_grace, self.semaphore.acquire_many(all)).await {
            Ok(_) => tracing::info!(step = %w.step, "all messages in flight finished"),
            Err(_) => tracing::warn!(step = %w.step, still_running = all as usize - self.semaphore.available_permits(),
                "shutdown grace period over; unfinished messages stay unacked for the broker to redeliver"),
        }
        drop(session);
        if let Some(task) = events_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = consume_channel.close(200, "worker stopping".into()).await;
        broker.close().await;
        Ok(SessionEnd::Stopped)
    }

    async fn handle<I, O>(&self, session: &Session, delivery: Delivery)
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let props = &delivery.properties;
        let attempt = envelope::header_int(props, headers::ATTEMPT).map_or(1, |a| a.max(1) as u32);
        let delivery_count = envelope::header_int(props, headers::DELIVERY_COUNT).map_or(0, |n| n.max(0) as u32);

        let env = match Envelope::<I>::decode(&delivery.data) {
            Ok(env) => env,
            Err(e) => {
                let head = EnvelopeHead::decode(&delivery.data).ok();
                tracing::warn!(step = %w.step, error = %e, "undecodable message; dead-lettering it");
                self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Poison, &e.to_string(), attempt).await;
                return;
            }
        };
        if env.step() != w.step {
            let head = EnvelopeHead::decode(&delivery.data).ok();
            let reason = format!("message is addressed to step {:?}, not {:?}", env.step(), w.step);
            self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Misrouted, &reason, attempt).await;
            return;
        }
        let is_duplicate = self.dedup.lock().map(|d| d.contains(&env.message_id)).unwrap_or(false);
        if is_duplicate {
            tracing::debug!(step = %w.step, message = %env.message_id, "duplicate of a completed message; dropped");
            self.metrics.duplicate.increment(1);
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return;
        }

        let mut slip = env.slip;
        let hop = slip.remove(0);
        let ctx = Context {
            job_id: env.job_id,
            message_id: env.message_id,
            pipeline: env.pipeline.into(),
            step: w.step_name.clone(),
            attempt,
            delivery_count,
            worker: w.worker_id.clone(),
            next: slip.into(),
            params: hop.params,
            events: session.events.clone(),
            artifacts: w.artifacts.clone(),
        };
        if delivery_count > 0 || delivery.redelivered {
            tracing::warn!(step = %w.step, job = %ctx.job_id, message = %ctx.message_id, delivery_count,
                "redelivered without an ack: a worker crashed or timed out while handling it");
        }
        if delivery_count >= w.topology.delivery_limit {
            let reason = format!(
                "delivered {} times without an ack: it crashes or stalls every worker that takes it",
                delivery_count + 1
            );
            tracing::error!(step = %w.step, job = %ctx.job_id, message = %ctx.message_id, "{reason}");
            let head = EnvelopeHead::decode(&delivery.data).ok();
            self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Crash, &reason, attempt).await;
            return;
        }

        session.events.emit(ctx.event_base(EventKind::Started));
        let started = Instant::now();
        let cache_key = match (&w.artifacts, hop.cache) {
            (Some(_), true) => self.cache_key(&ctx, &env.payload),
            _ => None,
        };
        if let (Some(key), Some(store)) = (&cache_key, &w.artifacts)
            && let Ok(Some(bytes)) = store.get_opt(key).await
            && let Ok(outputs) = rmp_serde::from_slice::<Vec<O::Payload>>(&bytes)
        {
            ctx.report(rmpv::Value::Map(vec![("cache".into(), "hit".into()), ("key".into(), key.as_str().into())]));
            self.hand_off(session, &delivery, &ctx, outputs, started).await;
            return;
        }
        let call = self.handler.call(ctx.clone(), env.payload);
        let result = match w.topology.max_duration {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(StepError::retryable(format!("step ran longer than its maximum duration of {limit:?}")))
            }),
            None => call.await,
        };
        match result {
            Ok(output) => {
                let outputs = output.into_payloads();
                if let (Some(key), Some(store)) = (&cache_key, &w.artifacts) {
                    match rmp_serde::to_vec_named(&outputs) {
                        Ok(bytes) => {
                            if let Err(e) = store.put(key, bytes).await {
                                tracing::warn!(step = %w.step, error = %e, "cannot write the step cache");
                            }
                        }
                        Err(e) => tracing::warn!(step = %w.step, error = %e, "cannot encode outputs for the cache"),
                    }
                }
                self.hand_off(session, &delivery, &ctx, outputs, started).await
            }
            Err(e) if e.is_retryable() && attempt < w.retry.max_attempts => {
                self.retry(session, &delivery, &ctx, &e).await
            }
            Err(e) => {
                let kind = if e.is_retryable() { DeadKind::Exhausted } else { DeadKind::Permanent };
                let reason = match kind {
                    DeadKind::Exhausted => format!("{} (after {attempt} attempts)", e.message()),
                    _ => e.message().to_owned(),
                };
                let head = EnvelopeHead::decode(&delivery.data).ok();
                self.dead_letter(session, &delivery, head.as_ref(), kind, &reason, attempt).await;
            }
        }
    }

    /// `cache/{step}/{sha256 of step, version, params and input}`: the same input with the same
    /// parameters to the same step version finds the earlier outputs.
    fn cache_key<P: Payload>(&self, ctx: &Context, input: &P) -> Option<String> {
        let w = &self.worker;
        let mut material = Vec::new();
        material.extend_from_slice(w.step.as_bytes());
        material.push(0);
        material.extend_from_slice(w.version.as_bytes());
        material.push(0);
        material.extend_from_slice(&rmp_serde::to_vec_named(&ctx.params).ok()?);
        material.extend_from_slice(&rmp_serde::to_vec_named(input).ok()?);
        let hash = content_hash(&material);
        Some(format!("cache/{}/{}.msgpack", w.step, hash.trim_start_matches("sha256:")))
    }

    /// The confirmed hand-off: publish every output, wait for all confirms, then ack the input.
    async fn hand_off<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        ctx: &Context,
        payloads: Vec<P>,
        started: Instant,
    ) {
        let w = &self.worker;
        let outputs = if ctx.next.is_empty() { 0 } else { payloads.len() };
        if ctx.next.is_empty()
            && let Some(reply_to) = delivery.properties.reply_to()
        {
            self.reply(session, delivery, ctx, reply_to.as_str(), payloads.first()).await;
        }
        if let Some(next) = ctx.next.first() {
            let exchange = w.names.steps_exchange();
            let mut sends = Vec::with_capacity(payloads.len());
            for (i, payload) in payloads.into_iter().enumerate() {
                let out = envelope::EnvelopeRef {
                    v: envelope::ENVELOPE_VERSION,
                    job_id: ctx.job_id,
                    message_id: envelope::derive_message_id(ctx.message_id, &w.step, i),
                    causation_id: Some(ctx.message_id),
                    pipeline: &ctx.pipeline,
                    slip: &ctx.next,
                    schema: P::SCHEMA,
                    payload: &payload,
                };
                let body = match out.encode() {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = format!("cannot encode the step's output: {e}");
                        let head = EnvelopeHead::decode(&delivery.data).ok();
                        self.dead_letter(session, delivery, head.as_ref(), DeadKind::Permanent, &reason, ctx.attempt)
                            .await;
                        return;
                    }
                };
                let meta = EnvelopeMeta {
                    job_id: ctx.job_id,
                    message_id: out.message_id,
                    step: &next.step,
                    schema: out.schema,
                };
                let props = envelope::properties(&meta, 1);
                let exchange = &exchange;
                sends.push(async move { session.publisher.publish(exchange, &next.step, &body, props).await });
            }
            let results = join_all(sends).await;
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                if e.is_refused() {
                    let reason = format!("output for step {:?} was refused: {e}", next.step);
                    let head = EnvelopeHead::decode(&delivery.data).ok();
                    self.dead_letter(session, delivery, head.as_ref(), DeadKind::Unroutable, &reason, ctx.attempt)
                        .await;
                } else {
                    // The connection is going: leave the input unacked, the broker redelivers it and
                    // the same output ids are derived again.
                    tracing::warn!(step = %w.step, error = %e, "cannot hand off output; input left for redelivery");
                }
                return;
            }
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return; // the channel went away; the broker redelivers and dedup/idempotence absorb it
        }
        if let Ok(mut d) = self.dedup.lock() {
            d.insert(ctx.message_id);
        }
        self.metrics.succeeded.increment(1);
        self.metrics.handler_seconds.record(started.elapsed().as_secs_f64());
        let mut event = ctx.event_base(EventKind::Succeeded);
        event.duration_ms = Some(started.elapsed().as_millis() as u64);
        event.outputs = outputs as u32;
        event.last_step = ctx.next.is_empty();
        session.events.emit(event);
    }

    /// Answers an RPC request: the output goes to `reply_to` with the request's correlation id.
    /// A caller that has gone away is logged, not an error of the step.
    async fn reply<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        ctx: &Context,
        reply_to: &str,
        payload: Option<&P>,
    ) {
        let Some(payload) = payload else { return };
        let out = envelope::EnvelopeRef {
            v: envelope::ENVELOPE_VERSION,
            job_id: ctx.job_id,
            message_id: envelope::derive_message_id(ctx.message_id, &self.worker.step, 0),
            causation_id: Some(ctx.message_id),
            pipeline: &ctx.pipeline,
            slip: &[],
            schema: P::SCHEMA,
            payload,
        };
        let Ok(body) = out.encode() else { return };
        let meta = EnvelopeMeta { job_id: ctx.job_id, message_id: out.message_id, step: "", schema: P::SCHEMA };
        let mut props = envelope::properties(&meta, 1);
        if let Some(c) = delivery.properties.correlation_id() {
            props = props.with_correlation_id(c.clone());
        }
        if let Err(e) = session.publisher.publish("", reply_to, &body, props).await {
            tracing::warn!(step = %self.worker.step, error = %e, "cannot deliver the RPC reply (caller gone?)");
        }
    }

    async fn retry(&self, session: &Session, delivery: &Delivery, ctx: &Context, error: &StepError) {
        let w = &self.worker;
        let delay = w.retry.delay(ctx.attempt);
        let delay_ms = delay.as_millis() as u64;
        let mut declarer = Declarer::new(&session.broker, &w.names);
        let queue = match declarer.retry_queue(&w.step, delay_ms).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(step = %w.step, error = %e, "cannot declare the retry queue; input left for redelivery");
                return;
            }
        };
        let props = envelope::with_headers(
            &delivery.properties,
            vec![
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(ctx.attempt) + 1)),
                (headers::ERROR, envelope::text(error.message())),
            ],
        );
        if let Err(e) = session.publisher.publish("", &queue, &delivery.data, props).await {
            tracing::warn!(step = %w.step, error = %e, "cannot publish the retry; input left for redelivery");
            return;
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        tracing::info!(step = %w.step, job = %ctx.job_id, attempt = ctx.attempt, delay_ms, error = %error, "retrying later");
        self.metrics.retried.increment(1);
        metrics::counter!("warren_retries_total", "step" => w.step.clone()).increment(1);
        let mut event = ctx.event_base(EventKind::Retrying);
        event.delay_ms = Some(delay_ms);
        event.error = Some(error.message().to_owned());
        session.events.emit(event);
    }

    /// Publishes the original body, byte for byte, to the step's dead-letter queue with headers
    /// saying why, then acks the input. If the publish fails the input stays unacked.
    async fn dead_letter(
        &self,
        session: &Session,
        delivery: &Delivery,
        head: Option<&EnvelopeHead>,
        kind: DeadKind,
        reason: &str,
        attempt: u32,
    ) {
        let w = &self.worker;
        let props = envelope::with_headers(
            &delivery.properties,
            vec![
                (headers::ERROR, envelope::text(reason)),
                (headers::ERROR_KIND, envelope::text(kind.as_str())),
                (headers::STEP, envelope::text(w.step.as_str())),
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                (headers::WORKER, envelope::text(&*w.worker_id)),
                (headers::FAILED_AT, AMQPValue::LongLongInt(envelope::now_ms() as i64)),
            ],
        );
        if let Err(e) = session.publisher.publish(&w.names.dead_exchange(), &w.step, &delivery.data, props).await {
            tracing::error!(step = %w.step, error = %e, "cannot dead-letter a message; left unacked for redelivery");
            return;
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        tracing::warn!(step = %w.step, kind = %kind, error = %reason, "message dead-lettered");
        self.metrics.dead_letter(kind);
        let job_id = head.map(|h| h.job_id).unwrap_or_default();
        let message_id = head.map(|h| h.message_id).unwrap_or_default();
        session.events.emit(JobEvent {
            kind: EventKind::Dead,
            job_id,
            message_id,
            pipeline: head.map(|h| h.pipeline.as_str()).unwrap_or_default().into(),
            step: w.step_name.clone(),
            worker: w.worker_id.clone(),
            at_ms: envelope::now_ms(),
            attempt,
            delivery_count: envelope::header_int(&delivery.properties, headers::DELIVERY_COUNT).unwrap_or(0) as u32,
            duration_ms: None,
            delay_ms: None,
            error: Some(reason.to_owned()),
            error_kind: Some(kind.as_str().to_owned()),
            outputs: 0,
            last_step: false,
            detail: None,
        });
    }
}

/// Logs why the broker took the channel away, naming the setting to change where there is one.
fn describe_channel_loss(error: &lapin::Error, topology: &StepTopology) {
    let text = error.to_string();
    if text.contains("acknowledgement") && text.contains("timed out") {
        tracing::error!(step = %topology.step, error = %text,
            "the broker closed the channel because a message was not acked within its consumer timeout; \
             on RabbitMQ 3.12+ the step's max_duration sets x-consumer-timeout on its queue, on older brokers \
             raise `consumer_timeout` in rabbitmq.conf above the step's longest run");
    }
}

/// Message ids this worker completed recently, to drop redelivered duplicates.
struct Dedup {
    seen: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize) -> Self {
        Self { seen: HashSet::with_capacity(capacity.min(1 << 16)), order: VecDeque::new(), capacity }
    }
    fn contains(&self, id: &Uuid) -> bool {
        self.seen.contains(id)
    }
    fn insert(&mut self, id: Uuid) {
        if self.capacity == 0 || !self.seen.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_never_undercut_the_backoff() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: 0.2,
        };
        for attempt in 1..8 {
            let expected = (200u64 << (attempt - 1)).min(10_000);
            for _ in 0..50 {
                let d = p.delay(attempt).as_millis() as u64;
                assert!(d >= expected && d as f64 <= expected as f64 * 1.2 + expected as f64 * 0.1, "{attempt}: {d}");
            }
        }
    }

    #[test]
    fn delays_round_up_to_two_digits() {
        assert_eq!(round_up_2_digits(57), 57);
        assert_eq!(round_up_2_digits(1234), 1300);
        assert_eq!(round_up_2_digits(1200), 1200);
        assert_eq!(round_up_2_digits(56_789), 57_000);
    }

    #[test]
    fn dedup_forgets_the_oldest() {
        let mut d = Dedup::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            d.insert(*id);
        }
        assert!(!d.contains(&ids[0]) && d.contains(&ids[1]) && d.contains(&ids[2]));
    }
}
