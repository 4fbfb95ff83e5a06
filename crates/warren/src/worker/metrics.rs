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
    dead: metrics::Counter,
    pub(super) handler_seconds: metrics::Histogram,
    pub(super) in_flight: metrics::Gauge,
    step: String,
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
