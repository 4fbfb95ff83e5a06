//! Job events folded into trace spans: one trace per job (its id is the job id, as the W3C
//! `traceparent` Warren derives), a root span for the job, one span per step execution (a
//! message's attempt) under the span of the message that sent it, and a span per operator
//! action. Workers pay nothing for it: `warren traces` builds the spans from the events stream
//! and exports them (OTLP); this module is the fold, free of any transport.
//!
//! A step execution's span is ready once it ended (`succeeded`, `retrying`, `dead`, `cancelled`)
//! and [`SETTLE`] has passed, so the event of the message that sent it, published by another
//! worker's batch, has arrived to name its parent. A job's root span is ready when the job ended
//! (a last step succeeded or a message died, and nothing runs) and has settled too. Each span is
//! handed out once.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;
use warren::events::{EventKind, JobEvent, OperatorAction};

/// How long after a span ended it is handed out: the skew between workers' event batches.
pub const SETTLE: u64 = 2_000;

/// How long a job is remembered after its last event (later events, a replay an hour on, still
/// find their parents while it is).
pub const RETAIN: u64 = 6 * 3600 * 1000;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A flag.
    Bool(bool),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace: the job id.
    pub trace_id: Uuid,
    /// The span's id (never zero).
    pub span_id: u64,
    /// The enclosing span; `None` for the job's root.
    pub parent: Option<u64>,
    /// `{step}`, `job {pipeline}` or `operator {action}`.
    pub name: String,
    /// The step the span ran in (empty for the root and operator actions): the service it shows under.
    pub step: String,
    /// Start and end, milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// See `start_ms`.
    pub end_ms: u64,
    /// Attributes: `warren.job`, `warren.step`, `warren.outcome`, ...
    pub attributes: Vec<(&'static str, Value)>,
    /// The error, when the span failed (`retrying`, `dead`).
    pub error: Option<String>,
    /// Spans of other traces (or of this one) it follows from: a rerun's job, a replay.
    pub links: Vec<(Uuid, u64)>,
}

/// A span id from a name's bytes within a trace: the first 8 bytes of a UUIDv5, never zero.
fn span_id(of: Uuid, what: &[u8]) -> u64 {
    let bytes = Uuid::new_v5(&of, what).into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(id).max(1)
}

/// The span id of a message's attempt.
pub fn attempt_span(message_id: Uuid, attempt: u32) -> u64 {
    span_id(message_id, &attempt.to_be_bytes())
}

/// The span id of a job's root.
pub fn root_span(job_id: Uuid) -> u64 {
    span_id(job_id, b"job")
}

/// One attempt of one message, as its events tell it.
#[derive(Debug, Default, Clone)]
struct Attempt {
    step: String,
    worker: String,
    start_ms: Option<u64>,
    /// The event that ended it.
    end: Option<(EventKind, u64)>,
    error: Option<String>,
    error_kind: Option<String>,
    delivery_count: u32,
    outputs: u32,
    last_step: bool,
    reports: usize,
    first_ms: u64,
}

#[derive(Debug, Default)]
struct JobTrace {
    pipeline: String,
    attempts: BTreeMap<(Uuid, u32), Attempt>,
    causation: HashMap<Uuid, Uuid>,
    actions: Vec<(u64, OperatorAction, u64)>,
    first_ms: u64,
    last_ms: u64,
    /// When this fold last heard of the job (its clock, not the events').
    seen_ms: u64,
    handed: HashSet<u64>,
    /// The jobs a rerun made it from.
    rerun_of: Vec<Uuid>,
}

impl JobTrace {
    fn running(&self) -> bool {
        self.attempts.values().any(|a| a.end.is_none())
    }

    fn ended(&self) -> Option<(&'static str, u64)> {
        if self.running() {
            return None;
        }
        let dead = self.attempts.values().any(|a| matches!(a.end, Some((EventKind::Dead, _))));
        let cancelled = self.attempts.values().any(|a| matches!(a.end, Some((EventKind::Cancelled, _))));
        let done = self.attempts.values().any(|a| a.last_step && matches!(a.end, Some((EventKind::Succeeded, _))));
        let state = if dead {
            "dead"
        } else if cancelled {
            "cancelled"
        } else if done {
            "done"
        } else {
            return None;
        };
        Some((state, self.last_ms))
    }

