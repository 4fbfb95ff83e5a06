//! What happened to one message: [`EventKind`] and [`JobEvent`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// `worker` is the actor, `detail` an [`OperatorAction`](super::OperatorAction).
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
    /// The message whose handling sent this one, on the `started` or `succeeded` of its first
    /// attempt (none for a job's first message): how traces nest a step under the one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
}

pub(super) fn is_zero(n: &u32) -> bool {
    *n == 0
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
            causation_id: None,
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
