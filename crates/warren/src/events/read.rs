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
    // A mark is an empty batch of version 1, which every events reader ever written reads (as
    // no events) whatever version the deployment writes.
    let batch = EventBatch { mark: Some(mark), ..EventBatch::new(Vec::new()) };
    let body = batch.encode_as(1).map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(events_schema(1).into());
    broker.publisher().await?.publish(&names.events(), "mark", &body, props).await?;
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
