//! Job rows at scale: what a list of jobs shows (state, step, time taken, the error), kept per
//! job in a compact state that takes events one at a time, in any order, and always equals what
//! the full fold ([`history::fold`](crate::history::fold)) says of the same events. A list of a
//! million jobs needs no [`JobView`] of each: `warren jobs` folds its window into
//! [`JobRows`], and the console keeps one live ([`JobRows::push`] as events arrive).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use serde::Serialize;
use uuid::Uuid;
use warren::{EventKind, JobEvent, events::OperatorAction};

use crate::history::{JobState, JobView, uuid_time_ms};

/// A job as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    /// The job id.
    pub job: Uuid,
    /// Its pipeline.
    pub pipeline: Arc<str>,
    /// Where it is.
    pub state: JobState,
    /// The step it is at (or ended at, or died at).
    pub step: Arc<str>,
    /// When it was submitted (the job id's time), else its first event.
    pub submitted_ms: u64,
    /// Submission to last event, once it is done, dead or cancelled.
    pub duration_ms: Option<u64>,
    /// The error of the first message that lies dead.
    pub error: Option<String>,
}

impl JobRow {
    /// The row of a job folded whole.
    pub fn of(view: &JobView) -> Self {
        JobRow {
            job: view.job,
            pipeline: view.pipeline.as_str().into(),
            state: view.state,
            step: view.step.as_str().into(),
            submitted_ms: view.submitted_ms,
            duration_ms: view.duration_ms,
            error: view.dead.first().map(|d| d.error.clone()),
        }
    }
}

/// Where an event falls in the fold's order: by time, then by arrival (the fold sorts stably),
/// packed in one word: the time in the upper 44 bits (milliseconds until the year 2527), the
/// arrival in the lower 20 (a job's millionth event and later tie, and keep arriving last).
type Key = u64;

fn key(at_ms: u64, arrival: u32) -> Key {
    (at_ms.min((1 << 44) - 1) << 20) | u64::from(arrival.min((1 << 20) - 1))
}

/// A name (step, pipeline) interned once per fold.
type Name = u16;

/// A step: its name, when its first event was, and when that event says it started.
#[derive(Debug, Clone)]
struct StepState {
    first: Key,
    first_ms: u64,
    step: Name,
}

/// A message of a job: its step, when it first started, the last event that set its outcome
/// (and whether that was a death: its error is in [`JobDigest::errors`]).
#[derive(Debug, Clone)]
struct BranchState {
    message_id: Uuid,
    started_ms: u64,
    last: Key,
    step: u16,
    dead: bool,
}

/// One job, compactly: what its row needs, and what later events need to change it exactly
/// (a few hundred bytes for a job of five steps).
#[derive(Debug, Clone)]
pub struct JobDigest {
    job: Uuid,
    first: Key,
    first_ms: u64,
    last_ms: u64,
    /// The last event that is not a report: the step a running job is at.
    latest: Key,
    arrivals: u32,
    pipeline: Name,
    latest_step: Name,
    done: bool,
    cancelled: bool,
    steps: Vec<StepState>,
    branches: Vec<BranchState>,
    /// The errors of the dead branches, by branch.
    errors: Vec<(u32, Box<str>)>,
}

/// Appends to a vector that is mostly short and never shrinks: grown one by one up to 8, so a
/// job of five steps holds five, not eight.
fn push_tight<T>(v: &mut Vec<T>, item: T) {
    if v.len() < 8 {
        v.reserve_exact(1);
    }
    v.push(item);
}