    /// The span a message's attempts hang under: the attempt of the causing message that
    /// succeeded (else its last), or the job's root.
    fn parent_of(&self, job: Uuid, message: Uuid) -> u64 {
        let Some(cause) = self.causation.get(&message) else { return root_span(job) };
        let attempts = self.attempts.range((*cause, 0)..=(*cause, u32::MAX));
        let mut last = None;
        for ((_, n), a) in attempts {
            if matches!(a.end, Some((EventKind::Succeeded, _))) {
                return attempt_span(*cause, *n);
            }
            last = Some(*n);
        }
        attempt_span(*cause, last.unwrap_or(1))
    }
}

/// The events stream folded into spans. Push events in any order; take what is ready.
#[derive(Debug, Default)]
pub struct Tracer {
    jobs: HashMap<Uuid, JobTrace>,
}

impl Tracer {
    /// An empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs remembered now.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Takes one event, heard at `now_ms` (this process's clock).
    pub fn push(&mut self, e: &JobEvent, now_ms: u64) {
        if e.kind == EventKind::Operator {
            let Some(action) = OperatorAction::from_event(e) else { return };
            let Some(job) = action.job.filter(|j| !j.is_nil()) else { return };
            let trace = self.jobs.entry(job).or_default();
            trace.seen_ms = now_ms;
            if action.action == "rerun" {
                trace.rerun_of.extend(action.ids.iter().filter_map(|id| id.parse::<Uuid>().ok()));
            }
            let id = span_id(job, format!("operator-{}-{}", action.action, e.at_ms).as_bytes());
            trace.actions.push((e.at_ms, action, id));
            return;
        }
        if e.job_id.is_nil() || e.message_id.is_nil() {
            return;
        }
        let trace = self.jobs.entry(e.job_id).or_default();
        trace.seen_ms = now_ms;
        if trace.pipeline.is_empty() {
            trace.pipeline = e.pipeline.to_string();
        }
        trace.first_ms = if trace.first_ms == 0 { e.at_ms } else { trace.first_ms.min(e.at_ms) };
        trace.last_ms = trace.last_ms.max(e.at_ms);
        if let Some(cause) = e.causation_id {
            trace.causation.insert(e.message_id, cause);
        }
        let a = trace.attempts.entry((e.message_id, e.attempt.max(1))).or_default();
        if a.step.is_empty() {
            a.step = e.step.to_string();
            a.first_ms = e.at_ms;
        }
        a.worker = e.worker.to_string();
        a.delivery_count = a.delivery_count.max(e.delivery_count);
        if let Some(start) = e.started_at_ms() {
            a.start_ms = Some(a.start_ms.map_or(start, |s| s.min(start)));
        }
        match e.kind {
            EventKind::Succeeded | EventKind::Retrying | EventKind::Dead | EventKind::Cancelled => {
                a.end = Some((e.kind, e.at_ms));
                a.outputs = e.outputs;
                a.last_step = e.last_step;
                if e.error.is_some() {
                    a.error = e.error.clone();
                }
                a.error_kind = e.error_kind.clone().or(a.error_kind.take());
            }
            EventKind::Report => a.reports += 1,
            _ => {}
        }
    }

