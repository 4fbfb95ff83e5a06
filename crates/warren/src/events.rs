//! Job events: what happened to each message, published to `{ns}.events` and kept by its
//! stream queue, so a job's history can be rebuilt from the broker alone.
//!
//! Events are batched: one AMQP message carries the events of up to 20 ms (or 1,024 events), so
//! under load they cost the broker a small fraction of a publish per step message. Events are
//! observability, not the job's data: they may lag the job by that much, and a worker killed
//! with SIGKILL loses those of its last 20 ms (a graceful stop flushes them).

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{Broker, BrokerError, Names, TopologyError, broker::Publisher, envelope::CONTENT_TYPE};

/// Schema id of an event batch (the AMQP `type` of messages on `{ns}.events`) as written now:
/// version 2 ([`EventBatch::encode`]); readers take versions 1 and 2.
pub const EVENTS_SCHEMA: &str = "warren.events/2";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A worker started handling the message. Left out when the same event batch holds the
    /// message's `succeeded` (see [`JobEvent::started_at_ms`]).
    Started,
    /// The handler succeeded and its outputs were confirmed by the broker.
    Succeeded,
    /// The handler failed with a retryable error; the message waits in a delay queue.
    Retrying,
    /// The message went to the dead-letter queue.
    Dead,
    /// A step reports something about the job (a metric, a refused promotion, a cache hit).
    Report,
    /// The job was cancelled: a worker dropped this message of it (acked, not run).
    Cancelled,
    /// A person or a tool acted on dead letters or jobs (replay, purge, edit, cancel, rerun):
    /// `worker` is the actor, `detail` an [`OperatorAction`].
    Operator,
}

impl EventKind {
    /// The wire name (`started`, `succeeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Retrying => "retrying",
            EventKind::Dead => "dead",
            EventKind::Report => "report",
            EventKind::Cancelled => "cancelled",
            EventKind::Operator => "operator",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One event of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// What happened.
    pub kind: EventKind,
    /// The job (nil when a message could not be decoded far enough to know it).
    pub job_id: Uuid,
    /// The message concerned.
    pub message_id: Uuid,
    /// The pipeline.
    pub pipeline: Arc<str>,
    /// The step.
    pub step: Arc<str>,
    /// The worker (`{step}@{host}#{pid}`).
    pub worker: Arc<str>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// Deliveries of this message that were not acked before (a worker crashed or timed out).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delivery_count: u32,
    /// Handler run time, on `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Retry delay, on `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The error, on `retrying` and `dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure, on `dead` (`permanent`, `exhausted`, `poison`, `crash`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// On `succeeded`: the messages published onward.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outputs: u32,
    /// On `succeeded`: this was the last step of the slip, the job is complete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_step: bool,
    /// Free-form detail from the step (metrics, a registry entry, a reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<rmpv::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The events of one message on `{ns}.events`, as readers see them whatever the version on the
/// wire ([`EventBatch::encode`], [`EventBatch::decode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Format version of the batch as read (1 or 2); [`EventBatch::encode`] writes 2.
    pub v: u16,
    /// The events, in the order they happened in one worker.
    pub events: Vec<JobEvent>,
    /// A reader's end marker (no events): see [`read_to_now`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Uuid>,
}

/// Version 2 on the wire: a worker's events share its step, its id and mostly one pipeline, so
/// those are said once per batch (an event carries them only where it differs); keys are short
/// and times are offsets from the batch's `t`. A third of the bytes of version 1 for the same
/// events — and the events stream is what the broker writes most of after the step messages.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WireBatch {
    v: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mark: Option<Uuid>,
    #[serde(default)]
    p: Arc<str>,
    #[serde(default)]
    s: Arc<str>,
    #[serde(default)]
    w: Arc<str>,
    #[serde(default)]
    t: u64,
    #[serde(default)]
    e: Vec<WireEvent>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    k: EventKind,
    j: Uuid,
    m: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<Arc<str>>,
    #[serde(default)]
    t: u64,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    a: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    dc: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ek: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    o: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    l: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<rmpv::Value>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct VersionOnly {
    v: u16,
}

