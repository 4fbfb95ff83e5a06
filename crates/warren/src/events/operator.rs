//! What people and tools did, as events: [`OperatorAction`] and [`record`].

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EventBatch, EventKind, JobEvent, events_schema};
use crate::{Broker, BrokerError, Names, envelope::CONTENT_TYPE};

/// What an operator did, recorded in the events stream for `warren dlq history`: who, why, to
/// what (the filter), and the ids touched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// `replay`, `edit` (a replay that changed the message), `purge`, `cancel`, `rerun`.
    pub action: String,
    /// Who: `user@host`, or what `--actor` said.
    pub actor: String,
    /// Why, as given with `--reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step acted on (empty for job-wide actions).
    #[serde(default)]
    pub step: String,
    /// The job acted on, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Uuid>,
    /// The selection as the command line gave it (`--step train --group 3fa2c1`).
    #[serde(default)]
    pub filter: String,
    /// How many dead letters or messages were touched.
    pub count: usize,
    /// Their ids (dead-letter ids, or message ids).
    #[serde(default)]
    pub ids: Vec<String>,
    /// What was changed (`max_iterations=500`), for edits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

impl OperatorAction {
    /// The action as an `operator` event.
    pub fn to_event(&self) -> JobEvent {
        let detail = crate::envelope::to_msgpack_value(self).ok();
        JobEvent {
            detail,
            ..JobEvent::new(
                EventKind::Operator,
                self.job.unwrap_or_default(),
                Uuid::nil(),
                "".into(),
                self.step.as_str().into(),
                self.actor.as_str().into(),
                1,
            )
        }
    }

    /// Reads the action back from an `operator` event.
    pub fn from_event(event: &JobEvent) -> Option<Self> {
        if event.kind != EventKind::Operator {
            return None;
        }
        crate::envelope::from_msgpack_value(event.detail.as_ref()?).ok()
    }
}

/// Publishes `action` to `{ns}.events` as a batch of `version` (the deployment's
/// `events_version`) and waits for the broker's confirm, so a tool knows the record is kept
/// before it says it is done.
pub async fn record(broker: &Broker, names: &Names, version: u16, action: &OperatorAction) -> Result<(), BrokerError> {
    let batch = EventBatch::new(vec![action.to_event()]);
    let body = batch.encode_as(version).map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(events_schema(version).into())
        .with_timestamp(crate::envelope::now_ms() / 1000);
    let publisher = broker.publisher().await?;
    publisher.publish(&names.events(), "operator", &body, props).await
}