    /// The spans ready at `now_ms` (this process's clock), each once; forgets jobs not heard of
    /// for [`RETAIN`].
    pub fn ready(&mut self, now_ms: u64) -> Vec<Span> {
        let mut out = Vec::new();
        for (job, trace) in &mut self.jobs {
            let settled = now_ms.saturating_sub(trace.seen_ms) >= SETTLE;
            let root = root_span(*job);
            for ((message, n), a) in &trace.attempts {
                let Some((kind, end_ms)) = a.end else { continue };
                let id = attempt_span(*message, *n);
                if !settled || trace.handed.contains(&id) {
                    continue;
                }
                let mut attributes = vec![
                    ("warren.job", Value::Text(job.to_string())),
                    ("warren.pipeline", Value::Text(trace.pipeline.clone())),
                    ("warren.step", Value::Text(a.step.clone())),
                    ("warren.outcome", Value::Text(kind.as_str().to_owned())),
                    ("warren.message", Value::Text(message.to_string())),
                    ("warren.attempt", Value::Int(i64::from(*n))),
                    ("warren.worker", Value::Text(a.worker.clone())),
                ];
                if a.delivery_count > 0 {
                    attributes.push(("warren.delivery_count", Value::Int(i64::from(a.delivery_count))));
                }
                if a.outputs > 0 {
                    attributes.push(("warren.outputs", Value::Int(i64::from(a.outputs))));
                }
                if a.last_step {
                    attributes.push(("warren.last_step", Value::Bool(true)));
                }
                if let Some(k) = &a.error_kind {
                    attributes.push(("warren.error_kind", Value::Text(k.clone())));
                }
                let links = trace
                    .actions
                    .iter()
                    .filter(|(at, action, _)| {
                        *at <= a.start_ms.unwrap_or(a.first_ms) && action.ids.iter().any(|i| *i == message.to_string())
                    })
                    .map(|(_, _, span)| (*job, *span))
                    .collect();
                out.push(Span {
                    trace_id: *job,
                    span_id: id,
                    parent: Some(trace.parent_of(*job, *message)),
                    name: a.step.clone(),
                    step: a.step.clone(),
                    start_ms: a.start_ms.unwrap_or(a.first_ms).min(end_ms),
                    end_ms,
                    attributes,
                    error: matches!(kind, EventKind::Retrying | EventKind::Dead)
                        .then(|| a.error.clone().unwrap_or_else(|| kind.as_str().to_owned())),
                    links,
                });
                trace.handed.insert(id);
            }
            for (at, action, id) in &trace.actions {
                if !settled || trace.handed.contains(id) {
                    continue;
                }
                let mut attributes = vec![
                    ("warren.job", Value::Text(job.to_string())),
                    ("warren.action", Value::Text(action.action.clone())),
                    ("warren.actor", Value::Text(action.actor.clone())),
                    ("warren.count", Value::Int(action.count as i64)),
                ];
                if let Some(r) = &action.reason {
                    attributes.push(("warren.reason", Value::Text(r.clone())));
                }
                if !action.step.is_empty() {
                    attributes.push(("warren.step", Value::Text(action.step.clone())));
                }
                out.push(Span {
                    trace_id: *job,
                    span_id: *id,
                    parent: Some(root),
                    name: format!("operator {}", action.action),
                    step: String::new(),
                    start_ms: *at,
                    end_ms: *at,
                    attributes,
                    error: None,
                    links: Vec::new(),
                });
                trace.handed.insert(*id);
            }
            if let Some((state, end_ms)) = trace.ended().filter(|_| settled && !trace.handed.contains(&root)) {
                let submitted = crate::history::uuid_time_ms(job).unwrap_or(trace.first_ms);
                out.push(Span {
                    trace_id: *job,
                    span_id: root,
                    parent: None,
                    name: format!("job {}", trace.pipeline),
                    step: String::new(),
                    start_ms: submitted.min(trace.first_ms),
                    end_ms,
                    attributes: vec![
                        ("warren.job", Value::Text(job.to_string())),
                        ("warren.pipeline", Value::Text(trace.pipeline.clone())),
                        ("warren.state", Value::Text(state.to_owned())),
                    ],
                    error: (state == "dead").then(|| "a message of the job was dead-lettered".to_owned()),
                    links: trace.rerun_of.iter().map(|old| (*old, root_span(*old))).collect(),
                });
                trace.handed.insert(root);
            }
        }
        self.jobs.retain(|_, t| now_ms.saturating_sub(t.seen_ms) < RETAIN);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, job: Uuid, msg: Uuid, step: &str, at_ms: u64, attempt: u32) -> JobEvent {
        JobEvent {
            at_ms,
            ..JobEvent::new(kind, job, msg, "ml".into(), step.into(), format!("{step}@h#1").into(), attempt)
        }
    }

