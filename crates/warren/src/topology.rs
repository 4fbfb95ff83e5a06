//! Declares exchanges and queues, idempotently.
//!
//! | what | name | kind |
//! | --- | --- | --- |
//! | step exchange | `{ns}.steps` | direct, key = step |
//! | step queue | `{ns}.step.{step}` | quorum, `x-delivery-limit`, DLX `{ns}.dead` |
//! | dead letters | `{ns}.dead` / `{ns}.dead.{step}` | direct / quorum |
//! | retry delays | `{ns}.retry.q.{step}.{ms}` | quorum, TTL, dead-letters (at least once) to `{ns}.steps` |
//! | job events | `{ns}.events` | topic exchange + stream queue |
//! | control (cancellations) | `{ns}.control` | stream queue, published to by name |
//!
//! Declaring with the same settings twice is a no-op. A queue that exists with other arguments
//! is a [`TopologyError::Conflict`] naming the queue and the argument.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::{Broker, BrokerError, Names};

/// The delivery limit of dead-letter queues: high enough never to drop a dead letter however
/// often it is listed (an explicit limit, since RabbitMQ 4 defaults to 20).
pub const DEAD_LETTER_DELIVERY_LIMIT: u64 = 1_000_000;

/// A topology declaration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The object exists with different settings. Delete it or align the configuration.
    #[error("{object} already exists with a different {argument}: {detail}")]
    Conflict {
        /// `queue 'ns.step.a'` or `exchange 'ns.steps'`.
        object: String,
        /// The argument that differs, e.g. `x-delivery-limit`.
        argument: String,
        /// The broker's message.
        detail: String,
    },
    /// Any other broker failure.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl TopologyError {
    /// Whether retrying cannot help (the broker holds conflicting definitions).
    pub fn is_conflict(&self) -> bool {
        matches!(self, TopologyError::Conflict { .. })
    }
}

/// What a step's queue is declared with.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTopology {
    /// The step name.
    pub step: String,
    /// Unacked deliveries (crashes) before the broker dead-letters a message.
    pub delivery_limit: u32,
    /// The longest a handler may run; the queue's consumer timeout follows it.
    pub max_duration: Option<Duration>,
}

impl StepTopology {
    /// The consumer timeout (ms) the queue gets: the maximum duration plus a minute of margin.
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        self.max_duration.map(|d| d.as_millis() as u64 + 60_000)
    }
}

fn int(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(n as i64)
}

fn conflict_or(err: lapin::Error, context: &'static str) -> TopologyError {
    if let lapin::ErrorKind::ProtocolError(amqp) = err.kind() {
        let msg = amqp.get_message().as_str();
        // "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': ..."
        if let Some(rest) = msg.split("inequivalent arg '").nth(1) {
            let argument = rest.split('\'').next().unwrap_or("argument").to_owned();
            let object =
                rest.split(" for ").nth(1).and_then(|s| s.split(" in vhost").next()).unwrap_or("object").to_owned();
            return TopologyError::Conflict { object, argument, detail: msg.to_owned() };
        }
    }
    TopologyError::Broker(BrokerError::Amqp { context, source: err })
}

/// Declares topology on one channel. A failed declaration closes the channel, so each call
/// takes a fresh one when needed.
#[derive(Debug)]
pub struct Declarer<'a> {
    broker: &'a Broker,
    names: &'a Names,
    channel: Option<Channel>,
}

impl<'a> Declarer<'a> {
    /// A declarer for `names` on `broker`.
    pub fn new(broker: &'a Broker, names: &'a Names) -> Self {
        Self { broker, names, channel: None }
    }

    async fn channel(&mut self) -> Result<Channel, TopologyError> {
        match &self.channel {
            Some(c) if c.status().connected() => Ok(c.clone()),
            _ => {
                let c = self.broker.channel().await?;
                self.channel = Some(c.clone());
                Ok(c)
            }
        }
    }

