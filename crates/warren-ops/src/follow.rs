//! Following one job to its end through the events stream, and knowing when it has settled:
//! workers publish their events in batches of their own, so the last step's success can arrive
//! before an earlier step's; once the last step is done, the follower waits a little for the
//! steps it has not heard of yet.

use std::{collections::BTreeSet, time::Duration};

use tokio::time::Instant;
use uuid::Uuid;
use warren::{EventKind, JobEvent, events::OperatorAction};

use crate::{Operator, OpsError};

/// How a followed job ended.
#[derive(Debug, Clone)]
pub enum End {
    /// Its last step succeeded: every event of it seen (or the grace period over).
    Done(Vec<JobEvent>),
    /// A message of it went to a dead-letter queue.
    Dead(JobEvent),
    /// It was cancelled (a worker dropped a message, or an operator's cancel).
    Cancelled(JobEvent),
}

/// What one event means for the followed job.
#[derive(Debug)]
pub enum Seen {
    /// Not the job's.
    Other,
    /// The job's, and it goes on.
    Progress,
    /// The job's, and it ended the job.
    Ended(Box<End>),
}

/// The settling of one job, fed its events one by one. Pure: the caller owns the clock.
#[derive(Debug)]
pub struct Settle {
    job: Uuid,
    steps: BTreeSet<String>,
    succeeded: BTreeSet<String>,
    seen: Vec<JobEvent>,
    done_at: Option<Instant>,
}

impl Settle {
    /// How long to wait, once the last step is done, for the other steps' late batches.
    pub const GRACE: Duration = Duration::from_secs(2);

    /// Follows `job`, whose slip holds `steps`.
    pub fn new(job: Uuid, steps: &[String]) -> Self {
        Self {
            job,
            steps: steps.iter().cloned().collect(),
            succeeded: BTreeSet::new(),
            seen: Vec::new(),
            done_at: None,
        }
    }

    /// Takes one event seen at `now`.
    pub fn push(&mut self, e: &JobEvent, now: Instant) -> Seen {
        let cancel = OperatorAction::from_event(e).is_some_and(|a| a.action == "cancel" && a.job == Some(self.job));
        if e.job_id != self.job && !cancel {
            return Seen::Other;
        }
        self.seen.push(e.clone());
        match e.kind {
            EventKind::Succeeded => {
                self.succeeded.insert(e.step.to_string());
                if e.last_step && self.done_at.is_none() {
                    self.done_at = Some(now + Self::GRACE);
                }
                Seen::Progress
            }
            EventKind::Dead => Seen::Ended(Box::new(End::Dead(e.clone()))),
            EventKind::Cancelled => Seen::Ended(Box::new(End::Cancelled(e.clone()))),
            EventKind::Operator if cancel => Seen::Ended(Box::new(End::Cancelled(e.clone()))),
            _ => Seen::Progress,
        }
    }

    /// Whether the job is done and settled at `now`: its last step succeeded, and every step
    /// was heard of or the grace period is over.
    pub fn settled(&self, now: Instant) -> bool {
        self.done_at.is_some_and(|at| self.steps.is_subset(&self.succeeded) || now >= at)
    }

    /// When to look again at the latest: the end of the grace period, or `deadline`.
    pub fn wake_at(&self, deadline: Instant) -> Instant {
        self.done_at.map_or(deadline, |at| at.min(deadline))
    }

    /// Whether the last step is done (the deadline no longer applies).
    pub fn is_done(&self) -> bool {
        self.done_at.is_some()
    }

    /// The job's end once settled: every event seen.
    pub fn into_done(self) -> End {
        End::Done(self.seen)
    }
}

