//! The worker's Prometheus metrics.

use crate::DeadKind;

/// The worker's metric handles, made once: recording is an atomic add per message (a no-op when
/// no recorder is installed).
pub(super) struct Metrics {
    pub(super) succeeded: metrics::Counter,
    pub(super) retried: metrics::Counter,
    pub(super) duplicate: metrics::Counter,
    pub(super) cancelled: metrics::Counter,
    /// Publishes sent again after a nack or a lost confirm (broker trouble, not the message's).
    pub(super) republished: metrics::Counter,
    /// `warren_retries_total`: sends to a delay queue.
    pub(super) retries: metrics::Counter,
    dead: metrics::Counter,
    pub(super) handler_seconds: metrics::Histogram,
    pub(super) in_flight: metrics::Gauge,
    step: String,
}

/// Every metric a worker exports, with its unit and what it means (`# HELP` on /metrics).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "warren_messages_total",
        Unit::Count,
        "Messages handled, by step and outcome (succeeded, retried, dead, duplicate, cancelled)."
    );
    describe_counter!(
        "warren_republished_total",
        Unit::Count,
        "Outputs published again after a nack or a lost confirm (broker trouble, not the message's)."
    );
    describe_counter!("warren_retries_total", Unit::Count, "Messages sent to a delay queue to be tried again.");
    describe_counter!(
        "warren_dead_letters_total",
        Unit::Count,
        "Messages sent to the step's dead-letter queue, by kind (permanent, exhausted, crash, poison, ...)."
    );
    describe_counter!(
        "warren_deprecated_total",
        Unit::Count,
        "Messages accepted in a form the protocol deprecated (form: e.g. an old schema id); the log names the sender."
    );
    describe_counter!(
        "warren_envelope_writes_total",
        Unit::Count,
        "Hand-offs to the next step (to) by envelope version: 2 (compact) once every live reader of that step reads it."
    );
    describe_gauge!(
        "warren_envelope_version",
        "The envelope version a hand-off to the next step (to) would use now: 1, or 2 once every reader of that step reads it."
    );
    describe_histogram!("warren_handler_seconds", Unit::Seconds, "Time the step's handler took per message.");
    describe_gauge!("warren_in_flight", Unit::Count, "Messages the worker is handling now.");
    describe_gauge!(
        "warren_worker_ready",
        "1 while the worker holds a consumer on its step's queue and the broker takes its publishes, else 0."
    );
    describe_gauge!(
        "warren_broker_blocked",
        "1 while the broker blocks the worker's publishes (connection.blocked: a memory or disk alarm), else 0."
    );
}

impl Metrics {
    pub(super) fn new(step: &str) -> Self {
        let s = step.to_owned();
        let outcome = |o: &'static str| metrics::counter!("warren_messages_total", "step" => s.clone(), "outcome" => o);
        Self {
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            duplicate: outcome("duplicate"),
            cancelled: outcome("cancelled"),
            republished: metrics::counter!("warren_republished_total", "step" => s.clone()),
            retries: metrics::counter!("warren_retries_total", "step" => s.clone()),
            dead: outcome("dead"),
            handler_seconds: metrics::histogram!("warren_handler_seconds", "step" => s.clone()),
            in_flight: metrics::gauge!("warren_in_flight", "step" => s.clone()),
            step: s,
        }
    }
    pub(super) fn dead_letter(&self, kind: DeadKind) {
        self.dead.increment(1);
        metrics::counter!("warren_dead_letters_total", "step" => self.step.clone(), "kind" => kind.as_str())
            .increment(1);
    }
}
