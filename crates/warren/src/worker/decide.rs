//! One delivery, one decision: what is known about a delivery (its headers, the decoded envelope
//! head, the dedup window, the limits) and, once it ran, the handler's outcome decide what
//! happens to it. Pure and unit-tested without a broker; `worker::handle` carries it out.

use lapin::{BasicProperties, types::AMQPValue};

use crate::{
    DeadKind, StepError,
    envelope::{DecodeError, headers},
};

/// What the headers and the broker say about one delivery, read defensively: a header set by a
/// publisher is input, never trusted beyond its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryFacts {
    /// The attempt this delivery is (1 for the first), from `warren-attempt`, clamped to
    /// `1..=max_attempts`. Only retries that Warren published raise it past 1 legitimately; a
    /// forged value can at most make a failing message dead-letter sooner.
    pub attempt: u32,
    /// Earlier deliveries of this very message that a handler started and never settled (its
    /// worker died or lost the broker). Taken from the broker's `x-delivery-count` only when the
    /// broker itself marks the delivery as redelivered; a first delivery has none, whatever its
    /// publisher wrote.
    pub crashes: u32,
}

impl DeliveryFacts {
    /// Reads the facts from a delivery's properties and the broker's `redelivered` flag.
    pub fn read(props: &BasicProperties, redelivered: bool, max_attempts: u32) -> Self {
        let attempt = match header(props, headers::ATTEMPT) {
            Some(n) => n.clamp(1, i64::from(max_attempts.max(1))) as u32,
            None => 1,
        };
        let crashes = if redelivered {
            // RabbitMQ's quorum queues set x-delivery-count themselves on a redelivery, replacing
            // whatever the publisher put there. A redelivered message without it (a classic queue)
            // has been returned at least once.
            header(props, headers::DELIVERY_COUNT).map_or(1, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
        } else {
            0
        };
        Self { attempt, crashes }
    }
}

fn header(props: &BasicProperties, name: &str) -> Option<i64> {
    let value = props.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::Double(f) if f.is_finite() => Some(*f as i64),
        AMQPValue::Float(f) if f.is_finite() => Some(*f as i64),
        _ => crate::envelope::header_int(props, name),
    }
}

/// The limits a decision is taken against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts (handler runs that failed with a retryable error) before giving up.
    pub max_attempts: u32,
    /// Crashes before a message is dead-lettered as one that kills its workers.
    pub delivery_limit: u32,
}

/// What the body turned out to be.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// It decoded; `step` is the step it is addressed to (`slip[0]`).
    Decoded {
        /// The step the message names.
        step: &'a str,
        /// Whether this worker completed the same message id recently.
        duplicate: bool,
        /// Whether its job was cancelled.
        cancelled: bool,
    },
    /// It did not decode.
    Undecodable(&'a DecodeError),
}

