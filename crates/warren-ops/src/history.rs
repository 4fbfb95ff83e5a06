//! A read model of the events stream: events folded into jobs — state, steps with timings,
//! fan-out branches (trials), reports (metrics, model versions), where and why a job died, and
//! what operators did to it. `warren jobs`, `warren status` and the console read jobs from here.

use std::collections::{BTreeMap, HashMap};

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
    /// What it reported (a trial: its algorithm, hyperparameters and validation score).
    pub reports: Vec<serde_json::Value>,
}

impl Branch {
    /// The trial this branch trained, if it reported one: `(trial number, its report)`.
    pub fn trial(&self) -> Option<(u64, &serde_json::Value)> {
        self.reports.iter().find_map(|r| Some((r.get("trial")?.as_u64()?, r)))
    }
}

/// A hyperparameter as a spec would spell it: `100`, not `100.0`; text without quotes.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A trial's report as a person reads it: `logistic alpha=0.1 max_iterations=100 · accuracy
/// 0.9667`.
pub fn trial_summary(report: &serde_json::Value) -> String {
    let algorithm = report["algorithm"].as_str().unwrap_or("?");
    let params: Vec<String> = report["hyperparams"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect())
        .unwrap_or_default();
    let score = report["validation_score"].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let metric = report["metric"].as_str().unwrap_or("score");
    let sep = if params.is_empty() { "" } else { " " };
    format!("{algorithm}{sep}{} · {metric} {score}", params.join(" "))
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
    /// The trial a gathering step (select) chose, as it reported it.
    pub selected_trial: Option<u64>,
}

/// Per step, successes and deaths per minute, oldest first: what the console's charts draw.
pub type Rates = BTreeMap<String, (Vec<u64>, Vec<u64>)>;

/// Per step, how many messages succeeded and how many died in each of the last `minutes` whole
/// minutes before `now_ms` (oldest first): what the console's charts draw.
pub fn per_minute(events: &[JobEvent], now_ms: u64, minutes: usize) -> Rates {
    let start = (now_ms / 60_000).saturating_sub(minutes as u64 - 1) * 60_000;
    let mut out: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.at_ms >= start && e.at_ms <= now_ms && !e.step.is_empty()) {
        let minute = ((e.at_ms - start) / 60_000) as usize;
        let (done, died) = out.entry(e.step.to_string()).or_insert_with(|| (vec![0; minutes], vec![0; minutes]));
        match e.kind {
            EventKind::Succeeded => done[minute.min(minutes - 1)] += 1,
            EventKind::Dead => died[minute.min(minutes - 1)] += 1,
            _ => {}
        }
    }
    out
}

/// [`per_minute`], kept incrementally: push events as they arrive (any order), read the last
/// minutes at any time. The console keeps one beside its jobs list instead of reading the last
/// hour of the stream for each queues page.
#[derive(Debug, Default)]
pub struct MinuteCounts {
    steps: HashMap<std::sync::Arc<str>, BTreeMap<u64, (u64, u64)>>,
}

impl MinuteCounts {
    /// Takes one event.
    pub fn push(&mut self, e: &JobEvent) {
        if e.step.is_empty() {
            return;
        }
        let minute = self.steps.entry(e.step.clone()).or_default().entry(e.at_ms / 60_000).or_default();
        match e.kind {
            EventKind::Succeeded => minute.0 += 1,
            EventKind::Dead => minute.1 += 1,
            _ => {}
        }
    }

    /// What [`per_minute`] gives over the events pushed, for the minutes up to `now_ms`'s (events
    /// stamped later in that same minute count too).
    pub fn last(&self, now_ms: u64, minutes: usize) -> Rates {
        let last = now_ms / 60_000;
        let first = last.saturating_sub(minutes as u64 - 1);
        let mut out = BTreeMap::new();
        for (step, counts) in &self.steps {
            let mut range = counts.range(first..=last).peekable();
            if range.peek().is_none() {
                continue;
            }
            let (mut done, mut died) = (vec![0; minutes], vec![0; minutes]);
            for (m, (d, x)) in range {
                let i = ((m - first) as usize).min(minutes - 1);
                done[i] += d;
                died[i] += x;
            }
            out.insert(step.to_string(), (done, died));
        }
        out
    }