    async fn exchange(&mut self, name: &str, kind: ExchangeKind) -> Result<(), TopologyError> {
        let ch = self.channel().await?;
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| conflict_or(e, "exchange.declare"))
    }

    async fn queue(&mut self, name: &str, args: FieldTable) -> Result<(), TopologyError> {
        let ch = self.channel().await?;
        ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await
            .map(|_| ())
            .map_err(|e| conflict_or(e, "queue.declare"))
    }

    async fn bind(&mut self, queue: &str, exchange: &str, key: &str) -> Result<(), TopologyError> {
        let ch = self.channel().await?;
        ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| conflict_or(e, "queue.bind"))
    }

    /// Makes sure the namespace's base topology exists: checks it passively first, so a reader
    /// whose user may not configure (a submitter following its job) works once a worker or an
    /// operator declared it, and declares it ([`Declarer::base`]) only when something is missing.
    pub async fn ensure_base(&mut self) -> Result<(), TopologyError> {
        let n = self.names;
        let ch = self.broker.channel().await?;
        let passive_exchange = ExchangeDeclareOptions { passive: true, durable: true, ..Default::default() };
        let passive_queue = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        let mut present = true;
        for x in [n.steps_exchange(), n.dead_exchange(), n.events()] {
            if ch
                .exchange_declare(x.as_str().into(), ExchangeKind::Direct, passive_exchange, FieldTable::default())
                .await
                .is_err()
            {
                present = false;
                break;
            }
        }
        if present {
            for q in [n.events(), n.control(), n.registry()] {
                if ch.queue_declare(q.as_str().into(), passive_queue, FieldTable::default()).await.is_err() {
                    present = false;
                    break;
                }
            }
        }
        if ch.status().connected() {
            let _ = ch.close(200, "checked".into()).await;
        }
        if present { Ok(()) } else { self.base().await }
    }

    /// Declares the namespace's exchanges and the events stream.
    pub async fn base(&mut self) -> Result<(), TopologyError> {
        let n = self.names;
        self.exchange(&n.steps_exchange(), ExchangeKind::Direct).await?;
        self.exchange(&n.dead_exchange(), ExchangeKind::Direct).await?;
        self.exchange(&n.events(), ExchangeKind::Topic).await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        args.insert("x-max-age".into(), AMQPValue::LongString("7D".into()));
        args.insert("x-stream-max-segment-size-bytes".into(), int(16 * 1024 * 1024));
        self.queue(&n.events(), args.clone()).await?;
        self.bind(&n.events(), &n.events(), "#").await?;
        // Control records: few, read by every worker from the first on, kept a week.
        self.queue(&n.control(), args.clone()).await?;
        // The step registry: descriptors and heartbeats, read back over its last 13 hours.
        self.queue(&n.registry(), args).await
    }

    /// Declares a step: its queue (quorum, delivery limit, dead-letter exchange, consumer timeout),
    /// its binding, and its dead-letter queue. Call [`Declarer::base`] first.
    pub async fn step(&mut self, step: &StepTopology) -> Result<(), TopologyError> {
        let n = self.names;
        let mut dead = FieldTable::default();
        dead.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        // Browsing dead letters returns them to the queue, and quorum queues count that as a
        // delivery; RabbitMQ 4 would drop them after 20. Dead letters must stay until replayed.
        dead.insert("x-delivery-limit".into(), int(DEAD_LETTER_DELIVERY_LIMIT));
        self.queue(&n.dead_queue(&step.step), dead).await?;
        self.bind(&n.dead_queue(&step.step), &n.dead_exchange(), &step.step).await?;

        self.queue(&n.step_queue(&step.step), step_queue_args(n, step)).await?;
        self.bind(&n.step_queue(&step.step), &n.steps_exchange(), &step.step).await
    }

    /// Declares the delay queue for retries of `step` after `delay_ms`: messages expire into
    /// the step exchange with the step's routing key. One queue per delay, so a short delay never
    /// waits behind a longer one. The queue is a quorum queue, replicated like the step queues,
    /// so a retry waiting out its delay survives the loss of a node, and it dead-letters at least
    /// once (a message leaves it only once the step queue confirmed it). It deletes itself
    /// [`RETRY_QUEUE_IDLE`] after its delay once nobody declares it: a publisher declares it again
    /// at least every [`RETRY_QUEUE_RENEW`] while it uses it (publishing alone does not count as
    /// use), so no message is ever in it when it goes.
    pub async fn retry_queue(&mut self, step: &str, delay_ms: u64) -> Result<String, TopologyError> {
        let n = self.names;
        let name = n.retry_queue(step, delay_ms);
        self.queue(&name, retry_queue_args(n, step, delay_ms)).await?;
        Ok(name)
    }

    /// Deletes a namespace's queues for `steps` and its exchanges (tests, `warren topology delete`).
    /// Retry queues delete themselves when unused.
    pub async fn delete(&mut self, steps: &[&str]) -> Result<(), TopologyError> {
        let n = self.names;
        let ch = self.channel().await?;
        let mut queues: Vec<String> = vec![n.events(), n.control(), n.registry()];
        for s in steps {
            queues.push(n.step_queue(s));
            queues.push(n.dead_queue(s));
        }
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| conflict_or(e, "queue.delete"))?;
        }
        for x in [n.steps_exchange(), n.dead_exchange(), n.events()] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| conflict_or(e, "exchange.delete"))?;
        }
        Ok(())
    }
}

/// How long a delay queue outlives its delay once nobody declares it. Deleting a queue deletes
/// what is in it, and a message whose delay is over can still be in it: dead-lettering at least
/// once hands it to the step queue only when that queue confirms, and after a refusal (its
/// leader moving to another node, say) RabbitMQ tries again only after
/// `dead_letter_worker_publisher_confirm_timeout` (2 minutes by default). Fifteen minutes leaves
/// that room several times over; the queues stay few (delays are rounded to two digits).
pub const RETRY_QUEUE_IDLE: Duration = Duration::from_secs(15 * 60);
/// How often a publisher that uses a delay queue declares it again, renewing its lease: well
/// under [`RETRY_QUEUE_IDLE`], so a queue in use never expires with messages in it.
pub const RETRY_QUEUE_RENEW: Duration = Duration::from_secs(30);

/// The arguments of a delay queue: quorum (replicated), the delay as message TTL, dead-lettering
/// at least once back to the step (which RabbitMQ allows only with `reject-publish` overflow).
pub fn retry_queue_args(names: &Names, step: &str, delay_ms: u64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-message-ttl".into(), int(delay_ms));
    args.insert("x-expires".into(), int(delay_ms + RETRY_QUEUE_IDLE.as_millis() as u64));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.steps_exchange().into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(step.into()));
    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    args
}

/// The arguments of a step queue.
pub fn step_queue_args(names: &Names, step: &StepTopology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-delivery-limit".into(), int(u64::from(step.delivery_limit)));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.dead_exchange().into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(step.step.as_str().into()));
    if let Some(ms) = step.consumer_timeout_ms() {
        // Honoured by RabbitMQ 3.12 and newer; older brokers ignore it and use `consumer_timeout`
        // from rabbitmq.conf (see the worker's report when a channel is closed for it).
        args.insert("x-consumer-timeout".into(), int(ms));
    }
    args
}
