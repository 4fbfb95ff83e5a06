//! Which envelope version a worker may write to a step: it follows the registry
//! (`{ns}.registry`, from a minute back) to know each live worker's step and the envelope
//! versions it reads, and checks the step queue's consumer count against them, so a message in
//! the compact envelope goes only to a step whose every consumer reads it. In a rolling upgrade
//! the writers keep writing version 1 until the last old reader of the next step has gone; an
//! unannounced consumer (a client in another language, a test) keeps them at version 1 too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{
    Broker, BrokerError, Names,
    envelope::{ENVELOPE_COMPACT, ENVELOPE_VERSION, now_ms},
    registry::{LIVE_WITHIN, Record, RecordKind},
};

/// How far back the follower starts reading: every live worker says it is alive more often.
const LOOK_BACK: Duration = Duration::from_secs(60);
/// How often the consumer counts of the steps written to are read again (a step newly written
/// to is counted within a second).
const RECOUNT: Duration = Duration::from_secs(10);

/// What a worker writes to the steps after it. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Readers {
    state: Arc<Mutex<State>>,
    /// `envelope_version` pinned by configuration (`None`: decided by the readers).
    pinned: Option<u16>,
    /// The writing worker's step, for its metrics.
    step: Arc<str>,
}

/// A next step's metric handles: `warren_envelope_writes_total{step, to, version}` for each
/// version, and `warren_envelope_version{step, to}`.
#[derive(Debug)]
struct Gauges {
    writes: [metrics::Counter; 2],
    version: metrics::Gauge,
    /// The version a hand-off uses now: decided when what is known changes, not per message.
    current: u16,
}