    /// Forgets the minutes before `cutoff_ms`'s.
    pub fn forget_before(&mut self, cutoff_ms: u64) {
        let keep = cutoff_ms / 60_000;
        for counts in self.steps.values_mut() {
            *counts = counts.split_off(&keep);
        }
        self.steps.retain(|_, c| !c.is_empty());
    }
}

/// A UUIDv7's time in milliseconds, if it has one.
pub fn uuid_time_ms(id: &Uuid) -> Option<u64> {
    id.get_timestamp().map(|t| t.to_unix()).map(|(s, n)| s * 1000 + u64::from(n) / 1_000_000)
}

fn report_json(e: &JobEvent) -> Option<serde_json::Value> {
    e.detail.as_ref().and_then(|d| serde_json::to_value(d).ok())
}

/// The events stream folded into jobs, incrementally: push events as they arrive, in any order
/// and for any jobs, and read a job's view at any time. `warren jobs` (also `--follow`),
/// `warren status` and the console read jobs from here.
#[derive(Debug, Default)]
pub struct Jobs {
    include_rpc: bool,
    events: BTreeMap<Uuid, Vec<JobEvent>>,
    actions: Vec<OperatorAction>,
    /// Which job each message belongs to: an action on dead letters names their message ids.
    job_of: HashMap<String, Uuid>,
}

impl Jobs {
    /// An empty fold; RPC calls (pipeline `rpc`) are left out unless `include_rpc`.
    pub fn new(include_rpc: bool) -> Self {
        Self { include_rpc, ..Self::default() }
    }

    /// Takes one event; returns the jobs whose view it may change.
    pub fn push(&mut self, e: JobEvent) -> Vec<Uuid> {
        if e.kind == EventKind::Operator {
            let Some(a) = OperatorAction::from_event(&e) else { return Vec::new() };
            let jobs = self.jobs_of(&a);
            self.actions.push(a);
            return jobs;
        }
        if e.job_id.is_nil() || (!self.include_rpc && &*e.pipeline == "rpc") {
            return Vec::new();
        }
        let job = e.job_id;
        self.job_of.insert(e.message_id.to_string(), job);
        self.events.entry(job).or_default().push(e);
        vec![job]
    }

    /// The jobs an action names: its job, the jobs of the messages it names, and for a rerun the
    /// job it was made from.
    fn jobs_of(&self, a: &OperatorAction) -> Vec<Uuid> {
        let mut jobs: std::collections::BTreeSet<Uuid> = a.job.into_iter().collect();
        jobs.extend(a.ids.iter().filter_map(|id| self.job_of.get(id)));
        if a.action == "rerun" {
            jobs.extend(a.ids.iter().filter_map(|id| id.parse::<Uuid>().ok()));
        }
        jobs.into_iter().collect()
    }

    /// One job as its events tell it so far.
    pub fn view(&self, job: Uuid) -> Option<JobView> {
        let mut evs: Vec<&JobEvent> = self.events.get(&job)?.iter().collect();
        evs.sort_by_key(|e| e.at_ms);
        let actions = self.actions.iter().filter(|a| self.jobs_of(a).contains(&job)).cloned().collect();
        Some(fold_one(job, &evs, actions))
    }

    /// Every job, newest submission first.
    pub fn views(&self) -> Vec<JobView> {
        let mut jobs: Vec<JobView> = self.events.keys().filter_map(|j| self.view(*j)).collect();
        jobs.sort_by(|a, b| b.submitted_ms.cmp(&a.submitted_ms).then(b.job.cmp(&a.job)));
        jobs
    }

