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
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
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

mod context;
mod dedup;
mod handle;
mod metrics;
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
        let names = Names::new(&self.config.namespace);
        Worker {
            steps_exchange: names.steps_exchange(),
            dead_exchange: names.dead_exchange(),
            names,
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
    /// Exchange names, made once: the hand-off uses them on every message.
    steps_exchange: String,
    dead_exchange: String,
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
        let cancel = consume_channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
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
        let _ =
            tokio::time::timeout(Duration::from_secs(5), consume_channel.close(200, "worker stopping".into())).await;
        broker.close().await;
        Ok(SessionEnd::Stopped)
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
