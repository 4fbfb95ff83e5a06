//! Reading the events stream: following it from a point ([`subscribe_from`]) and reading it up
//! to its tail as it was when the read began ([`read_to_now`]).

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{EventBatch, JobEvent, events_schema};
use crate::{Broker, BrokerError, Names, TopologyError, envelope::CONTENT_TYPE};

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
    let mut batches = follow_batches(broker, names, from, 64).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            for event in batch.events {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The `x-stream-offset` a read from `from` starts at: for a time, the offset [`seek`] finds
/// (else the time itself, for the broker's index).
async fn start_at(broker: &Broker, names: &Names, from: From) -> Result<AMQPValue, BrokerError> {
    Ok(match from {
        From::First => AMQPValue::LongString("first".into()),
        From::Next => AMQPValue::LongString("next".into()),
        From::Time(ms) => match offset_before(broker, names, ms).await {
            Ok(Some(offset)) => AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX)),
            Ok(None) => AMQPValue::Timestamp(ms / 1000),
            Err(e) => {
                tracing::debug!(error = %e, "cannot bisect the events stream; seeking by the broker's time index");
                AMQPValue::Timestamp(ms / 1000)
            }
        },
    })
}

/// A consumer of `{ns}.events` from `offset` (an `x-stream-offset` value) on `ch`.
async fn consume_events(ch: &lapin::Channel, names: &Names, offset: AMQPValue) -> Result<lapin::Consumer, BrokerError> {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ch.basic_consume(names.events().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(BrokerError::amqp("basic.consume events"))
}

/// Follows `{ns}.events` from `from`, handing whole batches (end marks too) to the returned
/// receiver, which holds at most `capacity`: a reader that folds slower than the stream is read
/// holds the stream back instead of buffering it. Ends when the receiver is dropped or the
/// connection ends (the receiver then yields `None`).
pub async fn follow_batches(
    broker: &Broker,
    names: &Names,
    from: From,
    capacity: usize,
) -> Result<mpsc::Receiver<EventBatch>, TopologyError> {
    crate::Declarer::new(broker, names).ensure_base().await?;
    let ch = broker.channel().await?;
    ch.basic_qos(200, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let start = start_at(broker, names, from).await?;
    let mut consumer = consume_events(&ch, names, start).await?;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            let Ok(batch) = EventBatch::decode(&delivery.data) else { continue };
            if tx.send(batch).await.is_err() {
                break;
            }
        }
        let _ = ch.close(200, "done".into()).await;
    });
    Ok(rx)
}

/// Appends the end mark `mark` (a fresh id) to `{ns}.events`, with a confirm: a reader that
/// meets it has read everything published before.
pub async fn mark(broker: &Broker, names: &Names, mark: Uuid) -> Result<(), BrokerError> {
    // A mark is an empty batch of version 1, which every events reader ever written reads (as
    // no events) whatever version the deployment writes.
    let batch = EventBatch { mark: Some(mark), ..EventBatch::new(Vec::new()) };
    let body = batch.encode_as(1).map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(events_schema(1).into())
        .with_timestamp(crate::envelope::now_ms() / 1000);
    broker.publisher().await?.publish(&names.events(), "mark", &body, props).await
}

/// Reads the events from `from` up to the stream's tail as it was when the read began: it first
/// appends an empty batch carrying a mark of its own (with a confirm), then reads until it meets
/// it. Under any load the read ends; it never waits for the stream to go quiet.
pub async fn read_to_now(broker: &Broker, names: &Names, from: From) -> Result<Vec<JobEvent>, TopologyError> {
    read_until(broker, names, from, None).await
}

/// [`read_to_now`], ending early at the first batch stamped more than 5 minutes after
/// `until_ms`: the events of a job whose last event is known (the console's job page) without
/// reading the rest of the stream. A batch's stamp is when it was published, which is within
/// the writer's 100 ms batching of its events' times unless the broker held the writer back;
/// the 5 minutes are for that.
pub async fn read_until(
    broker: &Broker,
    names: &Names,
    from: From,
    until_ms: Option<u64>,
) -> Result<Vec<JobEvent>, TopologyError> {
    let mut events = Vec::new();
    read_each(broker, names, from, until_ms, |e| events.push(e)).await?;
    Ok(events)
}