impl JobDigest {
    fn new(job: Uuid) -> Self {
        JobDigest {
            job,
            first: Key::MAX,
            first_ms: 0,
            last_ms: 0,
            latest: 0,
            arrivals: 0,
            pipeline: 0,
            latest_step: 0,
            done: false,
            cancelled: false,
            steps: Vec::new(),
            branches: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// When its last event was.
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// When it was submitted: its id's time, else its first event's.
    pub fn submitted_ms(&self) -> u64 {
        uuid_time_ms(&self.job).unwrap_or(self.first_ms)
    }

    fn push(&mut self, e: &JobEvent, names: &mut Names, cancel_ids: &HashSet<String>) {
        let key = key(e.at_ms, self.arrivals);
        self.arrivals = self.arrivals.saturating_add(1);
        let started = e.started_at_ms();
        if key < self.first {
            self.first = key;
            self.first_ms = started.unwrap_or(e.at_ms);
            self.pipeline = names.id(&e.pipeline);
        }
        self.last_ms = self.last_ms.max(e.at_ms);
        let name = names.id(&e.step);
        let step = match self.steps.iter().position(|s| s.step == name) {
            Some(i) => {
                let s = &mut self.steps[i];
                if key < s.first {
                    s.first = key;
                    s.first_ms = started.unwrap_or(e.at_ms);
                }
                i
            }
            None => {
                push_tight(&mut self.steps, StepState { step: name, first: key, first_ms: started.unwrap_or(e.at_ms) });
                self.steps.len() - 1
            }
        };
        if e.kind != EventKind::Report && key >= self.latest {
            self.latest = key;
            self.latest_step = name;
        }
        let branch = match self.branches.iter().position(|b| b.message_id == e.message_id) {
            Some(i) => i,
            None => {
                let b = BranchState {
                    message_id: e.message_id,
                    started_ms: u64::MAX,
                    last: 0,
                    step: u16::try_from(step).unwrap_or(u16::MAX),
                    dead: false,
                };
                push_tight(&mut self.branches, b);
                if cancel_ids.contains(&e.message_id.to_string()) {
                    self.cancelled = true;
                }
                self.branches.len() - 1
            }
        };
        if e.kind == EventKind::Report {
            return;
        }
        let b = &mut self.branches[branch];
        if let Some(s) = started {
            b.started_ms = b.started_ms.min(s);
        }
        let sets_outcome = matches!(
            e.kind,
            EventKind::Started | EventKind::Succeeded | EventKind::Retrying | EventKind::Dead | EventKind::Cancelled
        );
        if sets_outcome && key >= b.last {
            b.last = key;
            b.dead = e.kind == EventKind::Dead;
            let at = u32::try_from(branch).unwrap_or(u32::MAX);
            self.errors.retain(|(i, _)| *i != at);
            if b.dead {
                push_tight(&mut self.errors, (at, e.error.as_deref().unwrap_or("").into()));
            }
        }
        self.done |= e.kind == EventKind::Succeeded && e.last_step;
        self.cancelled |= e.kind == EventKind::Cancelled;
    }

    /// Its dead branches in the fold's order: steps in the order they started (by their first
    /// time, the earliest of their first event's and their messages' starts, then by first
    /// arrival), within a step by start and id.
    fn deaths(&self) -> Vec<usize> {
        let mut deaths: Vec<usize> = (0..self.branches.len()).filter(|&i| self.branches[i].dead).collect();
        if deaths.len() > 1 {
            let step_order = |i: usize| {
                let s = &self.steps[i];
                let started = self.branches.iter().filter(|b| usize::from(b.step) == i).map(|b| b.started_ms).min();
                (started.unwrap_or(u64::MAX).min(s.first_ms), s.first)
            };
            deaths.sort_by_cached_key(|&b| {
                let br = &self.branches[b];
                (step_order(usize::from(br.step)), br.started_ms, br.message_id)
            });
        }
        deaths
    }

    /// Where it is.
    pub fn job_state(&self) -> JobState {
        match () {
            () if self.done => JobState::Done,
            () if self.cancelled => JobState::Cancelled,
            () if self.branches.iter().any(|b| b.dead) => JobState::Dead,
            () => JobState::Running,
        }
    }

    fn row(&self, names: &Names) -> JobRow {
        let (state, deaths) = (self.job_state(), self.deaths());
        let step = match (state, deaths.last()) {
            (JobState::Dead, Some(&b)) => self.steps[usize::from(self.branches[b].step)].step,
            _ => self.latest_step,
        };
        let submitted_ms = self.submitted_ms();
        let error_of = |b: usize| {
            self.errors.iter().find(|(i, _)| usize::try_from(*i).is_ok_and(|i| i == b)).map(|(_, e)| e.to_string())
        };
        JobRow {
            job: self.job,
            pipeline: names.name(self.pipeline),
            state,
            step: names.name(step),
            submitted_ms,
            duration_ms: (state != JobState::Running)
                .then(|| self.last_ms.saturating_sub(submitted_ms.min(self.first_ms))),
            error: deaths.first().and_then(|&b| error_of(b)),
        }
    }
}

/// Names interned: each step and pipeline name kept once.
#[derive(Debug, Default)]
struct Names {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, Name>,
}

impl Names {
    fn id(&mut self, name: &Arc<str>) -> Name {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // Past 65,535 names, the last one stands for the rest.
        let id = Name::try_from(self.names.len()).unwrap_or(Name::MAX);
        if usize::from(id) == self.names.len() {
            self.names.push(name.clone());
            self.ids.insert(name.clone(), id);
        }
        id
    }

    fn name(&self, id: Name) -> Arc<str> {
        self.names.get(usize::from(id)).cloned().unwrap_or_else(|| "".into())
    }
}

/// Jobs folded into rows, incrementally: push events as they arrive, in any order and for any
/// jobs; read any job's row at any time. Equals [`JobRow::of`] each job of
/// [`history::fold`](crate::history::fold) over the same events.
#[derive(Debug, Default)]
pub struct JobRows {
    include_rpc: bool,
    jobs: HashMap<Uuid, JobDigest>,
    names: Names,
    /// Ids cancel actions named: a job with a message of such an id is cancelled.
    cancel_ids: HashSet<String>,
}

impl JobRows {
    /// An empty fold; RPC calls (pipeline `rpc`) are left out unless `include_rpc`.
    pub fn new(include_rpc: bool) -> Self {
        let mut names = Names::default();
        names.id(&"".into());
        Self { include_rpc, names, ..Self::default() }
    }

    /// Takes one event; returns the job whose row it may change.
    pub fn push(&mut self, e: &JobEvent) -> Option<Uuid> {
        if e.kind == EventKind::Operator {
            let a = OperatorAction::from_event(e)?;
            if a.action != "cancel" {
                return None;
            }
            if let Some(job) = a.job.and_then(|j| self.jobs.get_mut(&j)) {
                job.cancelled = true;
            }
            for id in &a.ids {
                if let Ok(m) = id.parse::<Uuid>() {
                    for job in self.jobs.values_mut().filter(|j| j.branches.iter().any(|b| b.message_id == m)) {
                        job.cancelled = true;
                    }
                }
            }
            self.cancel_ids.extend(a.ids.iter().cloned());
            if let Some(job) = a.job {
                self.cancel_ids.insert(format!("job:{job}"));
            }
            return a.job;
        }
        if e.job_id.is_nil() || (!self.include_rpc && &*e.pipeline == "rpc") {
            return None;
        }
        let cancel_ids = &self.cancel_ids;
        let job = self.jobs.entry(e.job_id).or_insert_with(|| {
            let mut d = JobDigest::new(e.job_id);
            d.cancelled = cancel_ids.contains(&format!("job:{}", e.job_id));
            d
        });
        job.push(e, &mut self.names, cancel_ids);
        Some(e.job_id)
    }

    /// One job's row.
    pub fn row(&self, job: Uuid) -> Option<JobRow> {
        self.jobs.get(&job).map(|d| d.row(&self.names))
    }

    /// One job's digest: its state and submission time without building its row.
    pub fn digest(&self, job: Uuid) -> Option<&JobDigest> {
        self.jobs.get(&job)
    }

    /// The pipeline a digest's row names (the fold's one copy of the name).
    pub fn pipeline(&self, d: &JobDigest) -> Arc<str> {
        self.names.name(d.pipeline)
    }

    /// The rows of jobs submitted at or after `since_ms`, newest submission first.
    pub fn rows_since(&self, since_ms: u64) -> Vec<JobRow> {
        let mut rows: Vec<JobRow> =
            self.jobs.values().filter(|d| d.submitted_ms() >= since_ms).map(|d| d.row(&self.names)).collect();
        rows.sort_by(|a, b| b.submitted_ms.cmp(&a.submitted_ms).then(b.job.cmp(&a.job)));
        rows
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Forgets jobs submitted before `cutoff_ms` whose last event is older than it too, so a
    /// live fold stays bounded; returns them.
    pub fn forget_before(&mut self, cutoff_ms: u64) -> Vec<Uuid> {
        let mut gone = Vec::new();
        self.jobs.retain(|job, d| {
            let keep = d.submitted_ms() >= cutoff_ms || d.last_ms >= cutoff_ms;
            if !keep {
                gone.push(*job);
            }
            keep
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fold;

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn one_in(&mut self, n: u64) -> bool {
            self.next().is_multiple_of(n)
        }
        fn pick<T: Clone>(&mut self, of: &[T]) -> T {
            of[(self.next() % of.len() as u64) as usize].clone()
        }
    }

    fn random_events(rng: &mut Rng) -> Vec<JobEvent> {
        let jobs: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        // Several messages per step of a job (fan-outs); the first message of a job has its id.
        let messages: Vec<(usize, Uuid, &str)> = (0..12)
            .map(|i| (i % 3, if i < 3 { jobs[i] } else { Uuid::now_v7() }, ["load", "train", "select"][(i / 2) % 3]))
            .collect();
        let kinds = [
            EventKind::Started,
            EventKind::Succeeded,
            EventKind::Retrying,
            EventKind::Dead,
            EventKind::Report,
            EventKind::Cancelled,
            EventKind::Succeeded,
            EventKind::Report,
        ];
        let n = 1 + rng.next() % 20;
        (0..n)
            .map(|_| {
                if rng.one_in(23) {
                    let target = rng.pick(&jobs);
                    let ids =
                        if rng.one_in(2) { vec![target.to_string()] } else { vec![rng.pick(&messages).1.to_string()] };
                    let action = if rng.one_in(3) { "replay" } else { "cancel" };
                    return OperatorAction { action: action.into(), job: Some(target), ids, ..Default::default() }
                        .to_event();
                }
                let (job, message, step) = rng.pick(&messages);
                let kind = rng.pick(&kinds);
                let mut e = JobEvent::new(kind, jobs[job], message, "p".into(), step.into(), "w".into(), 1);
                if rng.one_in(9) {
                    e.pipeline = "rpc".into();
                }
                e.at_ms = 1_000 + rng.next() % 6; // ties, often
                e.duration_ms = (rng.one_in(2)).then(|| rng.next() % 4);
                e.last_step = step == "select" && rng.one_in(2);
                e.error = (rng.one_in(2)).then(|| format!("error {}", rng.next() % 3));
                e
            })
            .collect()
    }

    #[test]
    fn rows_pushed_one_event_at_a_time_equal_the_rows_of_the_full_fold() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..20_000 {
            let events = random_events(&mut rng);
            for include_rpc in [false, true] {
                let mut rows = JobRows::new(include_rpc);
                for e in &events {
                    rows.push(e);
                }
                let want: Vec<JobRow> = fold(&events, include_rpc).iter().map(JobRow::of).collect();
                assert_eq!(rows.rows_since(0), want, "round {round}: {events:#?}");
            }
        }
    }

    #[test]
    fn a_replayed_death_leaves_the_row_and_a_cancel_action_sets_it() {
        let job = Uuid::now_v7();
        let msg = Uuid::now_v7();
        let at = |kind, ms| {
            let mut e = JobEvent::new(kind, job, msg, "p".into(), "count".into(), "w".into(), 1);
            e.at_ms = ms;
            e.error = (kind == EventKind::Dead).then(|| "no data root".to_owned());
            e
        };
        let mut rows = JobRows::new(false);
        rows.push(&at(EventKind::Dead, 10));
        let dead = rows.row(job).expect("a row");
        assert_eq!((dead.state, dead.error.as_deref()), (JobState::Dead, Some("no data root")));
        rows.push(&at(EventKind::Started, 20));
        assert_eq!(rows.row(job).map(|r| (r.state, r.error)), Some((JobState::Running, None)));
        let cancel = OperatorAction {
            action: "cancel".into(),
            job: Some(job),
            ids: vec![job.to_string()],
            ..Default::default()
        };
        rows.push(&cancel.to_event());
        assert_eq!(rows.row(job).map(|r| r.state), Some(JobState::Cancelled));
        rows.forget_before(u64::MAX);
        assert!(rows.is_empty());
    }
}