    #[test]
    fn a_job_is_one_trace_with_trials_under_tune_and_retries_as_spans_of_their_own() {
        let job = Uuid::now_v7();
        let (tune, t1, t2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut tracer = Tracer::new();
        let mut events = vec![
            ev(EventKind::Started, job, tune, "tune", 1_000, 1),
            JobEvent { outputs: 2, duration_ms: Some(10), ..ev(EventKind::Succeeded, job, tune, "tune", 1_010, 1) },
            JobEvent { causation_id: Some(tune), ..ev(EventKind::Started, job, t1, "train", 1_020, 1) },
            JobEvent { error: Some("flaky".into()), ..ev(EventKind::Retrying, job, t1, "train", 1_030, 1) },
            ev(EventKind::Started, job, t1, "train", 1_500, 2),
            JobEvent { last_step: true, duration_ms: Some(50), ..ev(EventKind::Succeeded, job, t1, "train", 1_550, 2) },
            JobEvent {
                causation_id: Some(tune),
                last_step: true,
                duration_ms: Some(30),
                ..ev(EventKind::Succeeded, job, t2, "train", 1_060, 1)
            },
        ];
        // The trial's start arrives before tune's success (another worker's batch): still nested.
        events.swap(1, 2);
        for e in &events {
            tracer.push(e, 5_000);
        }
        assert!(tracer.ready(5_500).is_empty(), "nothing before the events settle");
        let spans = tracer.ready(8_000);
        assert_eq!(spans.len(), 5, "{spans:#?}");
        assert!(spans.iter().all(|s| s.trace_id == job));
        let tune_span = attempt_span(tune, 1);
        let trials: Vec<&Span> = spans.iter().filter(|s| s.step == "train").collect();
        assert_eq!(trials.len(), 3, "two trials, one of them tried twice");
        assert!(trials.iter().all(|s| s.parent == Some(tune_span)), "trials under tune");
        let retried = trials.iter().find(|s| s.span_id == attempt_span(t1, 1)).expect("attempt 1");
        assert_eq!(retried.error.as_deref(), Some("flaky"));
        assert!(retried.attributes.contains(&("warren.outcome", Value::Text("retrying".into()))));
        let root = spans.iter().find(|s| s.parent.is_none()).expect("the job's root");
        assert_eq!((root.span_id, root.end_ms), (root_span(job), 1_550));
        assert!(root.attributes.contains(&("warren.state", Value::Text("done".into()))));
        assert_eq!(spans.iter().find(|s| s.step == "tune").and_then(|s| s.parent), Some(root.span_id));
        assert!(tracer.ready(9_000).is_empty(), "each span handed out once");
    }

    #[test]
    fn replays_and_reruns_are_linked_and_a_running_job_has_no_root_yet() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let msg = Uuid::now_v7();
        let mut tracer = Tracer::new();
        tracer
            .push(&JobEvent { error: Some("boom".into()), ..ev(EventKind::Dead, old, msg, "train", 1_000, 1) }, 1_000);
        let replay = OperatorAction {
            action: "replay".into(),
            actor: "ops@h".into(),
            job: Some(old),
            count: 1,
            ids: vec![msg.to_string()],
            ..OperatorAction::default()
        };
        tracer.push(&JobEvent { at_ms: 2_000, ..replay.to_event() }, 2_000);
        tracer.push(&ev(EventKind::Started, old, msg, "train", 2_100, 2), 2_100);
        let first = tracer.ready(10_000);
        assert!(first.iter().all(|s| s.parent.is_some()), "attempt 2 runs: the job has not ended again");
        let op = first.iter().find(|s| s.name == "operator replay").expect("the replay's span");
        tracer.push(&JobEvent { last_step: true, ..ev(EventKind::Succeeded, old, msg, "train", 2_200, 2) }, 10_000);
        let rerun = OperatorAction {
            action: "rerun".into(),
            actor: "ops@h".into(),
            job: Some(new),
            ids: vec![old.to_string()],
            ..OperatorAction::default()
        };
        tracer.push(&JobEvent { at_ms: 3_000, ..rerun.to_event() }, 10_000);
        tracer.push(
            &JobEvent { last_step: true, ..ev(EventKind::Succeeded, new, Uuid::now_v7(), "train", 3_100, 1) },
            10_000,
        );
        let later = tracer.ready(20_000);
        let second = later.iter().find(|s| s.span_id == attempt_span(msg, 2)).expect("the replayed attempt");
        assert_eq!(second.links, vec![(old, op.span_id)], "the replayed attempt follows from the replay");
        let new_root = later.iter().find(|s| s.trace_id == new && s.parent.is_none()).expect("the rerun's root");
        assert_eq!(new_root.links, vec![(old, root_span(old))], "a rerun links to the job it was made from");
    }
}