impl Gauges {
    fn new(step: &str, to: &str) -> Self {
        let writes = |v: &'static str| metrics::counter!("warren_envelope_writes_total", "step" => step.to_owned(), "to" => to.to_owned(), "version" => v);
        Self {
            writes: [writes("1"), writes("2")],
            version: metrics::gauge!("warren_envelope_version", "step" => step.to_owned(), "to" => to.to_owned()),
            current: ENVELOPE_VERSION,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Workers heard of, by id.
    workers: HashMap<String, Seen>,
    /// The follower has read up to the stream's tail once.
    caught_up: bool,
    /// Consumers of each step's queue, when last counted.
    consumers: HashMap<String, u32>,
    /// When each step's queue was last counted.
    counted: HashMap<String, Instant>,
    /// Steps written to (their consumers are counted), with their metrics.
    wanted: HashMap<String, Gauges>,
}

#[derive(Debug)]
struct Seen {
    step: String,
    reads_compact: bool,
    at_ms: u64,
}

impl Readers {
    /// Readers for the writers of worker `step`, with its `envelope_version` pin, if any.
    pub(crate) fn new(step: &str, pinned: Option<u16>) -> Self {
        Self { state: Arc::default(), pinned, step: step.into() }
    }

    /// The envelope version to write to `step` (one hand-off): the compact one only when every
    /// consumer of its queue is a live worker that said it reads it.
    pub(crate) fn envelope_for(&self, step: &str) -> u16 {
        let Ok(mut st) = self.state.lock() else { return self.pinned.unwrap_or(ENVELOPE_VERSION) };
        if !st.wanted.contains_key(step) {
            let mut gauges = Gauges::new(&self.step, step);
            gauges.current = self.pinned.unwrap_or_else(|| decide(&st, step, now_ms()));
            gauges.version.set(f64::from(gauges.current));
            st.wanted.insert(step.to_owned(), gauges);
        }
        let Some(g) = st.wanted.get(step) else { return ENVELOPE_VERSION };
        g.writes[usize::from(g.current == ENVELOPE_COMPACT)].increment(1);
        g.current
    }

    /// Decides again, for each next step, what a hand-off uses (after a registry record, and
    /// every second with the consumer counts, so a worker gone silent drops out in time), and
    /// sets `warren_envelope_version`.
    fn refresh(&self) {
        let Ok(mut st) = self.state.lock() else { return };
        let now = now_ms();
        let decided: Vec<(String, u16)> = st
            .wanted
            .keys()
            .map(|step| (step.clone(), self.pinned.unwrap_or_else(|| decide(&st, step, now))))
            .collect();
        for (step, version) in decided {
            if let Some(g) = st.wanted.get_mut(&step) {
                g.current = version;
                g.version.set(f64::from(version));
            }
        }
    }

    fn note(&self, r: Record) {
        let Ok(mut st) = self.state.lock() else { return };
        match r.kind {
            RecordKind::Mark => {}
            RecordKind::Stopped => {
                st.workers.remove(&r.worker);
            }
            RecordKind::Descriptor | RecordKind::Alive => {
                let reads_compact = r.protocol.as_ref().is_some_and(|p| p.envelope_reads.contains(&ENVELOPE_COMPACT));
                st.workers.insert(r.worker, Seen { step: r.step, reads_compact, at_ms: r.at_ms });
            }
        }
    }

    /// Follows the registry from [`LOOK_BACK`] ago, and counts the consumers of the steps
    /// written to every [`RECOUNT`], until the connection ends or the task is aborted.
    pub(crate) async fn follow(
        &self,
        broker: &Broker,
        names: &Names,
    ) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
        if self.pinned.is_some() {
            return Ok(tokio::spawn(std::future::pending()));
        }
        let ch = broker.channel().await?;
        ch.basic_qos(500, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
        let mut args = FieldTable::default();
        let from_s = now_ms().saturating_sub(LOOK_BACK.as_millis() as u64) / 1000;
        args.insert("x-stream-offset".into(), AMQPValue::Timestamp(from_s));
        let mut consumer = ch
            .basic_consume(names.registry().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
            .await
            .map_err(BrokerError::amqp("basic.consume registry"))?;
        let mut counts = broker.channel().await?;
        let (this, names, broker) = (self.clone(), names.clone(), broker.clone());
        let started = now_ms();
        Ok(tokio::spawn(async move {
            let mut recount = tokio::time::interval(Duration::from_secs(1));
            recount.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut counted_at: Option<Instant> = None;
            loop {
                tokio::select! {
                    d = consumer.next() => {
                        let Some(Ok(d)) = d else { return };
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        if let Ok(r) = serde_json::from_slice::<Record>(&d.data) {
                            // Records written after the follower began mean it has read the past.
                            let now = r.at_ms >= started;
                            this.note(r);
                            if now && let Ok(mut st) = this.state.lock() {
                                st.caught_up = true;
                            }
                            this.refresh();
                        }
                    }
                    _ = recount.tick() => {
                        let due = |s: &State, step: &String| s.counted.get(step).is_none_or(|t| t.elapsed() >= RECOUNT);
                        let wanted: Vec<String> = this
                            .state
                            .lock()
                            .map(|s| s.wanted.keys().filter(|step| due(&s, step)).cloned().collect())
                            .unwrap_or_default();
                        for step in wanted {
                            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                            let queue = names.step_queue(&step);
                            // A missing queue closes the channel: its consumers are then unknown,
                            // and unknown means the plain envelope.
                            let count = counts.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
                            if count.is_err()
                                && let Ok(ch) = broker.channel().await
                            {
                                counts = ch;
                            }
                            if let Ok(mut st) = this.state.lock() {
                                st.counted.insert(step.clone(), Instant::now());
                                if let Ok(q) = count {
                                    st.consumers.insert(step, q.consumer_count());
                                }
                            }
                        }
                        // A quiet registry still has this worker's own heartbeat within a
                        // heartbeat: by then the follower has read the past.
                        if counted_at.is_some_and(|t| t.elapsed() > crate::registry::HEARTBEAT * 2)
                            && let Ok(mut st) = this.state.lock()
                        {
                            st.caught_up = true;
                        }
                        counted_at.get_or_insert_with(Instant::now);
                        this.refresh();
                    }
                }
            }
        }))
    }
}

/// The decision, pure: compact only when the follower has read the registry's recent past, the
/// step's queue was counted, and its consumers are no more than its live workers, all of which
/// read the compact envelope.
fn decide(st: &State, step: &str, now_ms: u64) -> u16 {
    if !st.caught_up {
        return ENVELOPE_VERSION;
    }
    let Some(&consumers) = st.consumers.get(step) else { return ENVELOPE_VERSION };
    let live_ms = LIVE_WITHIN.as_millis() as u64;
    let live: Vec<&Seen> =
        st.workers.values().filter(|w| w.step == step && now_ms.saturating_sub(w.at_ms) <= live_ms).collect();
    if live.is_empty() || consumers == 0 || consumers as usize > live.len() || !live.iter().all(|w| w.reads_compact) {
        return ENVELOPE_VERSION;
    }
    ENVELOPE_COMPACT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(workers: &[(&str, &str, bool, u64)], consumers: u32) -> State {
        State {
            workers: workers
                .iter()
                .map(|(id, step, compact, at)| {
                    (id.to_string(), Seen { step: step.to_string(), reads_compact: *compact, at_ms: *at })
                })
                .collect(),
            caught_up: true,
            consumers: [("b".to_owned(), consumers)].into(),
            counted: HashMap::new(),
            wanted: HashMap::new(),
        }
    }

    #[test]
    fn compact_only_when_every_consumer_is_a_live_reader_of_it() {
        let now = 1_000_000;
        assert_eq!(decide(&state(&[("b1", "b", true, now), ("b2", "b", true, now)], 2), "b", now), ENVELOPE_COMPACT);
        // An old worker among them.
        assert_eq!(decide(&state(&[("b1", "b", true, now), ("b2", "b", false, now)], 2), "b", now), ENVELOPE_VERSION);
        // A consumer that never announced itself (a foreign client).
        assert_eq!(decide(&state(&[("b1", "b", true, now)], 2), "b", now), ENVELOPE_VERSION);
        // An old worker gone silent (killed) no longer holds the writers back once its consumer is gone.
        let st = state(&[("b1", "b", true, now), ("b2", "b", false, now - 60_000)], 1);
        assert_eq!(decide(&st, "b", now), ENVELOPE_COMPACT);
        // Nobody reads the step now: the plain envelope, which whoever comes will read.
        assert_eq!(decide(&state(&[("a1", "a", true, now)], 0), "b", now), ENVELOPE_VERSION);
        // Before the follower has read the registry's recent past.
        let mut st = state(&[("b1", "b", true, now)], 1);
        st.caught_up = false;
        assert_eq!(decide(&st, "b", now), ENVELOPE_VERSION);
        // A step never counted.
        assert_eq!(decide(&state(&[("c1", "c", true, now)], 1), "c", now), ENVELOPE_VERSION);
    }
}