    /// Forgets jobs whose last event is older than `cutoff_ms`, so a long follow stays bounded.
    pub fn forget_before(&mut self, cutoff_ms: u64) {
        self.events.retain(|_, evs| evs.iter().any(|e| e.at_ms >= cutoff_ms));
        let kept: std::collections::HashSet<Uuid> = self.events.keys().copied().collect();
        self.job_of.retain(|_, job| kept.contains(job));
    }
}

/// Folds events (any order, any jobs) into jobs, newest submission first. Operator actions that
/// name a job are attached to it; RPC calls (pipeline `rpc`) and events without a job are left out
/// unless `include_rpc`.
pub fn fold(events: &[JobEvent], include_rpc: bool) -> Vec<JobView> {
    let mut jobs = Jobs::new(include_rpc);
    for e in events {
        jobs.push(e.clone());
    }
    jobs.views()
}

/// The step `e` belongs to, added when it is new.
fn step_of<'a>(steps: &'a mut Vec<StepView>, e: &JobEvent) -> &'a mut StepView {
    let i = steps.iter().position(|s| s.step == *e.step).unwrap_or_else(|| {
        steps.push(StepView {
            step: e.step.to_string(),
            first_ms: e.started_at_ms().unwrap_or(e.at_ms),
            last_ms: e.at_ms,
            branches: Vec::new(),
            reports: Vec::new(),
        });
        steps.len() - 1
    });
    &mut steps[i]
}

/// The branch (message) `e` belongs to, added when it is new.
fn branch_of<'a>(step: &'a mut StepView, e: &JobEvent) -> &'a mut Branch {
    let i = step.branches.iter().position(|b| b.message_id == e.message_id).unwrap_or_else(|| {
        step.branches.push(Branch {
            message_id: e.message_id,
            started_ms: None,
            ended_ms: None,
            duration_ms: None,
            attempts: 0,
            outcome: "running",
            error: None,
            worker: String::new(),
            reports: Vec::new(),
        });
        step.branches.len() - 1
    });
    &mut step.branches[i]
}

/// Applies `e` to its branch; true when it is the success of the job's last step.
fn apply(b: &mut Branch, e: &JobEvent) -> bool {
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
            return e.last_step;
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
    false
}

/// The steps of a job's events, in the order they started, and whether its last step succeeded.
fn steps_of(evs: &[&JobEvent]) -> (Vec<StepView>, bool) {
    let mut steps: Vec<StepView> = Vec::new();
    let mut done = false;
    for e in evs {
        let s = step_of(&mut steps, e);
        s.last_ms = s.last_ms.max(e.at_ms);
        if e.kind == EventKind::Report {
            let Some(r) = report_json(e) else { continue };
            // The message's own branch keeps it too (a trial's score), without changing its outcome.
            if let Some(b) = s.branches.iter_mut().find(|b| b.message_id == e.message_id) {
                b.reports.push(r.clone());
            } else {
                branch_of(s, e).reports.push(r.clone());
            }
            s.reports.push(r);
            continue;
        }
        done |= apply(branch_of(s, e), e);
    }
    for s in &mut steps {
        s.branches.sort_by_key(|b| (b.started_ms.unwrap_or(u64::MAX), b.message_id));
        s.first_ms = s.branches.iter().filter_map(|b| b.started_ms).min().unwrap_or(s.first_ms).min(s.first_ms);
    }
    // In the order they started: a step's `succeeded` is stamped after its outputs are confirmed,
    // so the next step may report first.
    steps.sort_by_key(|s| s.first_ms);
    (steps, done)
}

/// The messages that lie dead, with the kind of their last death.
fn deaths(steps: &[StepView], evs: &[&JobEvent], last_ms: u64) -> Vec<Death> {
    let kind_of = |id: Uuid| {
        evs.iter()
            .rev()
            .find(|e| e.message_id == id && e.kind == EventKind::Dead)
            .and_then(|e| e.error_kind.clone())
            .unwrap_or_default()
    };
    steps
        .iter()
        .flat_map(|s| s.branches.iter().filter(|b| b.outcome == "dead").map(move |b| (s, b)))
        .map(|(s, b)| Death {
            step: s.step.clone(),
            message_id: b.message_id,
            error: b.error.clone().unwrap_or_default(),
            kind: kind_of(b.message_id),
            at_ms: b.ended_ms.unwrap_or(last_ms),
        })
        .collect()
}

