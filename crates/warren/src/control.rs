//! Control records: what every worker must know about jobs, kept in the stream queue
//! `{ns}.control` and followed by every worker from its first entry on. Today one kind:
//! a job's cancellation, after which workers ack the job's messages without running them.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Broker, BrokerError, Names, envelope::CONTENT_TYPE};

/// Schema id of a control record (the AMQP `type` of messages on `{ns}.control`).
pub const CONTROL_SCHEMA: &str = "warren.control/1";

/// One control record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// Format version, 1.
    pub v: u16,
    /// `cancel`.
    pub kind: String,
    /// The job concerned.
    pub job: Uuid,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who.
    pub actor: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Records that `job` is cancelled, with a publisher confirm: from then on every worker of the
/// namespace acks the job's messages without running them.
pub async fn cancel(
    broker: &Broker,
    names: &Names,
    job: Uuid,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), BrokerError> {
    crate::Declarer::new(broker, names).base().await.map_err(|e| BrokerError::Pool(e.to_string()))?;
    let record = ControlRecord {
        v: 1,
        kind: "cancel".into(),
        job,
        at_ms: crate::envelope::now_ms(),
        actor: actor.to_owned(),
        reason: reason.map(str::to_owned),
    };
    let body = rmp_serde::to_vec_named(&record).map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(CONTROL_SCHEMA.into());
    broker.publisher().await?.publish("", &names.control(), &body, props).await
}

/// The jobs cancelled so far, shared by a worker's sessions.
#[derive(Debug, Clone, Default)]
pub struct Cancellations {
    jobs: Arc<Mutex<HashSet<Uuid>>>,
}

impl Cancellations {
    /// Whether `job` is cancelled.
    pub fn contains(&self, job: &Uuid) -> bool {
        self.jobs.lock().map(|j| j.contains(job)).unwrap_or(false)
    }

    fn insert(&self, job: Uuid) {
        if let Ok(mut j) = self.jobs.lock() {
            j.insert(job);
        }
    }

    /// Follows `{ns}.control` from its first record on, on a channel of its own, until the
    /// connection ends or the returned task is aborted.
    pub async fn follow(&self, broker: &Broker, names: &Names) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
        let ch = broker.channel().await?;
        ch.basic_qos(100, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
        let mut consumer = ch
            .basic_consume(names.control().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
            .await
            .map_err(BrokerError::amqp("basic.consume control"))?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                match rmp_serde::from_slice::<ControlRecord>(&delivery.data) {
                    Ok(r) if r.kind == "cancel" => this.insert(r.job),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable control record; ignored"),
                }
            }
        }))
    }
}
