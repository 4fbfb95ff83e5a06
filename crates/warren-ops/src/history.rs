//! A read model of the events stream: events folded into jobs — state, steps with timings,
//! fan-out branches (trials), reports (metrics, model versions), where and why a job died, and
//! what operators did to it. `warren jobs`, `warren status` and the console read jobs from here.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use warren::{EventKind, JobEvent, events::OperatorAction};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some message of it is on its way.
    Running,
    /// Its last step succeeded.
    Done,
    /// A message of it lies in a dead-letter queue (and was not replayed to success).
    Dead,
    /// It was cancelled.
    Cancelled,
}

impl JobState {
    /// `running`, `done`, `dead`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// One message of a step (a branch of a fan-out, such as a trial).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Branch {
    /// The message id.
    pub message_id: Uuid,
    /// When a worker first started it.
    pub started_ms: Option<u64>,
    /// When it ended (succeeded or died).
    pub ended_ms: Option<u64>,
    /// Handler time of its success.
    pub duration_ms: Option<u64>,
    /// Attempts made.
    pub attempts: u32,
    /// `running`, `succeeded`, `retrying`, `dead`, `cancelled`.
    pub outcome: &'static str,
    /// The error it died of or last retried on.
    pub error: Option<String>,
    /// The worker that ran it last.
    pub worker: String,
}

/// A step of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// The step.
    pub step: String,
    /// First event of it.
    pub first_ms: u64,
    /// Last event of it.
    pub last_ms: u64,
    /// Its messages, in the order they started.
    pub branches: Vec<Branch>,
    /// What it reported (metrics, a registration), in order.
    pub reports: Vec<serde_json::Value>,
}

impl StepView {
    /// Branches that succeeded.
    pub fn succeeded(&self) -> usize {
        self.branches.iter().filter(|b| b.outcome == "succeeded").count()
    }
    /// Branches that are dead.
    pub fn dead(&self) -> usize {
        self.branches.iter().filter(|b| b.outcome == "dead").count()
    }
}

/// Where a job died.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Death {
    /// The step.
    pub step: String,
    /// The dead message (its dead-letter id).
    pub message_id: Uuid,
    /// Why.
    pub error: String,
    /// `permanent`, `exhausted`, `crash`, ...
    pub kind: String,
    /// When.
    pub at_ms: u64,
}

/// A job as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job id.
    pub job: Uuid,
    /// Its pipeline.
    pub pipeline: String,
    /// Where it is.
    pub state: JobState,
    /// When it was submitted (the job id's time), else its first event.
    pub submitted_ms: u64,
    /// Its first event.
    pub first_ms: u64,
    /// Its last event.
    pub last_ms: u64,
    /// Submission to last event, once it is done, dead or cancelled.
    pub duration_ms: Option<u64>,
    /// The step it is at (or ended at).
    pub step: String,
    /// Its steps, in the order they first appeared.
    pub steps: Vec<StepView>,
    /// The messages that lie dead now.
    pub dead: Vec<Death>,
    /// What operators did to it (replay, cancel, rerun, ...).
    pub actions: Vec<OperatorAction>,
    /// Jobs re-run from this one (from `rerun` actions).
    pub reruns: Vec<Uuid>,
    /// The job this one re-runs, if it is a rerun.
    pub rerun_of: Option<Uuid>,
}

/// A UUIDv7's time in milliseconds, if it has one.
pub fn uuid_time_ms(id: &Uuid) -> Option<u64> {
    id.get_timestamp().map(|t| t.to_unix()).map(|(s, n)| s * 1000 + u64::from(n) / 1_000_000)
}

fn report_json(e: &JobEvent) -> Option<serde_json::Value> {
    e.detail.as_ref().and_then(|d| serde_json::to_value(d).ok())
}

