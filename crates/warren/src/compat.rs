//! The compatibility policy of `docs/PROTOCOL.md` ("Compatibility"), in code: which protocol
//! version this runtime speaks, which forms of earlier versions it still accepts, and what it
//! announces in the registry so that tools and other workers know what it reads and writes.
//!
//! A minor version may add (keys, headers, schemas, kinds) and may rename, but a renamed form is
//! accepted under its old name for the deprecation period ([`RENAMED_SCHEMAS`]), and a reader
//! that only knows an older form can ask writers for it (`events_version`). Accepting an old
//! form counts on `warren_deprecated_total` and logs the sender, so an operator can find the
//! client before the form goes.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};

/// The wire protocol version this runtime implements (`docs/PROTOCOL.md`, "Changelog").
pub const PROTOCOL_VERSION: &str = "1.3";

/// A payload schema id renamed in a minor version, still accepted under its old name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenamedSchema {
    /// The old id, as clients written before the rename send it.
    pub old: &'static str,
    /// The id it is now.
    pub new: &'static str,
    /// The protocol version that renamed it.
    pub renamed_in: &'static str,
    /// Accepted at least until this date (the deprecation period: six months and two minor
    /// versions, whichever is longer); a release after it may drop the old name.
    pub accepted_until: &'static str,
}

/// Every schema id renamed so far.
pub const RENAMED_SCHEMAS: &[RenamedSchema] = &[RenamedSchema {
    old: "warren.ml.Start/1",
    new: "warren.Start/1",
    renamed_in: "1.1",
    accepted_until: "2027-06-01",
}];

/// The rename of `old`, if it is an old name of a schema id.
pub fn renamed(old: &str) -> Option<&'static RenamedSchema> {
    RENAMED_SCHEMAS.iter().find(|r| r.old == old)
}

/// Whether a message that claims schema `found` is for a reader of `expected`: the same id, or
/// an old name of it within its deprecation period.
pub fn schema_matches(expected: &str, found: &str) -> bool {
    expected == found || renamed(found).is_some_and(|r| r.new == expected)
}

/// What a worker reads and writes, announced with every registry record (key `protocol`), so a
/// writer can tell whether every live reader of a step takes a newer form before it uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    pub protocol: String,
    /// Envelope versions it reads.
    pub envelope_reads: Vec<u16>,
    /// The highest envelope version it writes (to a step whose every reader reads it).
    pub envelope_writes: u16,
    /// Event batch versions it reads.
    pub events_reads: Vec<u16>,
    /// The event batch version it writes (`events_version`).
    pub events_writes: u16,
    /// Old schema ids it still accepts (see [`RENAMED_SCHEMAS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas_accepted: Vec<String>,
}

impl Versions {
    /// What this runtime reads, and writes with `events_version` and `envelope_version`.
    pub fn current(events_version: u16, envelope_version: Option<u16>) -> Self {
        Self {
            protocol: PROTOCOL_VERSION.to_owned(),
            envelope_reads: crate::envelope::ENVELOPE_READS.to_vec(),
            envelope_writes: envelope_version.unwrap_or(crate::envelope::ENVELOPE_COMPACT),
            events_reads: crate::events::EVENTS_VERSIONS.to_vec(),
            events_writes: events_version,
            schemas_accepted: RENAMED_SCHEMAS.iter().map(|r| r.old.to_owned()).collect(),
        }
    }
}

impl Versions {
    /// One line for people: `protocol 1.2: envelope reads 1, writes 1; events reads 1,2, writes 2`
    /// (`None`: a worker from before protocol 1.2, which did not say).
    pub fn describe(versions: Option<&Versions>) -> String {
        let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        match versions {
            Some(v) => format!(
                "protocol {}: envelope reads {}, writes up to {}; events reads {}, writes {}",
                v.protocol,
                list(&v.envelope_reads),
                v.envelope_writes,
                list(&v.events_reads),
                v.events_writes
            ),
            None => "protocol before 1.2 (envelope reads 1, writes 1; events writes 2)".to_owned(),
        }
    }
}

/// How often one worker logs the same sender's use of the same old form: the metric counts
/// every message, the log names the sender without flooding.
const LOG_EVERY: Duration = Duration::from_secs(600);

/// Notes a worker's acceptance of old forms: counts each on `warren_deprecated_total{step,
/// form}` and logs who sent it, once per sender and form every 10 minutes.
#[derive(Debug, Default)]
pub struct Deprecations {
    logged: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl Deprecations {
    /// A message of `job` (pipeline `pipeline`) for `step` used the old schema id `r.old`.
    pub fn old_schema(
        &self,
        step: &str,
        r: &'static RenamedSchema,
        props: &BasicProperties,
        job: &str,
        pipeline: &str,
    ) {
        metrics::counter!("warren_deprecated_total", "step" => step.to_owned(), "form" => r.old).increment(1);
        let sender = sender(props);
        let due = match self.logged.lock() {
            Ok(mut logged) => {
                let now = Instant::now();
                let key = (sender.clone(), r.old);
                let due = logged.get(&key).is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
                if due {
                    logged.insert(key, now);
                }
                due
            }
            Err(_) => true,
        };
        if due {
            tracing::warn!(
                step, sender = %sender, job, pipeline,
                "a client sent schema id {}, renamed {} in protocol {} and accepted until {}: update the sender",
                r.old, r.new, r.renamed_in, r.accepted_until
            );
        }
    }
}

/// Who sent a message, as far as its properties tell: `app_id` and `user_id` (which RabbitMQ
/// checks against the connection's user when set), else that the sender did not say.
pub fn sender(props: &BasicProperties) -> String {
    let app = props.app_id().as_ref().map(|a| a.as_str());
    let user = props.user_id().as_ref().map(|u| u.as_str());
    match (app, user) {
        (Some(a), Some(u)) => format!("app_id={a} user_id={u}"),
        (Some(a), None) => format!("app_id={a}"),
        (None, Some(u)) => format!("user_id={u}"),
        (None, None) => "unnamed (no app_id or user_id property)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_name_matches_its_new_one_only() {
        assert!(schema_matches("warren.Start/1", "warren.Start/1"));
        assert!(schema_matches("warren.Start/1", "warren.ml.Start/1"));
        assert!(!schema_matches("warren.ml.Dataset/1", "warren.ml.Start/1"));
        assert!(!schema_matches("warren.ml.Start/1", "warren.Start/1"), "a new name is not accepted by an old reader");
    }

    #[test]
    fn the_sender_is_named_by_what_it_set() {
        let p = BasicProperties::default().with_app_id("iris-client".into()).with_user_id("guest".into());
        assert_eq!(sender(&p), "app_id=iris-client user_id=guest");
        assert!(sender(&BasicProperties::default()).starts_with("unnamed"));
    }
}