/// Why an events message could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsDecodeError {
    /// Not a batch of a version this reader knows.
    #[error("unknown events batch version {0} (this reader takes 1 and 2)")]
    UnknownVersion(u16),
    /// Not MessagePack of the batch's shape.
    #[error("malformed events batch: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
}

impl EventBatch {
    /// A batch of `events`.
    pub fn new(events: Vec<JobEvent>) -> Self {
        Self { v: 2, events, mark: None }
    }

    /// Encodes as version 2 (see `WireBatch`).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        let first = self.events.first();
        let common = |f: fn(&JobEvent) -> &Arc<str>| first.map(|e| f(e).clone()).unwrap_or_else(|| "".into());
        let (p, s, w) = (common(|e| &e.pipeline), common(|e| &e.step), common(|e| &e.worker));
        let t = self.events.iter().map(|e| e.at_ms).min().unwrap_or(0);
        let differs = |value: &Arc<str>, common: &Arc<str>| (value != common).then(|| value.clone());
        let e = self
            .events
            .iter()
            .map(|ev| WireEvent {
                k: ev.kind,
                j: ev.job_id,
                m: ev.message_id,
                p: differs(&ev.pipeline, &p),
                s: differs(&ev.step, &s),
                w: differs(&ev.worker, &w),
                t: ev.at_ms - t,
                a: ev.attempt,
                dc: ev.delivery_count,
                d: ev.duration_ms,
                r: ev.delay_ms,
                e: ev.error.clone(),
                ek: ev.error_kind.clone(),
                o: ev.outputs,
                l: ev.last_step,
                x: ev.detail.clone(),
            })
            .collect();
        rmp_serde::to_vec_named(&WireBatch { v: 2, mark: self.mark, p, s, w, t, e })
    }

    /// Decodes a batch of version 1 (named fields, every event whole) or 2.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventsDecodeError> {
        match rmp_serde::from_slice::<VersionOnly>(bytes)?.v {
            1 => Ok(rmp_serde::from_slice::<EventBatch>(bytes)?),
            2 => {
                let b = rmp_serde::from_slice::<WireBatch>(bytes)?;
                let events =
                    b.e.into_iter()
                        .map(|ev| JobEvent {
                            kind: ev.k,
                            job_id: ev.j,
                            message_id: ev.m,
                            pipeline: ev.p.unwrap_or_else(|| b.p.clone()),
                            step: ev.s.unwrap_or_else(|| b.s.clone()),
                            worker: ev.w.unwrap_or_else(|| b.w.clone()),
                            at_ms: b.t.saturating_add(ev.t),
                            attempt: ev.a,
                            delivery_count: ev.dc,
                            duration_ms: ev.d,
                            delay_ms: ev.r,
                            error: ev.e,
                            error_kind: ev.ek,
                            outputs: ev.o,
                            last_step: ev.l,
                            detail: ev.x,
                        })
                        .collect();
                Ok(EventBatch { v: 2, events, mark: b.mark })
            }
            v => Err(EventsDecodeError::UnknownVersion(v)),
        }
    }
}

/// What an operator did, recorded in the events stream for `warren dlq history`: who, why, to
/// what (the filter), and the ids touched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// `replay`, `edit` (a replay that changed the message), `purge`, `cancel`, `rerun`.
    pub action: String,
    /// Who: `user@host`, or what `--actor` said.
    pub actor: String,
    /// Why, as given with `--reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step acted on (empty for job-wide actions).
    #[serde(default)]
    pub step: String,
    /// The job acted on, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Uuid>,
    /// The selection as the command line gave it (`--step train --group 3fa2c1`).
    #[serde(default)]
    pub filter: String,
    /// How many dead letters or messages were touched.
    pub count: usize,
    /// Their ids (dead-letter ids, or message ids).
    #[serde(default)]
    pub ids: Vec<String>,
    /// What was changed (`max_iterations=500`), for edits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

