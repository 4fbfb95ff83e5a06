//! Dead letters: reading them and sending them back to their step.
//!
//! A replay publishes each chosen dead letter to its step with a publisher confirm and only
//! then acks it in the dead-letter queue: killed at any moment, every message is either still a
//! dead letter or back in its step queue (or, in the moment between, both: the step's dedup and
//! idempotent handlers absorb that).

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{
    Broker, BrokerError, Names,
    broker::Publisher,
    envelope::{self, headers},
};

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The step whose dead-letter queue holds it.
    pub step: String,
    /// Message id (property).
    pub message_id: Option<String>,
    /// Job id (`warren-job` header).
    pub job: Option<String>,
    /// The error (`warren-error`, or RabbitMQ's `x-death` reason).
    pub error: String,
    /// The kind (`warren-error-kind`; `broker` when RabbitMQ dead-lettered it itself).
    pub kind: String,
    /// When it failed, ms since the epoch (0 if unknown).
    pub failed_at_ms: u64,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// The original body.
    pub body: Vec<u8>,
}

/// A predicate on a dead letter's error text.
pub type ErrorMatcher = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Which dead letters to act on. Empty fields match everything.
#[derive(Clone, Default)]
pub struct Filter {
    /// Only this job.
    pub job: Option<String>,
    /// Only errors containing this text.
    pub error_contains: Option<String>,
    /// Only dead letters that failed at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only errors this predicate accepts (a regular expression, say).
    pub error_matches: Option<ErrorMatcher>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("job", &self.job)
            .field("error_contains", &self.error_contains)
            .field("since_ms", &self.since_ms)
            .field("error_matches", &self.error_matches.is_some())
            .finish()
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Replay at most this many.
    pub limit: Option<usize>,
    /// Only count what would be replayed.
    pub dry_run: bool,
    /// At most this many messages per second.
    pub rate_per_s: Option<f64>,
    /// Parameters to set on the step's hop (`slip[0].params`) before replaying.
    pub set_params: Vec<(String, rmpv::Value)>,
}

impl Filter {
    /// Whether `d` matches.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.job.as_ref().is_none_or(|j| d.job.as_deref() == Some(j.as_str()))
            && self.error_contains.as_ref().is_none_or(|t| d.error.contains(t.as_str()))
            && self.since_ms.is_none_or(|s| d.failed_at_ms >= s)
            && self.error_matches.as_ref().is_none_or(|m| m(&d.error))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters sent back (or, on a dry run, that would be).
    pub replayed: usize,
    /// Dead letters looked at and left.
    pub left: usize,
}

fn dead_letter(step: &str, properties: BasicProperties, body: Vec<u8>) -> DeadLetter {
    let error = envelope::header_str(&properties, headers::ERROR).map(str::to_owned).unwrap_or_else(|| {
        if properties.headers().as_ref().is_some_and(|h| h.contains_key("x-death")) {
            "dead-lettered by RabbitMQ (see x-death)".to_owned()
        } else {
            String::new()
        }
    });
    DeadLetter {
        step: step.to_owned(),
        message_id: properties.message_id().as_ref().map(|m| m.to_string()),
        job: envelope::header_str(&properties, headers::JOB).map(str::to_owned),
        kind: envelope::header_str(&properties, headers::ERROR_KIND).unwrap_or("broker").to_owned(),
        failed_at_ms: envelope::header_int(&properties, headers::FAILED_AT).unwrap_or(0).max(0) as u64,
        error,
        properties,
        body,
    }
}

/// Walks up to the current number of dead letters of `step`, calling `act` on each; a dead letter
/// for which `act` returns `true` is acked (removed), the others go back when the walk ends.
async fn walk<F, Fut>(broker: &Broker, names: &Names, step: &str, mut act: F) -> Result<(), BrokerError>
where
    F: FnMut(DeadLetter) -> Fut,
    Fut: std::future::Future<Output = Result<bool, BrokerError>>,
{
    let queue = names.dead_queue(step);
    let ch = broker.channel().await?;
    let info = ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::amqp("dead-letter queue"))?;
    // Dead letters another client is returning right now are not counted yet: read until the
    // expected number arrived and then until the queue stays quiet for a moment.
    let expected = info.message_count() as usize;
    // No prefetch limit: the dead letters left alone stay unacked until the walk ends.
    ch.basic_qos(0, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(BrokerError::amqp("consume dead letters"))?;
    let mut seen = 0usize;
    loop {
        let idle =
            if seen < expected { std::time::Duration::from_secs(5) } else { std::time::Duration::from_millis(300) };
        let next = tokio::time::timeout(idle, consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        seen += 1;
        let delivery = delivery.map_err(BrokerError::amqp("dead letter"))?;
        let acker = delivery.acker.clone();
        if act(dead_letter(step, delivery.properties, delivery.data)).await? {
            acker.ack(BasicAckOptions::default()).await.map_err(BrokerError::amqp("ack dead letter"))?;
        }
    }
    // Closing the channel returns every dead letter not acked to the queue.
    let _ = ch.close(200, "done".into()).await;
    Ok(())
}

/// The dead letters of `step` that match `filter`, left in place.
pub async fn list(broker: &Broker, names: &Names, step: &str, filter: &Filter) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut out = Vec::new();
    walk(broker, names, step, |d| {
        if filter.matches(&d) {
            out.push(d);
        }
        async { Ok(false) }
    })
    .await?;
    Ok(out)
}