/// Folds events (any order, any jobs) into jobs, newest submission first. Operator actions that
/// name a job are attached to it; RPC calls (pipeline `rpc`) and events without a job are left out
/// unless `include_rpc`.
pub fn fold(events: &[JobEvent], include_rpc: bool) -> Vec<JobView> {
    let mut by_job: BTreeMap<Uuid, Vec<&JobEvent>> = BTreeMap::new();
    let mut actions: BTreeMap<Uuid, Vec<OperatorAction>> = BTreeMap::new();
    // Which job each message belongs to: an action on dead letters names their message ids.
    let job_of: std::collections::HashMap<String, Uuid> = events
        .iter()
        .filter(|e| e.kind != EventKind::Operator && !e.job_id.is_nil())
        .map(|e| (e.message_id.to_string(), e.job_id))
        .collect();
    for e in events {
        if e.kind == EventKind::Operator {
            if let Some(a) = OperatorAction::from_event(e) {
                let mut jobs: std::collections::BTreeSet<Uuid> = a.job.into_iter().collect();
                jobs.extend(a.ids.iter().filter_map(|id| job_of.get(id)));
                // A rerun names the job it was made from.
                if a.action == "rerun" {
                    jobs.extend(a.ids.iter().filter_map(|id| id.parse::<Uuid>().ok()));
                }
                for job in jobs {
                    actions.entry(job).or_default().push(a.clone());
                }
            }
            continue;
        }
        if e.job_id.is_nil() || (!include_rpc && &*e.pipeline == "rpc") {
            continue;
        }
        by_job.entry(e.job_id).or_default().push(e);
    }
    let mut jobs: Vec<JobView> = by_job
        .into_iter()
        .map(|(job, mut evs)| {
            evs.sort_by_key(|e| e.at_ms);
            fold_one(job, &evs, actions.remove(&job).unwrap_or_default())
        })
        .collect();
    jobs.sort_by(|a, b| b.submitted_ms.cmp(&a.submitted_ms).then(b.job.cmp(&a.job)));
    jobs
}