/// [`read_until`], handing each event to `each` as it is read instead of collecting them: a
/// reader that folds a day of ten million events holds its fold, not the events.
pub async fn read_each(
    broker: &Broker,
    names: &Names,
    from: From,
    until_ms: Option<u64>,
    mut each: impl FnMut(JobEvent),
) -> Result<(), TopologyError> {
    let past = until_ms.map(|u| u.saturating_add(300_000) / 1000);
    crate::Declarer::new(broker, names).ensure_base().await?;
    let end = Uuid::now_v7();
    mark(broker, names, end).await?;
    let ch = broker.channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let since_ms = match from {
        From::Time(ms) => Some(ms),
        _ => None,
    };
    let from = match from {
        From::Next => From::First,
        // A time after the mark (a job id from the future, a clock ahead of the broker's) would
        // start past the mark and never see it: never start later than a few seconds ago.
        From::Time(ms) => From::Time(ms.min(crate::envelope::now_ms().saturating_sub(5_000))),
        other => other,
    };
    let start = start_at(broker, names, from).await?;
    let mut consumer = consume_events(&ch, names, start).await?;
    let read = async {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(BrokerError::amqp("events delivery"))?;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            if past.is_some_and(|p| delivery.properties.timestamp().is_some_and(|t| t > p)) {
                return Ok(());
            }
            let Ok(batch) = EventBatch::decode(&delivery.data) else { continue };
            if batch.mark == Some(end) {
                return Ok(());
            }
            // A time offset starts at the chunk holding that time: drop what came before it.
            for e in batch.events.into_iter().filter(|e| since_ms.is_none_or(|s| e.at_ms >= s)) {
                each(e);
            }
        }
        Err(BrokerError::Pool("the events stream ended before this reader's mark".into()))
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(120), read).await;
    let _ = ch.close(200, "read".into()).await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(BrokerError::Pool("reading the events stream took longer than 2 minutes".into()).into()),
    }
}

/// Where a read from `ms` on starts: the offset of the last batch published before `ms`,
/// found by bisecting the stream on the batches' AMQP `timestamp` (when their writer published
/// them). Each probe reads one message; a stream of 10,000 batches takes 14. `None` when the
/// stream has nothing before `ms`, or a batch without a timestamp (a writer that set none) makes
/// the search unsure: then the broker's own time index (second precision, chunk granularity)
/// decides. The broker's index says when chunks reached it, in whole seconds; a chunk can hold
/// thousands of batches, and history loaded or copied in at once all looks "just now" to it.
/// The stamps are the writers' clocks (readers start a minute early for their skew).
///
/// Probes on a channel of their own, one message in flight each.
pub async fn offset_before(broker: &Broker, names: &Names, ms: u64) -> Result<Option<u64>, BrokerError> {
    let ch = broker.channel().await?;
    ch.basic_qos(1, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let found = seek(&ch, names, ms).await;
    let _ = ch.close(200, "seek".into()).await;
    found
}

/// [`offset_before`] on a channel of its own.
async fn seek(ch: &lapin::Channel, names: &Names, ms: u64) -> Result<Option<u64>, BrokerError> {
    let target = ms / 1000;
    let Some((mut lo, first_ts)) = probe(ch, names, AMQPValue::LongString("first".into())).await? else {
        return Ok(None);
    };
    if first_ts.is_none_or(|t| t >= target) {
        return Ok(None);
    }
    let Some((mut hi, _)) = probe(ch, names, AMQPValue::LongString("last".into())).await? else {
        return Ok(None);
    };
    // Invariant: the batch at `lo` was published before the target second; `hi` is past it or
    // the last chunk.
    for _ in 0..64 {
        if hi <= lo + 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let Some((at, ts)) = probe(ch, names, AMQPValue::LongLongInt(mid as i64)).await? else { break };
        match ts {
            None => return Ok(None),
            Some(t) if t < target => lo = at.max(mid),
            Some(_) => hi = mid,
        }
    }
    Ok(Some(lo))
}

/// The offset and the timestamp of the first stamped message a consumer from `offset`
/// receives (else of the last of the 8 it looked at); `None` when none comes within 5 seconds.
async fn probe(
    ch: &lapin::Channel,
    names: &Names,
    offset: AMQPValue,
) -> Result<Option<(u64, Option<u64>)>, BrokerError> {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = ch
        .basic_consume(names.events().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(BrokerError::amqp("basic.consume events"))?;
    // An end mark of a reader before 1.3 has no stamp: the next few messages may.
    let mut found = None;
    for _ in 0..8 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.map_err(BrokerError::amqp("events delivery"))?;
        let Some(offset) = stream_offset(&delivery) else { break };
        let stamp = *delivery.properties.timestamp();
        found = Some((offset, stamp));
        if stamp.is_some() {
            break;
        }
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
    }
    let _ = ch.basic_cancel(consumer.tag(), Default::default()).await;
    Ok(found)
}

/// A stream delivery's offset (its `x-stream-offset` header).
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<u64> {
    let value = delivery.properties.headers().as_ref()?.inner().get("x-stream-offset")?.clone();
    match value {
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(n)),
        AMQPValue::Timestamp(n) => Some(n),
        _ => None,
    }
}