/// Sends the dead letters of `step` that match `filter` back to the step queue: the original
/// body (with `set_params` applied to its hop, if any) and properties, the attempt count reset,
/// `warren-replayed` counting replays, `warren-replayed-error` keeping the error it died of and
/// `warren-replayed-from` naming the dead-letter queue it came from.
/// Each is published with a confirm before its dead letter is acked. With `dry_run` nothing moves.
pub async fn replay(
    broker: &Broker,
    names: &Names,
    step: &str,
    filter: &Filter,
    options: &ReplayOptions,
) -> Result<ReplayReport, BrokerError> {
    let publisher = Publisher::new(broker.channel().await?).await?;
    let exchange = names.steps_exchange();
    let mut report = ReplayReport::default();
    let pause = options.rate_per_s.filter(|r| *r > 0.0).map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    walk(broker, names, step, |d| {
        let chosen = filter.matches(&d) && options.limit.is_none_or(|l| report.replayed < l);
        if chosen {
            report.replayed += 1;
        } else {
            report.left += 1;
        }
        let (publisher, exchange) = (&publisher, &exchange);
        async move {
            if !chosen || options.dry_run {
                return Ok(false);
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            let body =
                if options.set_params.is_empty() { d.body.clone() } else { patch_params(&d.body, &options.set_params) };
            publisher.publish(exchange, &d.step, &body, replay_properties(&d, &names.dead_queue(&d.step))).await?;
            Ok(true)
        }
    })
    .await?;
    let _ = publisher.channel().close(200, "done".into()).await;
    Ok(report)
}

/// Sets parameters on the envelope's current hop; a body that is not an envelope stays as it is.
fn patch_params(body: &[u8], set: &[(String, rmpv::Value)]) -> Vec<u8> {
    let Ok(mut env) = crate::Envelope::<rmpv::Value>::decode(body) else { return body.to_vec() };
    if let Some(hop) = env.slip.first_mut() {
        let mut map = match std::mem::replace(&mut hop.params, rmpv::Value::Nil) {
            rmpv::Value::Map(m) => m,
            _ => Vec::new(),
        };
        for (k, v) in set {
            map.retain(|(key, _)| key.as_str() != Some(k.as_str()));
            map.push((rmpv::Value::from(k.as_str()), v.clone()));
        }
        hop.params = rmpv::Value::Map(map);
    }
    env.encode().unwrap_or_else(|_| body.to_vec())
}

/// Removes the dead letters of `step` that match `filter`; returns how many.
pub async fn purge(broker: &Broker, names: &Names, step: &str, filter: &Filter) -> Result<usize, BrokerError> {
    let mut purged = 0;
    walk(broker, names, step, |d| {
        let hit = filter.matches(&d);
        purged += usize::from(hit);
        async move { Ok(hit) }
    })
    .await?;
    Ok(purged)
}

/// The properties a replayed message is published with.
fn replay_properties(d: &DeadLetter, from_queue: &str) -> BasicProperties {
    let mut table = FieldTable::default();
    let replays = envelope::header_int(&d.properties, headers::REPLAYED).unwrap_or(0) + 1;
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let drop = [
                headers::ERROR,
                headers::ERROR_KIND,
                headers::WORKER,
                headers::FAILED_AT,
                headers::ATTEMPT,
                headers::STEP,
                headers::REPLAYED,
                headers::DELIVERY_COUNT,
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
            ];
            if !drop.contains(&k.as_str()) {
                table.insert(k.clone(), v.clone());
            }
        }
    }
    table.insert(headers::REPLAYED.into(), AMQPValue::LongLongInt(replays));
    table.insert("warren-replayed-error".into(), envelope::text(d.error.as_str()));
    table.insert("warren-replayed-from".into(), envelope::text(from_queue));
    d.properties.clone().with_headers(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_resets_the_attempt_and_records_where_it_came_from() {
        let props = envelope::with_headers(
            &BasicProperties::default(),
            vec![
                (headers::JOB, envelope::text("j1")),
                (headers::ERROR, envelope::text("boom")),
                (headers::ERROR_KIND, envelope::text("permanent")),
                (headers::ATTEMPT, AMQPValue::LongLongInt(3)),
                (headers::REPLAYED, AMQPValue::LongLongInt(1)),
            ],
        );
        let d = dead_letter("train", props, vec![1, 2, 3]);
        assert_eq!((d.error.as_str(), d.kind.as_str(), d.job.as_deref()), ("boom", "permanent", Some("j1")));
        let replayed = replay_properties(&d, "ns.dead.train");
        assert_eq!(envelope::header_str(&replayed, headers::JOB), Some("j1"), "other headers stay");
        assert_eq!(envelope::header_int(&replayed, headers::ATTEMPT), None, "attempt starts again at 1");
        assert_eq!(envelope::header_str(&replayed, headers::ERROR), None);
        assert_eq!(envelope::header_int(&replayed, headers::REPLAYED), Some(2));
        assert_eq!(envelope::header_str(&replayed, "warren-replayed-error"), Some("boom"));
        assert_eq!(envelope::header_str(&replayed, "warren-replayed-from"), Some("ns.dead.train"));
    }

    #[test]
    fn filters_combine() {
        let d = dead_letter(
            "s",
            envelope::with_headers(
                &BasicProperties::default(),
                vec![
                    (headers::JOB, envelope::text("j1")),
                    (headers::ERROR, envelope::text("row 7 is bad")),
                    (headers::FAILED_AT, AMQPValue::LongLongInt(5_000)),
                ],
            ),
            vec![],
        );
        assert!(Filter::default().matches(&d));
        assert!(Filter { job: Some("j1".into()), since_ms: Some(4_000), ..Default::default() }.matches(&d));
        assert!(!Filter { job: Some("j2".into()), ..Default::default() }.matches(&d));
        assert!(!Filter { since_ms: Some(6_000), ..Default::default() }.matches(&d));
        let m: ErrorMatcher = std::sync::Arc::new(|e: &str| e.contains("row 7"));
        assert!(Filter { error_matches: Some(m), ..Default::default() }.matches(&d));
    }
}