/// Where a delivery stands when a decision is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// Received; the handler has not run.
    Received,
    /// The handler (or the step cache) produced output that is ready to hand off.
    Succeeded,
    /// The handler failed.
    Failed(&'a StepError),
    /// The output cannot be encoded: the step's own bug, it will fail again.
    Unencodable(&'a str),
    /// The broker returned an output as unroutable: no queue is bound for the next step.
    Unroutable(&'a str),
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ack it and do nothing else (a duplicate of a completed message).
    Drop,
    /// Ack it without running it: its job was cancelled.
    Cancel,
    /// Run the handler, then ask again.
    Run,
    /// Publish the outputs, wait for their confirms, then ack.
    HandOff,
    /// Publish it to the delay queue as attempt `next_attempt`, then ack.
    Retry {
        /// The attempt the retried message will be.
        next_attempt: u32,
    },
    /// Publish it byte for byte to the dead-letter queue with the reason, then ack.
    DeadLetter {
        /// Why, as a kind.
        kind: DeadKind,
        /// Why, in words.
        reason: String,
    },
}

/// Decides what happens to one delivery of a message for step `queue_step`.
pub fn decide(queue_step: &str, facts: DeliveryFacts, body: Body<'_>, limits: Limits, stage: Stage<'_>) -> Decision {
    let dead = |kind, reason: String| Decision::DeadLetter { kind, reason };
    match stage {
        Stage::Received => match body {
            Body::Undecodable(e) => dead(DeadKind::Poison, e.to_string()),
            Body::Decoded { step, .. } if step != queue_step => {
                dead(DeadKind::Misrouted, format!("message is addressed to step {step:?}, not {queue_step:?}"))
            }
            Body::Decoded { duplicate: true, .. } => Decision::Drop,
            Body::Decoded { cancelled: true, .. } => Decision::Cancel,
            Body::Decoded { .. } if facts.crashes >= limits.delivery_limit => dead(
                DeadKind::Crash,
                format!(
                    "a handler started on it {} times without an ack: its worker died or lost the broker each \
                     time (delivery limit {}); it crashes or stalls every worker that takes it",
                    facts.crashes, limits.delivery_limit
                ),
            ),
            Body::Decoded { .. } => Decision::Run,
        },
        Stage::Succeeded => Decision::HandOff,
        Stage::Failed(e) if e.is_retryable() && facts.attempt < limits.max_attempts => {
            Decision::Retry { next_attempt: facts.attempt + 1 }
        }
        Stage::Failed(e) if e.is_crash() => {
            dead(DeadKind::Crash, format!("{} (after {} attempts)", e.message(), facts.attempt))
        }
        Stage::Failed(e) if e.is_retryable() => {
            dead(DeadKind::Exhausted, format!("{} (after {} attempts)", e.message(), facts.attempt))
        }
        Stage::Failed(e) => dead(DeadKind::Permanent, e.message().to_owned()),
        Stage::Unencodable(e) => dead(DeadKind::Permanent, format!("cannot encode the step's output: {e}")),
        Stage::Unroutable(e) => dead(DeadKind::Unroutable, e.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldTable, LongString};

    use super::*;

    const LIMITS: Limits = Limits { max_attempts: 3, delivery_limit: 5 };
    const OK: Body<'static> = Body::Decoded { step: "a", duplicate: false, cancelled: false };

    fn props(h: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in h {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    fn first() -> DeliveryFacts {
        DeliveryFacts { attempt: 1, crashes: 0 }
    }

    #[test]
    fn a_forged_delivery_count_on_a_first_delivery_counts_nothing() {
        let p = props(&[(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(1000))]);
        let facts = DeliveryFacts::read(&p, false, 5);
        assert_eq!(facts.crashes, 0);
        assert_eq!(decide("a", facts, OK, LIMITS, Stage::Received), Decision::Run);
    }

    #[test]
    fn the_brokers_count_on_a_redelivery_is_the_crash_count() {
        let p = props(&[(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(2))]);
        assert_eq!(DeliveryFacts::read(&p, true, 5).crashes, 2);
        // A classic queue has no count: a redelivery is at least one.
        assert_eq!(DeliveryFacts::read(&props(&[]), true, 5).crashes, 1);
        let p = props(&[(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(-7))]);
        assert_eq!(DeliveryFacts::read(&p, true, 5).crashes, 0);
    }

    #[test]
    fn attempts_are_clamped_and_wrong_types_read_as_absent() {
        let read = |v: AMQPValue| DeliveryFacts::read(&props(&[(headers::ATTEMPT, v)]), false, 5).attempt;
        assert_eq!(read(AMQPValue::LongLongInt(1 << 32)), 5, "2^32 does not wrap to 0");
        assert_eq!(read(AMQPValue::LongLongInt(i64::MAX)), 5);
        assert_eq!(read(AMQPValue::LongLongInt(-3)), 1);
        assert_eq!(read(AMQPValue::LongLongInt(0)), 1);
        assert_eq!(read(AMQPValue::ShortShortUInt(2)), 2);
        assert_eq!(read(AMQPValue::LongString(LongString::from("3"))), 3);
        assert_eq!(read(AMQPValue::LongString(LongString::from("three"))), 1);
        assert_eq!(read(AMQPValue::Boolean(true)), 1);
        assert_eq!(read(AMQPValue::Double(f64::NAN)), 1);
        assert_eq!(read(AMQPValue::Double(1e300)), 5);
        assert_eq!(DeliveryFacts::read(&BasicProperties::default(), false, 5).attempt, 1);
    }

    #[test]
    fn crashes_dead_letter_only_at_the_limit() {
        let facts = DeliveryFacts { attempt: 1, crashes: 4 };
        assert_eq!(decide("a", facts, OK, LIMITS, Stage::Received), Decision::Run);
        let facts = DeliveryFacts { attempt: 1, crashes: 5 };
        assert!(matches!(
            decide("a", facts, OK, LIMITS, Stage::Received),
            Decision::DeadLetter { kind: DeadKind::Crash, .. }
        ));
    }

    #[test]
    fn bad_bodies_and_wrong_steps_are_dead_lettered_before_running() {
        let e = DecodeError::Malformed("nope".into());
        assert!(matches!(
            decide("a", first(), Body::Undecodable(&e), LIMITS, Stage::Received),
            Decision::DeadLetter { kind: DeadKind::Poison, reason } if reason.contains("nope")
        ));
        let other = Body::Decoded { step: "b", duplicate: false, cancelled: false };
        assert!(matches!(
            decide("a", first(), other, LIMITS, Stage::Received),
            Decision::DeadLetter { kind: DeadKind::Misrouted, .. }
        ));
    }

    #[test]
    fn a_duplicate_is_dropped_even_when_redelivered_often() {
        let dup = Body::Decoded { step: "a", duplicate: true, cancelled: false };
        let facts = DeliveryFacts { attempt: 1, crashes: 50 };
        assert_eq!(decide("a", facts, dup, LIMITS, Stage::Received), Decision::Drop);
    }

    #[test]
    fn a_cancelled_jobs_message_is_not_run_even_at_its_crash_limit() {
        let cancelled = Body::Decoded { step: "a", duplicate: false, cancelled: true };
        let facts = DeliveryFacts { attempt: 1, crashes: 50 };
        assert_eq!(decide("a", facts, cancelled, LIMITS, Stage::Received), Decision::Cancel);
        let elsewhere = Body::Decoded { step: "b", duplicate: false, cancelled: true };
        assert!(matches!(
            decide("a", first(), elsewhere, LIMITS, Stage::Received),
            Decision::DeadLetter { kind: DeadKind::Misrouted, .. }
        ));
    }

    #[test]
    fn handler_outcomes() {
        assert_eq!(decide("a", first(), OK, LIMITS, Stage::Succeeded), Decision::HandOff);
        let retry = StepError::retryable("later");
        assert_eq!(decide("a", first(), OK, LIMITS, Stage::Failed(&retry)), Decision::Retry { next_attempt: 2 });
        let last = DeliveryFacts { attempt: 3, crashes: 0 };
        assert!(matches!(
            decide("a", last, OK, LIMITS, Stage::Failed(&retry)),
            Decision::DeadLetter { kind: DeadKind::Exhausted, reason } if reason.contains("after 3 attempts")
        ));
        let crashed = StepError::crashed("the child died");
        assert_eq!(decide("a", first(), OK, LIMITS, Stage::Failed(&crashed)), Decision::Retry { next_attempt: 2 });
        assert!(matches!(
            decide("a", last, OK, LIMITS, Stage::Failed(&crashed)),
            Decision::DeadLetter { kind: DeadKind::Crash, reason } if reason.contains("after 3 attempts")
        ));
        let perm = StepError::permanent("no");
        assert!(matches!(
            decide("a", first(), OK, LIMITS, Stage::Failed(&perm)),
            Decision::DeadLetter { kind: DeadKind::Permanent, .. }
        ));
        assert!(matches!(
            decide("a", first(), OK, LIMITS, Stage::Unroutable("no queue")),
            Decision::DeadLetter { kind: DeadKind::Unroutable, .. }
        ));
        assert!(matches!(
            decide("a", first(), OK, LIMITS, Stage::Unencodable("bad")),
            Decision::DeadLetter { kind: DeadKind::Permanent, .. }
        ));
    }
}
