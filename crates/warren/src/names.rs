//! The names of every exchange and queue, derived from the namespace.

/// Exchange and queue names of one namespace (`ns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names under namespace `ns`.
    pub fn new(ns: impl Into<String>) -> Self {
        Self { ns: ns.into() }
    }
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }
    /// `{ns}.steps`: direct exchange, routing key = step name.
    pub fn steps_exchange(&self) -> String {
        format!("{}.steps", self.ns)
    }
    /// `{ns}.step.{step}`: the quorum queue a step's workers consume.
    pub fn step_queue(&self, step: &str) -> String {
        format!("{}.step.{step}", self.ns)
    }
    /// `{ns}.dead`: direct exchange for dead letters, routing key = step name.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }
    /// `{ns}.dead.{step}`: a step's dead-letter queue.
    pub fn dead_queue(&self, step: &str) -> String {
        format!("{}.dead.{step}", self.ns)
    }
    /// `{ns}.retry.q.{step}.{delay_ms}`: a (quorum) delay queue holding retries of one step for
    /// one delay. Workers before 0.2 used classic ones named `{ns}.retry.{step}.{delay_ms}`; those
    /// drain into the same step queue and delete themselves (docs/PROTOCOL.md).
    pub fn retry_queue(&self, step: &str, delay_ms: u64) -> String {
        format!("{}.retry.q.{step}.{delay_ms}", self.ns)
    }
    /// `{ns}.retry.`: what every delay queue's name starts with, old (classic) and new (quorum).
    pub fn retry_prefix(&self) -> String {
        format!("{}.retry.", self.ns)
    }
    /// `{ns}.events`: topic exchange of job events and the stream queue that keeps them.
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    /// `{ns}.registry`: stream queue of step descriptors and worker heartbeats.
    pub fn registry(&self) -> String {
        format!("{}.registry", self.ns)
    }
    /// `{ns}.control`: stream queue of control records (job cancellations) every worker follows.
    pub fn control(&self) -> String {
        format!("{}.control", self.ns)
    }
}