impl OperatorAction {
    /// The action as an `operator` event.
    pub fn to_event(&self) -> JobEvent {
        let detail = crate::envelope::to_msgpack_value(self).ok();
        JobEvent {
            detail,
            ..JobEvent::new(
                EventKind::Operator,
                self.job.unwrap_or_default(),
                Uuid::nil(),
                "".into(),
                self.step.as_str().into(),
                self.actor.as_str().into(),
                1,
            )
        }
    }

    /// Reads the action back from an `operator` event.
    pub fn from_event(event: &JobEvent) -> Option<Self> {
        if event.kind != EventKind::Operator {
            return None;
        }
        crate::envelope::from_msgpack_value(event.detail.as_ref()?).ok()
    }
}

/// Publishes `action` to `{ns}.events` and waits for the broker's confirm, so a tool knows the
/// record is kept before it says it is done.
pub async fn record(broker: &Broker, names: &Names, action: &OperatorAction) -> Result<(), BrokerError> {
    let batch = EventBatch::new(vec![action.to_event()]);
    let body = batch.encode().map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(EVENTS_SCHEMA.into())
        .with_timestamp(crate::envelope::now_ms() / 1000);
    let publisher = broker.publisher().await?;
    publisher.publish(&names.events(), "operator", &body, props).await
}

/// Where a worker sends its events. Cheap to clone; a disabled sink drops them.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    tx: Option<mpsc::UnboundedSender<JobEvent>>,
}

impl EventSink {
    /// A sink that drops every event.
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Queues an event for publishing; never blocks and never fails the caller.
    pub fn emit(&self, event: JobEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Starts the batching publisher on its own channel of `broker`. Drop every clone of the
    /// sink and await the handle to flush what is left.
    pub async fn start(
        broker: &Broker,
        names: &Names,
        routing_key: &str,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), BrokerError> {
        let publisher = Publisher::new(broker.channel().await?).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(batcher(publisher, names.events(), routing_key.to_owned(), rx));
        Ok((Self { tx: Some(tx) }, handle))
    }
}

async fn batcher(
    publisher: Publisher,
    exchange: String,
    routing_key: String,
    mut rx: mpsc::UnboundedReceiver<JobEvent>,
) {
    const MAX_BATCH: usize = 1024;
    // How long the first event of a batch may wait for company: one event message per linger
    // period per worker at most, so under load events cost the broker little.
    const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
    let mut events = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut events, MAX_BATCH).await > 0 {
        // Sleep out the linger period, then drain: one wake-up per batch, not one per event.
        tokio::time::sleep(LINGER).await;
        while events.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
        }
        coalesce(&mut events);
        let batch = EventBatch::new(std::mem::take(&mut events));
        let body = match batch.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode job events; dropped");
                continue;
            }
        };
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_type(EVENTS_SCHEMA.into())
            .with_timestamp(crate::envelope::now_ms() / 1000);
        if let Err(e) = publisher.publish(&exchange, &routing_key, &body, props).await {
            tracing::warn!(error = %e, lost = batch.events.len(), "cannot publish job events");
        }
    }
}

/// Drops a `started` event when the same batch holds the `succeeded` of that message and
/// attempt: `succeeded` carries `at_ms` and `duration_ms`, so the start time is not lost, and
/// under load this halves what events cost. A step that runs longer than a batch keeps its
/// separate `started`.
fn coalesce(events: &mut Vec<JobEvent>) {
    let succeeded: std::collections::HashSet<(Uuid, u32)> =
        events.iter().filter(|e| e.kind == EventKind::Succeeded).map(|e| (e.message_id, e.attempt)).collect();
    if !succeeded.is_empty() {
        events.retain(|e| e.kind != EventKind::Started || !succeeded.contains(&(e.message_id, e.attempt)));
    }
}

impl JobEvent {
    /// An event with what every event has, stamped now; the optional fields are empty.
    pub fn new(
        kind: EventKind,
        job_id: Uuid,
        message_id: Uuid,
        pipeline: Arc<str>,
        step: Arc<str>,
        worker: Arc<str>,
        attempt: u32,
    ) -> Self {
        JobEvent {
            kind,
            job_id,
            message_id,
            pipeline,
            step,
            worker,
            at_ms: crate::envelope::now_ms(),
            attempt,
            delivery_count: 0,
            duration_ms: None,
            delay_ms: None,
            error: None,
            error_kind: None,
            outputs: 0,
            last_step: false,
            detail: None,
        }
    }

