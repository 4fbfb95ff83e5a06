//! [`OpsError`]: what can go wrong in an operator's action, by kind. Views map the kinds to exit
//! codes (the CLI) or HTTP statuses (the console) in one place each.

use warren::BrokerError;

use crate::dlq::DlqError;

/// An operator action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The request itself is wrong (a flag, a value, an edit that does not fit): nothing was done.
    #[error("{0}")]
    Usage(String),
    /// What the request names does not exist (a job, a dead letter, a recorded input).
    #[error("{0}")]
    NotFound(String),
    /// The broker could not be reached, refused the credentials, or failed mid-action.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker's topology (a stream, the registry) could not be read.
    #[error(transparent)]
    Topology(#[from] warren::TopologyError),
    /// The artifact store failed.
    #[error("artifact store: {0}")]
    Store(String),
    /// The action was carried out, but its record in the events stream failed.
    #[error("done, but the record for `warren dlq history` failed: {0}")]
    Record(BrokerError),
    /// A job did not end within the time it was given (it goes on).
    #[error("{0}")]
    TimedOut(String),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl OpsError {
    /// Bad usage: nothing was done, and asking again the same way will not help.
    pub fn is_usage(&self) -> bool {
        matches!(self, OpsError::Usage(_))
    }
    /// What was named does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpsError::NotFound(_))
    }
    /// A wait ran out of time.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, OpsError::TimedOut(_))
    }
    /// No connection could be had: the broker is down, unreachable, or refused the credentials.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OpsError::Broker(e) if e.is_connect() || e.is_access_refused())
    }
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        OpsError::Usage(message.into())
    }
}

impl From<DlqError> for OpsError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::Broker(b) => OpsError::Broker(b),
            unknown @ DlqError::UnknownStep { .. } => OpsError::Usage(unknown.to_string()),
        }
    }
}
