//! What a handler's error decides: retry later, or dead-letter now.

use std::fmt;

/// A step handler's failure. The variant decides what happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// Worth another attempt (a timeout, an unavailable dependency): the message goes to a delay
    /// queue and comes back with `attempt + 1`, until the attempts are exhausted.
    #[error("{0}")]
    Retryable(String),
    /// Will fail again however often it is tried (bad data, a refused parameter): the message
    /// goes to the dead-letter queue at once.
    #[error("{0}")]
    Permanent(String),
    /// The process doing the work died while it ran (a step's child process killed, say): tried
    /// again like a retryable error, and dead-lettered as a `crash` once its attempts are used up.
    #[error("{0}")]
    Crashed(String),
}

impl StepError {
    /// A retryable error with `msg`.
    pub fn retryable(msg: impl fmt::Display) -> Self {
        StepError::Retryable(msg.to_string())
    }
    /// A permanent error with `msg`.
    pub fn permanent(msg: impl fmt::Display) -> Self {
        StepError::Permanent(msg.to_string())
    }
    /// A crash of the process doing the work, with `msg`.
    pub fn crashed(msg: impl fmt::Display) -> Self {
        StepError::Crashed(msg.to_string())
    }
    /// Whether the message should be tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Retryable(_) | StepError::Crashed(_))
    }
    /// Whether the process doing the work died.
    pub fn is_crash(&self) -> bool {
        matches!(self, StepError::Crashed(_))
    }
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            StepError::Retryable(m) | StepError::Permanent(m) | StepError::Crashed(m) => m,
        }
    }
}

/// Why a message went to the dead-letter queue (the `warren-error-kind` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadKind {
    /// The handler returned a permanent error.
    Permanent,
    /// The handler's retryable errors used up every attempt.
    Exhausted,
    /// The body could not be decoded (not MessagePack, unknown version, wrong schema).
    Poison,
    /// Delivered again and again without an ack: it kills or stalls its workers.
    Crash,
    /// Addressed to another step than the queue it arrived on.
    Misrouted,
    /// Its output could not be routed to the next step.
    Unroutable,
}

impl DeadKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadKind::Permanent => "permanent",
            DeadKind::Exhausted => "exhausted",
            DeadKind::Poison => "poison",
            DeadKind::Crash => "crash",
            DeadKind::Misrouted => "misrouted",
            DeadKind::Unroutable => "unroutable",
        }
    }
}

impl fmt::Display for DeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
