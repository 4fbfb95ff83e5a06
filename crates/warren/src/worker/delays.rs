//! The delay queues a worker publishes retries to, and their upkeep while it runs.
//!
//! Two things keep a retry from being lost in a delay queue (quorum, TTL, dead-lettering at
//! least once back to the step):
//! - its lease: a queue unused for its `x-expires` is deleted with whatever is in it, and
//!   publishing does not count as use; the worker declares each queue it uses again every
//!   [`RETRY_QUEUE_RENEW`] until its last retry there is long due.
//! - its expiry timer: a quorum queue expires messages on a timer that only its leader holds;
//!   a new leader (the old one's node went away) expires nothing until the queue next takes a
//!   command (rabbitmq-server issue #10718), so retries that are due sit there. When a queue the
//!   worker used still holds messages after every retry it put there is due, the worker asks it
//!   for one message (`basic.get`): the queue expires what is due first (dead-lettering it back to
//!   the step). A message it hands out anyway (not due yet, or one a quorum queue no longer
//!   expires because it was returned to it once) is sent on to the step by the worker itself, as
//!   dead-lettering would, and then acked: a retry a little early, never one stranded. (Putting it
//!   back would strand it: a returned message is not expired by TTL any more.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lapin::{
    options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions, QueueDeclareOptions},
    types::FieldTable,
};

use crate::{
    Broker, Declarer, Names, TopologyError,
    topology::{RETRY_QUEUE_IDLE, RETRY_QUEUE_RENEW},
};

/// How often the upkeep looks at the queues.
const EVERY: Duration = Duration::from_secs(10);
/// How long after its last retry there is due a queue that still holds messages is nudged.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Use {
    step: String,
    delay_ms: u64,
    declared: Option<Instant>,
    published: Instant,
}

/// The delay queues a worker uses, shared by its sessions (a reconnect keeps them).
#[derive(Debug, Clone, Default)]
pub(super) struct DelayQueues {
    used: Arc<Mutex<HashMap<String, Use>>>,
}

impl DelayQueues {
    /// The delay queue for retries of `step` after `delay_ms`, declared when it is not known to
    /// be current (or when `fresh`: a publish to it came back, it expired).
    pub(super) async fn queue(
        &self,
        broker: &Broker,
        names: &Names,
        step: &str,
        delay_ms: u64,
        fresh: bool,
    ) -> Result<String, TopologyError> {
        let name = names.retry_queue(step, delay_ms);
        let current = self
            .used
            .lock()
            .is_ok_and(|u| u.get(&name).and_then(|q| q.declared).is_some_and(|at| at.elapsed() < RETRY_QUEUE_RENEW));
        if current && !fresh {
            return Ok(name);
        }
        let at = Instant::now();
        Declarer::new(broker, names).retry_queue(step, delay_ms).await?;
        if let Ok(mut u) = self.used.lock() {
            let entry = u.entry(name.clone()).or_insert_with(|| Use {
                step: step.to_owned(),
                delay_ms,
                declared: None,
                published: at,
            });
            entry.declared = Some(at);
        }
        Ok(name)
    }

    /// Notes that a retry went to `queue` now.
    pub(super) fn published(&self, queue: &str) {
        if let Ok(mut u) = self.used.lock()
            && let Some(q) = u.get_mut(queue)
        {
            q.published = Instant::now();
        }
    }

    /// Forgets the declarations (a new connection may find a queue gone meanwhile).
    pub(super) fn reconnected(&self) {
        if let Ok(mut u) = self.used.lock() {
            u.values_mut().for_each(|q| q.declared = None);
        }
    }

    /// Keeps the leases of the queues in use and nudges those whose due retries are stuck, every
    /// [`EVERY`], for as long as the session lasts (the caller aborts it).
    pub(super) async fn upkeep(self, broker: Broker, names: Names) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now: Vec<(String, Use)> = match self.used.lock() {
                Ok(mut u) => {
                    u.retain(|_, q| q.published.elapsed() < Duration::from_millis(q.delay_ms) + RETRY_QUEUE_IDLE);
                    u.iter().map(|(n, q)| (n.clone(), q.clone())).collect()
                }
                Err(_) => return,
            };
            for (name, q) in now {
                if q.declared.is_none_or(|at| at.elapsed() >= RETRY_QUEUE_RENEW)
                    && let Err(e) = self.queue(&broker, &names, &q.step, q.delay_ms, true).await
                {
                    tracing::warn!(queue = %name, error = %e, "cannot renew a delay queue's lease");
                    continue;
                }
                if q.published.elapsed() >= Duration::from_millis(q.delay_ms) + GRACE {
                    nudge(&broker, &names, &q.step, &name).await;
                }
            }
        }
    }
}

/// Asks a delay queue that should hold nothing due for one message, so that it expires what is
/// due (see the module's notes); a message it hands out is sent on to `step` and acked.
async fn nudge(broker: &Broker, names: &Names, step: &str, queue: &str) {
    let Ok(ch) = broker.channel().await else { return };
    let passive = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    let held = match ch.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(q) => q.message_count(),
        Err(_) => return,
    };
    if held > 0 {
        match ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await {
            Ok(Some(m)) => {
                let d = &m.delivery;
                let sent = match broker.publisher().await {
                    Ok(p) => p.publish(&names.steps_exchange(), step, &d.data, d.properties.clone()).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        tracing::info!(
                            queue,
                            held,
                            "a delay queue handed out a retry its leader did not expire; sent it on to the step"
                        );
                    }
                    Err(e) => {
                        // Back into the queue: the next round sends it on.
                        let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
                        tracing::warn!(queue, error = %e, "cannot send a held retry on; it stays in its delay queue");
                    }
                }
            }
            Ok(None) => {
                tracing::info!(
                    queue,
                    held,
                    "a delay queue held retries that were due (a new leader had not expired them); sent them on"
                );
            }
            Err(e) => tracing::debug!(queue, error = %e, "cannot nudge a delay queue"),
        }
    }
    if ch.status().connected() {
        let _ = ch.close(200, "delay queue upkeep".into()).await;
    }
}
