//! Queue counts per step: ready messages, consumers and dead letters over AMQP; unacked counts
//! (which AMQP does not tell) from `rabbitmqctl` where it works, else from RabbitMQ's management
//! API at the broker's host (see [`crate::management`]), else unknown.

use std::collections::BTreeMap;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use warren::{Broker, registry::Registry};

use crate::{Operator, OpsError};

/// One step's queues.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueRow {
    /// The step.
    pub step: String,
    /// Messages ready in its queue.
    pub ready: u32,
    /// Messages delivered and not acked yet, where known.
    pub unacked: Option<u64>,
    /// Consumers of its queue.
    pub consumers: u32,
    /// Messages in its dead-letter queue.
    pub dead: u32,
}

/// Ready messages and consumers of a queue (a passive declare), if it exists.
pub async fn counts(broker: &Broker, queue: &str) -> Option<(u32, u32)> {
    let ch = broker.channel().await.ok()?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare(queue.into(), passive, FieldTable::default()).await.ok();
    let _ = ch.close(200, "counted".into()).await;
    q.map(|q| (q.message_count(), q.consumer_count()))
}

/// Unacked counts per queue name from `rabbitmqctl list_queues`, empty where it does not work.
async fn from_rabbitmqctl() -> BTreeMap<String, u64> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-s", "name", "messages_unacknowledged"])
        .output()
        .await;
    let Ok(out) = out else { return BTreeMap::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

impl Operator {
    /// Unacked counts per queue name: `rabbitmqctl` where it answers, else the management API.
    async fn unacked(&self) -> BTreeMap<String, u64> {
        let local = from_rabbitmqctl().await;
        if !local.is_empty() {
            return local;
        }
        match self.amqp_url() {
            Some(url) => crate::management::unacked(url).await.unwrap_or_default(),
            None => BTreeMap::new(),
        }
    }

    /// Per registered step (and each of `extra`) whose queue exists: its counts.
    pub async fn queues(&self, extra: &[String]) -> Result<Vec<QueueRow>, OpsError> {
        let registry = self.registry().await?;
        Ok(self.queues_of(&registry, extra, true).await)
    }

    /// The counts of `registry`'s steps and `extra`; unacked ones only when `unacked` (they cost
    /// a `rabbitmqctl` process or a management API request, too much for a sampler).
    pub async fn queues_of(&self, registry: &Registry, extra: &[String], unacked: bool) -> Vec<QueueRow> {
        let unacked = if unacked { self.unacked().await } else { BTreeMap::new() };
        let steps: std::collections::BTreeSet<String> =
            registry.steps.keys().cloned().chain(extra.iter().cloned()).collect();
        let mut rows = Vec::new();
        for step in steps {
            let queue = self.names().step_queue(&step);
            let Some((ready, consumers)) = counts(self.client().broker(), &queue).await else { continue };
            let dead = counts(self.client().broker(), &self.names().dead_queue(&step)).await.map_or(0, |(n, _)| n);
            rows.push(QueueRow { unacked: unacked.get(&queue).copied(), step, ready, consumers, dead });
        }
        rows
    }
}