    /// When the handler started: `at_ms` for `started`, `at_ms - duration_ms` for `succeeded`.
    pub fn started_at_ms(&self) -> Option<u64> {
        match self.kind {
            EventKind::Started => Some(self.at_ms),
            EventKind::Succeeded => self.duration_ms.map(|d| self.at_ms.saturating_sub(d)),
            _ => None,
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from milliseconds since the Unix epoch (humantime's RFC 3339).
pub fn format_time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string().replacen('T', " ", 1).trim_end_matches('Z').to_owned()
}

/// Where reading the events stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The oldest event the stream still keeps.
    First,
    /// Events published from now on.
    Next,
    /// Events published at or after this time (milliseconds since the Unix epoch; the stream
    /// resolves it to second precision, at chunk granularity, so a little earlier is read too).
    Time(u64),
}

/// Reads job events from the stream queue `{ns}.events`, from its first entry on (see
/// [`subscribe_from`]).
pub async fn subscribe(broker: &Broker, names: &Names) -> Result<mpsc::UnboundedReceiver<JobEvent>, TopologyError> {
    subscribe_from(broker, names, From::First).await
}

/// Reads job events from the stream queue `{ns}.events`, starting at `from`, and sends them to
/// the returned receiver until the receiver is dropped or the connection ends. Reading from a
/// time keeps a tool that follows one job from replaying weeks of history first.
///
/// Declares the namespace's base topology first, so it works before any worker has run.
pub async fn subscribe_from(
    broker: &Broker,
    names: &Names,
    from: From,
) -> Result<mpsc::UnboundedReceiver<JobEvent>, TopologyError> {
    crate::Declarer::new(broker, names).ensure_base().await?;
    let ch = broker.channel().await?;
    ch.basic_qos(500, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let mut consumer = consume_events(&ch, names, from).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            let Ok(batch) = EventBatch::decode(&delivery.data) else { continue };
            for event in batch.events {
                if tx.send(event).is_err() {
                    let _ = ch.close(200, "done".into()).await;
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// A consumer of `{ns}.events` from `from` on `ch`.
async fn consume_events(ch: &lapin::Channel, names: &Names, from: From) -> Result<lapin::Consumer, BrokerError> {
    let offset = match from {
        From::First => AMQPValue::LongString("first".into()),
        From::Next => AMQPValue::LongString("next".into()),
        From::Time(ms) => AMQPValue::Timestamp(ms / 1000),
    };
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ch.basic_consume(names.events().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(BrokerError::amqp("basic.consume events"))
}

/// Reads the events from `from` up to the stream's tail as it was when the read began: it first
/// appends an empty batch carrying a mark of its own (with a confirm), then reads until it meets
/// it. Under any load the read ends; it never waits for the stream to go quiet.
pub async fn read_to_now(broker: &Broker, names: &Names, from: From) -> Result<Vec<JobEvent>, TopologyError> {
    crate::Declarer::new(broker, names).ensure_base().await?;
    let mark = Uuid::now_v7();
    let batch = EventBatch { mark: Some(mark), ..EventBatch::new(Vec::new()) };
    let body = batch.encode().map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(EVENTS_SCHEMA.into());
    broker.publisher().await?.publish(&names.events(), "mark", &body, props).await?;
    let ch = broker.channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let since_ms = match from {
        From::Time(ms) => Some(ms),
        _ => None,
    };
    let from = if matches!(from, From::Next) { From::First } else { from };
    let mut consumer = consume_events(&ch, names, from).await?;
    let mut events = Vec::new();
    let read = async {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(BrokerError::amqp("events delivery"))?;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            let Ok(batch) = EventBatch::decode(&delivery.data) else { continue };
            if batch.mark == Some(mark) {
                return Ok(());
            }
            // A time offset starts at the chunk holding that time: drop what came before it.
            events.extend(batch.events.into_iter().filter(|e| since_ms.is_none_or(|s| e.at_ms >= s)));
        }
        Err(BrokerError::Pool("the events stream ended before this reader's mark".into()))
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(120), read).await;
    let _ = ch.close(200, "read".into()).await;
    match outcome {
        Ok(Ok(())) => Ok(events),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(BrokerError::Pool("reading the events stream took longer than 2 minutes".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_dated_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::format_time(951_825_600_000), "2000-02-29 12:00:00");
    }

    use super::*;

    fn event(kind: EventKind, message_id: Uuid, attempt: u32) -> JobEvent {
        JobEvent {
            at_ms: 1_000,
            duration_ms: (kind == EventKind::Succeeded).then_some(40),
            ..JobEvent::new(kind, Uuid::nil(), message_id, "p".into(), "s".into(), "w".into(), attempt)
        }
    }

    fn succeeded(pipeline: &str, at_ms: u64) -> JobEvent {
        JobEvent {
            at_ms,
            duration_ms: Some(3),
            outputs: 1,
            ..JobEvent::new(
                EventKind::Succeeded,
                Uuid::now_v7(),
                Uuid::now_v7(),
                pipeline.into(),
                "features".into(),
                "features@host-7#4242".into(),
                1,
            )
        }
    }

    #[test]
    fn a_batch_reads_back_as_written_with_every_field_and_a_stray_pipeline() {
        let mut events: Vec<JobEvent> = (0..5).map(|i| succeeded("iris", 1_795_000_000_000 + i)).collect();
        events.push(succeeded("wine", 1_795_000_000_009));
        events.push(JobEvent {
            delivery_count: 2,
            delay_ms: Some(400),
            error: Some("boom".into()),
            error_kind: Some("permanent".into()),
            last_step: true,
            detail: Some(rmpv::Value::from("x")),
            step: "other".into(),
            worker: "other@h#1".into(),
            attempt: 3,
            ..succeeded("iris", 1_795_000_000_001)
        });
        let batch = EventBatch { mark: Some(Uuid::now_v7()), ..EventBatch::new(events.clone()) };
        let back = EventBatch::decode(&batch.encode().expect("encode")).expect("decode");
        assert_eq!(back, batch);
    }

    #[test]
    fn version_1_batches_still_read_and_version_2_is_a_third_of_their_size() {
        let events: Vec<JobEvent> = (0..200).map(|i| succeeded("iris", 1_795_000_000_000 + i)).collect();
        let v1 = rmp_serde::to_vec_named(&EventBatch { v: 1, events: events.clone(), mark: None }).expect("v1");
        let read = EventBatch::decode(&v1).expect("a version 1 batch decodes");
        assert_eq!((read.v, read.events), (1, events.clone()));
        let v2 = EventBatch::new(events).encode().expect("v2");
        assert!(v2.len() * 100 <= v1.len() * 40, "version 2 is {} bytes against {} for version 1", v2.len(), v1.len());
        let unknown = rmp_serde::to_vec_named(&VersionOnly { v: 9 }).expect("v9");
        assert!(matches!(EventBatch::decode(&unknown), Err(EventsDecodeError::UnknownVersion(9))));
    }

    #[test]
    fn started_is_folded_into_succeeded_of_the_same_attempt_only() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut batch = vec![
            event(EventKind::Started, a, 1),
            event(EventKind::Retrying, a, 1),
            event(EventKind::Started, a, 2),
            event(EventKind::Succeeded, a, 2),
            event(EventKind::Started, b, 1),
        ];
        coalesce(&mut batch);
        let kinds: Vec<(EventKind, u32)> = batch.iter().map(|e| (e.kind, e.attempt)).collect();
        assert_eq!(
            kinds,
            vec![(EventKind::Started, 1), (EventKind::Retrying, 1), (EventKind::Succeeded, 2), (EventKind::Started, 1)]
        );
        assert_eq!(batch[2].started_at_ms(), Some(960));
    }
}