/// The jobs re-run from `job`, and the job `job` re-runs.
fn lineage(job: Uuid, actions: &[OperatorAction]) -> (Vec<Uuid>, Option<Uuid>) {
    let text = job.to_string();
    let reruns = actions
        .iter()
        .filter(|a| a.action == "rerun" && a.ids.contains(&text))
        .filter_map(|a| a.job)
        .filter(|id| *id != job)
        .collect();
    let rerun_of = actions
        .iter()
        .find(|a| a.action == "rerun" && a.job == Some(job))
        .and_then(|a| a.ids.first())
        .and_then(|id| id.parse().ok());
    (reruns, rerun_of)
}

fn fold_one(job: Uuid, evs: &[&JobEvent], actions: Vec<OperatorAction>) -> JobView {
    let first_ms = evs.first().map_or(0, |e| e.started_at_ms().unwrap_or(e.at_ms));
    let last_ms = evs.last().map_or(0, |e| e.at_ms);
    let (steps, done) = steps_of(evs);
    let dead = deaths(&steps, evs, last_ms);
    let cancelled = evs.iter().any(|e| e.kind == EventKind::Cancelled) || actions.iter().any(|a| a.action == "cancel");
    let state = match () {
        () if done => JobState::Done,
        () if cancelled => JobState::Cancelled,
        () if !dead.is_empty() => JobState::Dead,
        () => JobState::Running,
    };
    let step = match state {
        JobState::Dead => dead.last().map(|d| d.step.clone()),
        _ => evs.iter().rev().find(|e| e.kind != EventKind::Report).map(|e| e.step.to_string()),
    }
    .unwrap_or_default();
    let submitted_ms = uuid_time_ms(&job).unwrap_or(first_ms);
    let (reruns, rerun_of) = lineage(job, &actions);
    let selected_trial =
        steps.iter().flat_map(|s| &s.reports).find_map(|r| r.get("selected_trial").and_then(|t| t.as_u64()));
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
        selected_trial,
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

    #[test]
    fn batches_in_any_order_and_pushed_one_by_one_fold_the_same() {
        let job = Uuid::now_v7();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut last = event(EventKind::Succeeded, job, c, "report", 300);
        last.last_step = true;
        let mut dead = event(EventKind::Dead, job, b, "count", 150);
        dead.error = Some("no data root".into());
        let in_order = vec![
            event(EventKind::Succeeded, job, a, "load", 100),
            dead,
            event(EventKind::Succeeded, job, b, "count", 200),
            last,
        ];
        // Workers batch their events separately: the last step's batch can come first.
        let mut shuffled = in_order.clone();
        shuffled.reverse();
        let sorted = fold(&in_order, false);
        assert_eq!(fold(&shuffled, false), sorted);
        assert_eq!(sorted[0].state, JobState::Done);
        assert_eq!(sorted[0].steps.iter().map(|s| s.step.as_str()).collect::<Vec<_>>(), ["load", "count", "report"]);

        let mut jobs = Jobs::new(false);
        let mut states = Vec::new();
        for e in in_order {
            assert_eq!(jobs.push(e), vec![job]);
            states.push(jobs.view(job).map(|v| v.state));
        }
        let running_dead_running_done =
            [Some(JobState::Running), Some(JobState::Dead), Some(JobState::Running), Some(JobState::Done)];
        assert_eq!(states, running_dead_running_done, "a replayed death is history, not the state");
        assert_eq!(jobs.views(), sorted);
        jobs.forget_before(1_000);
        assert!(jobs.view(job).is_none());
    }

    #[test]
    fn an_action_attaches_to_the_job_of_the_letters_it_names_whenever_they_arrive() {
        let (job, msg) = (Uuid::now_v7(), Uuid::now_v7());
        let replay = OperatorAction {
            action: "replay".into(),
            actor: "dave".into(),
            count: 1,
            ids: vec![msg.to_string()],
            ..Default::default()
        };
        let mut jobs = Jobs::new(false);
        assert!(jobs.push(replay.to_event()).is_empty(), "no job known for the letter yet");
        jobs.push(event(EventKind::Dead, job, msg, "count", 10));
        let view = jobs.view(job).expect("the job");
        assert_eq!(view.actions.iter().map(|a| a.actor.as_str()).collect::<Vec<_>>(), ["dave"]);
    }

    #[test]
    fn successes_and_deaths_count_per_step_and_minute() {
        let (job, now) = (Uuid::now_v7(), 10 * 60_000 + 30_000);
        let at = |kind, step, ms| event(kind, job, Uuid::now_v7(), step, ms);
        let events = vec![
            at(EventKind::Succeeded, "load", now - 10),
            at(EventKind::Succeeded, "load", now - 20),
            at(EventKind::Dead, "count", now - 61_000),
            at(EventKind::Started, "count", now - 61_000),
            at(EventKind::Succeeded, "load", now - 3 * 60_000),
        ];
        let rates = per_minute(&events, now, 3);
        assert_eq!(rates["load"], (vec![0, 0, 2], vec![0, 0, 0]), "older than the window is left out");
        assert_eq!(rates["count"], (vec![0, 0, 0], vec![0, 1, 0]));
        // Kept incrementally, in any order, it says the same; forgetting old minutes changes
        // nothing within the window.
        let mut counts = MinuteCounts::default();
        for e in events.iter().rev() {
            counts.push(e);
        }
        assert_eq!(counts.last(now, 3), rates);
        assert_eq!(counts.last(now, 5), per_minute(&events, now, 5));
        counts.forget_before(now - 2 * 60_000);
        assert_eq!(counts.last(now, 3), rates);
        assert!(counts.last(now + 10 * 60_000, 3).is_empty(), "nothing in a later window");
    }

    #[test]
    fn trials_show_what_was_tried_and_the_selected_one_is_known() {
        let job = Uuid::now_v7();
        let (t0, t1, sel) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let report = |msg, step, detail: serde_json::Value, at| {
            let mut e = event(EventKind::Report, job, msg, step, at);
            e.detail = warren::envelope::to_msgpack_value(&detail).ok();
            e
        };
        let trial = |n: u64, alpha: f64, score: f64| {
            serde_json::json!({ "trial": n, "algorithm": "logistic", "hyperparams": { "alpha": alpha, "max_iterations": 100.0 },
                                "metric": "accuracy", "validation_score": score })
        };
        let events = vec![
            report(t0, "train", trial(0, 0.1, 0.9), 10),
            event(EventKind::Succeeded, job, t0, "train", 11),
            report(t1, "train", trial(1, 1.0, 0.95), 12),
            event(EventKind::Succeeded, job, t1, "train", 13),
            report(sel, "select", serde_json::json!({ "selected_trial": 1 }), 20),
            event(EventKind::Succeeded, job, sel, "select", 21),
        ];
        let j = &fold(&events, false)[0];
        let train = j.steps.iter().find(|s| s.step == "train").expect("train");
        assert_eq!(train.branches.len(), 2, "a report adds no branch of its own");
        assert_eq!(train.branches.iter().map(|b| b.outcome).collect::<Vec<_>>(), ["succeeded", "succeeded"]);
        let (n, r) = train.branches[1].trial().expect("a trial");
        assert_eq!((n, trial_summary(r).as_str()), (1, "logistic alpha=1 max_iterations=100 · accuracy 0.9500"));
        assert_eq!(j.selected_trial, Some(1));
    }
}