fn fold_one(job: Uuid, evs: &[&JobEvent], actions: Vec<OperatorAction>) -> JobView {
    let first_ms = evs.first().map_or(0, |e| e.started_at_ms().unwrap_or(e.at_ms));
    let last_ms = evs.last().map_or(0, |e| e.at_ms);
    let mut steps: Vec<StepView> = Vec::new();
    // Per message: its branch, and the step it belongs to.
    let mut done = false;
    for e in evs {
        let idx = match steps.iter().position(|s| s.step == *e.step) {
            Some(i) => i,
            None => {
                steps.push(StepView {
                    step: e.step.to_string(),
                    first_ms: e.started_at_ms().unwrap_or(e.at_ms),
                    last_ms: e.at_ms,
                    branches: Vec::new(),
                    reports: Vec::new(),
                });
                steps.len() - 1
            }
        };
        let s = &mut steps[idx];
        s.last_ms = s.last_ms.max(e.at_ms);
        if e.kind == EventKind::Report {
            if let Some(r) = report_json(e) {
                s.reports.push(r);
            }
            continue;
        }
        let b = match s.branches.iter().position(|b| b.message_id == e.message_id) {
            Some(i) => &mut s.branches[i],
            None => {
                s.branches.push(Branch {
                    message_id: e.message_id,
                    started_ms: None,
                    ended_ms: None,
                    duration_ms: None,
                    attempts: 0,
                    outcome: "running",
                    error: None,
                    worker: String::new(),
                });
                let last = s.branches.len() - 1;
                &mut s.branches[last]
            }
        };
        b.attempts = b.attempts.max(e.attempt);
        b.worker = e.worker.to_string();
        if let Some(start) = e.started_at_ms() {
            b.started_ms = Some(b.started_ms.map_or(start, |s| s.min(start)));
        }
        match e.kind {
            EventKind::Started => b.outcome = "running",
            EventKind::Succeeded => {
                b.outcome = "succeeded";
                b.ended_ms = Some(e.at_ms);
                b.duration_ms = e.duration_ms;
                b.error = None;
                done |= e.last_step;
            }
            EventKind::Retrying => {
                b.outcome = "retrying";
                b.error = e.error.clone();
            }
            EventKind::Dead => {
                b.outcome = "dead";
                b.ended_ms = Some(e.at_ms);
                b.error = e.error.clone();
            }
            EventKind::Cancelled => b.outcome = "cancelled",
            _ => {}
        }
    }
    for s in &mut steps {
        s.branches.sort_by_key(|b| (b.started_ms.unwrap_or(u64::MAX), b.message_id));
        s.first_ms = s.branches.iter().filter_map(|b| b.started_ms).min().unwrap_or(s.first_ms).min(s.first_ms);
    }
    // In the order they started: a step's `succeeded` is stamped after its outputs are confirmed,
    // so the next step may report first.
    steps.sort_by_key(|s| s.first_ms);
    let mut dead = Vec::new();
    for s in &steps {
        for b in s.branches.iter().filter(|b| b.outcome == "dead") {
            let at_ms = b.ended_ms.unwrap_or(last_ms);
            let kind = evs
                .iter()
                .rev()
                .find(|e| e.message_id == b.message_id && e.kind == EventKind::Dead)
                .and_then(|e| e.error_kind.clone())
                .unwrap_or_default();
            dead.push(Death {
                step: s.step.clone(),
                message_id: b.message_id,
                error: b.error.clone().unwrap_or_default(),
                kind,
                at_ms,
            });
        }
    }
    let cancelled = evs.iter().any(|e| e.kind == EventKind::Cancelled) || actions.iter().any(|a| a.action == "cancel");
    let state = if done {
        JobState::Done
    } else if cancelled {
        JobState::Cancelled
    } else if !dead.is_empty() {
        JobState::Dead
    } else {
        JobState::Running
    };
    let step = match state {
        JobState::Dead => dead.last().map(|d| d.step.clone()),
        _ => evs.iter().rev().find(|e| e.kind != EventKind::Report).map(|e| e.step.to_string()),
    }
    .unwrap_or_default();
    let submitted_ms = uuid_time_ms(&job).unwrap_or(first_ms);
    let job_text = job.to_string();
    let reruns = actions
        .iter()
        .filter(|a| a.action == "rerun" && a.ids.contains(&job_text))
        .filter_map(|a| a.job)
        .filter(|id| *id != job)
        .collect();
    let rerun_of = actions
        .iter()
        .find(|a| a.action == "rerun" && a.job == Some(job))
        .and_then(|a| a.ids.first())
        .and_then(|id| id.parse().ok());
    JobView {
        job,
        pipeline: evs.first().map(|e| e.pipeline.to_string()).unwrap_or_default(),
        state,
        submitted_ms,
        first_ms,
        last_ms,
        duration_ms: (state != JobState::Running).then(|| last_ms.saturating_sub(submitted_ms.min(first_ms))),
        step,
        steps,
        dead,
        actions,
        reruns,
        rerun_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, job: Uuid, msg: Uuid, step: &str, at_ms: u64) -> JobEvent {
        let mut e = JobEvent::new(kind, job, msg, "p".into(), step.into(), "w".into(), 1);
        e.at_ms = at_ms;
        e
    }

    #[test]
    fn a_job_with_a_fan_out_folds_into_steps_branches_and_a_state() {
        let job = Uuid::now_v7();
        let (a, t1, t2, s) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut ok = event(EventKind::Succeeded, job, a, "tune", 1_000);
        ok.duration_ms = Some(10);
        ok.outputs = 2;
        let mut t1_ok = event(EventKind::Succeeded, job, t1, "train", 1_300);
        t1_ok.duration_ms = Some(200);
        let mut t2_dead = event(EventKind::Dead, job, t2, "train", 1_250);
        t2_dead.error = Some("alpha < 0".into());
        t2_dead.error_kind = Some("permanent".into());
        let events = vec![t1_ok.clone(), ok.clone(), event(EventKind::Started, job, t2, "train", 1_100), t2_dead];
        let jobs = fold(&events, false);
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(j.state, JobState::Dead);
        assert_eq!(j.step, "train");
        assert_eq!(j.steps.iter().map(|s| s.step.as_str()).collect::<Vec<_>>(), ["tune", "train"]);
        let train = &j.steps[1];
        assert_eq!((train.succeeded(), train.dead()), (1, 1));
        assert_eq!(train.branches[0].message_id, t1, "branches in start order (1100 vs 1100-200)");
        assert_eq!(j.dead[0].error, "alpha < 0");

        // The dead trial replayed and the job went on to the end: done.
        let mut again = event(EventKind::Succeeded, job, t2, "train", 2_000);
        again.duration_ms = Some(5);
        let mut last = event(EventKind::Succeeded, job, s, "select", 2_100);
        last.last_step = true;
        let mut all = events;
        all.extend([again, last]);
        let j = &fold(&all, false)[0];
        assert_eq!(j.state, JobState::Done);
        assert!(j.dead.is_empty());
        assert!(j.duration_ms.is_some());
    }

    #[test]
    fn newest_first_and_rpc_left_out() {
        let (old, new, rpc) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut r = event(EventKind::Succeeded, rpc, Uuid::now_v7(), "predict", 5);
        r.pipeline = "rpc".into();
        let events = vec![
            event(EventKind::Started, old, Uuid::now_v7(), "a", 1),
            event(EventKind::Started, new, Uuid::now_v7(), "a", 2),
            r,
        ];
        let jobs = fold(&events, false);
        assert_eq!(jobs.iter().map(|j| j.job).collect::<Vec<_>>(), [new, old]);
        assert_eq!(fold(&events, true).len(), 3);
    }
}