impl Operator {
    /// Follows `job` (whose slip holds `steps`) until it is done and settled, dead or
    /// cancelled, calling `on_event` with each of its events; [`OpsError::TimedOut`] after
    /// `within`.
    pub async fn follow(
        &self,
        job: Uuid,
        steps: &[String],
        within: Duration,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<End, OpsError> {
        // A job's events all come after its id was made (UUIDv7 holds that time).
        let made_ms = crate::history::uuid_time_ms(&job).unwrap_or(0);
        let from = warren::events::From::Time(made_ms.saturating_sub(60_000));
        let mut rx = warren::events::subscribe_from(self.client().broker(), self.names(), from).await?;
        let deadline = Instant::now() + within;
        let mut settle = Settle::new(job, steps);
        loop {
            if settle.settled(Instant::now()) {
                return Ok(settle.into_done());
            }
            let event = match tokio::time::timeout_at(settle.wake_at(deadline), rx.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => return Err(OpsError::Other("the events stream closed".into())),
                Err(_) if settle.is_done() => continue,
                Err(_) => {
                    return Err(OpsError::TimedOut(format!(
                        "job {job} did not finish within {within:?}; it goes on: `warren status {job}` shows where it is"
                    )));
                }
            };
            match settle.push(&event, Instant::now()) {
                Seen::Other => {}
                Seen::Progress => on_event(&event),
                Seen::Ended(end) => {
                    on_event(&event);
                    return Ok(*end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, job: Uuid, step: &str, last: bool) -> JobEvent {
        let mut e = JobEvent::new(kind, job, Uuid::now_v7(), "p".into(), step.into(), "w".into(), 1);
        e.last_step = last;
        e
    }

    fn steps() -> Vec<String> {
        ["load", "count", "report"].map(str::to_owned).to_vec()
    }

    #[test]
    fn a_job_settles_when_every_step_is_heard_of_even_if_the_last_came_first() {
        let (job, now) = (Uuid::now_v7(), Instant::now());
        let mut s = Settle::new(job, &steps());
        assert!(matches!(s.push(&event(EventKind::Succeeded, job, "report", true), now), Seen::Progress));
        assert!(!s.settled(now), "load and count not heard of yet");
        assert!(matches!(s.push(&event(EventKind::Succeeded, Uuid::now_v7(), "load", false), now), Seen::Other));
        s.push(&event(EventKind::Succeeded, job, "load", false), now);
        assert!(!s.settled(now));
        s.push(&event(EventKind::Succeeded, job, "count", false), now);
        assert!(s.settled(now), "every step heard of: no need to wait");
        let End::Done(seen) = s.into_done() else { panic!("done") };
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_step_never_heard_of_is_waited_for_only_the_grace_period() {
        let (job, now) = (Uuid::now_v7(), Instant::now());
        let mut s = Settle::new(job, &steps());
        let deadline = now + Duration::from_secs(600);
        assert_eq!(s.wake_at(deadline), deadline);
        s.push(&event(EventKind::Succeeded, job, "report", true), now);
        assert_eq!(s.wake_at(deadline), now + Settle::GRACE);
        assert!(!s.settled(now + Duration::from_millis(1_999)));
        assert!(s.settled(now + Settle::GRACE));
    }

    #[test]
    fn a_death_or_a_cancel_ends_the_job_at_once() {
        let (job, now) = (Uuid::now_v7(), Instant::now());
        let mut s = Settle::new(job, &steps());
        assert!(
            matches!(s.push(&event(EventKind::Dead, job, "count", false), now), Seen::Ended(e) if matches!(*e, End::Dead(_)))
        );
        let cancel = OperatorAction { action: "cancel".into(), job: Some(job), count: 1, ..Default::default() };
        let mut s = Settle::new(job, &steps());
        assert!(matches!(s.push(&cancel.to_event(), now), Seen::Ended(e) if matches!(*e, End::Cancelled(_))));
        let other = OperatorAction { action: "cancel".into(), job: Some(Uuid::now_v7()), ..Default::default() };
        assert!(matches!(s.push(&other.to_event(), now), Seen::Other));
    }
}
