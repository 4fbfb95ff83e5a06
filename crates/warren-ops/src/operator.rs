//! [`Operator`]: one broker connection for one command (or one console), and every action an
//! operator takes. Each action plans (selects, checks every edit against the announced
//! descriptors, applies the reason rule of [`Audit::check`]), acts, and records what it did as an
//! [`OperatorAction`] in the events stream, so `warren dlq history`, `warren status` and the
//! console show who did what and why.

use std::time::Duration;

use uuid::Uuid;
use warren::{
    Client, Config, JobEvent, Names,
    events::{self, OperatorAction},
    registry::Registry,
};

use crate::{
    Audit, OpsError, Selection,
    dlq::{self, DeadLetter, Edit, Fates, Filter, ReplayOptions, ReplayReport},
    edit,
};

/// The action name of a submit's record (not a dead-letter action: `warren dlq history` leaves
/// it out).
pub const SUBMIT: &str = "submit";

/// What an operator acts with: one connection, the namespace, the artifact store's location.
pub struct Operator {
    client: Client,
    artifacts: String,
    /// The first broker URL, for the management API (it holds the password: never printed).
    amqp_url: Option<String>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("client", &self.client)
            .field("artifacts", &self.artifacts)
            .finish_non_exhaustive()
    }
}

/// A replay (or, with an edit, an edit-and-replay) of dead letters.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Which dead letters.
    pub selection: Selection,
    /// Take every dead letter of every step when the selection narrows nothing (`--all`).
    pub all: bool,
    /// Changes to make before they go back.
    pub edit: Edit,
    /// Only count what would be replayed.
    pub dry_run: bool,
    /// At most this many per second.
    pub rate_per_s: Option<f64>,
    /// Follow every replayed message to its fate for at most this long.
    pub follow: Option<Duration>,
    /// Who and why.
    pub audit: Audit,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayOutcome {
    /// Replayed, left, and which.
    pub report: ReplayReport,
    /// What became of them, when followed.
    pub fates: Option<Fates>,
    /// What could not be checked (a step whose parameters are not known here).
    pub notes: Vec<String>,
}

impl Operator {
    /// Connects once for everything the command does.
    pub async fn connect(config: &Config) -> Result<Self, OpsError> {
        let client = Client::connect(config).await?;
        Ok(Self { client, artifacts: config.artifacts.clone(), amqp_url: config.amqp_urls.first().cloned() })
    }

    /// The first broker URL (with its credentials: for the management API only).
    pub(crate) fn amqp_url(&self) -> Option<&str> {
        self.amqp_url.as_deref()
    }

    /// The client, for what is not an operator action (submit, RPC, queue counts).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, for a command that only submits, calls or counts.
    pub fn into_client(self) -> Client {
        self.client
    }

    /// The namespace's names.
    pub fn names(&self) -> &Names {
        self.client.names()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.client.names().namespace()
    }

    /// Where artifacts live (a directory or an `s3://` URL).
    pub fn artifacts(&self) -> &str {
        &self.artifacts
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.client.broker().close().await;
    }

    /// The step registry: what the namespace's workers announced.
    pub async fn registry(&self) -> Result<Registry, OpsError> {
        warren::registry::read(self.client.broker(), self.names())
            .await
            .map_err(|e| OpsError::Other(format!("cannot read the step registry: {e}")))
    }

    /// The events from `from` up to the stream's tail as it was when the read began.
    pub async fn events(&self, from: events::From) -> Result<Vec<JobEvent>, OpsError> {
        Ok(events::read_to_now(self.client.broker(), self.names(), from).await?)
    }

    /// The events of one job (read from a minute before its UUIDv7 says it was made); empty
    /// when the namespace never saw it.
    pub async fn job_events(&self, job: Uuid) -> Result<Vec<JobEvent>, OpsError> {
        let mut all = self.job_history(job).await?;
        all.retain(|e| e.job_id == job);
        Ok(all)
    }

    /// The jobs the events from a minute before `since_ms` on tell of, folded into rows as they
    /// are read ([`JobRows`](crate::digest::JobRows); RPC calls left out unless `include_rpc`).
    pub async fn job_rows(&self, since_ms: u64, include_rpc: bool) -> Result<crate::digest::JobRows, OpsError> {
        let mut rows = crate::digest::JobRows::new(include_rpc);
        let from = events::From::Time(since_ms.saturating_sub(60_000));
        events::read_each(self.client.broker(), self.names(), from, None, |e| {
            rows.push(&e);
        })
        .await?;
        Ok(rows)
    }

    /// The events of one job and the operator actions since its start, which may name it: what
    /// [`history::fold`](crate::history::fold) needs for the job's whole view. Only those are
    /// kept while the stream is read: a job of twelve hours ago at ten million events a day reads
    /// five million events and holds a few.
    pub async fn job_history(&self, job: Uuid) -> Result<Vec<JobEvent>, OpsError> {
        let from = events::From::Time(crate::history::uuid_time_ms(&job).unwrap_or(0).saturating_sub(60_000));
        let mut kept = Vec::new();
        events::read_each(self.client.broker(), self.names(), from, None, |e| {
            if e.job_id == job || e.kind == warren::EventKind::Operator {
                kept.push(e);
            }
        })
        .await?;
        Ok(kept)
    }

    /// Records an action in the events stream.
    pub async fn record(&self, action: &OperatorAction) -> Result<(), OpsError> {
        events::record(self.client.broker(), self.names(), self.client.events_version(), action)
            .await
            .map_err(OpsError::Record)
    }

    /// The steps a selection covers: those it names, else every registered step.
    pub fn steps(&self, selection: &Selection, registry: &Registry) -> Vec<String> {
        if selection.steps.is_empty() { registry.steps.keys().cloned().collect() } else { selection.steps.clone() }
    }

    /// The dead letters a selection takes, in step order, at most `limit`. A step the selection
    /// names that has no dead-letter queue is a usage error; a registered one that was never
    /// declared is skipped.
    pub async fn dead_letters(&self, selection: &Selection, steps: &[String]) -> Result<Vec<DeadLetter>, OpsError> {
        let filter = selection.filter()?;
        let mut out = Vec::new();
        for step in steps {
            match dlq::list(self.client.broker(), self.names(), step, &filter).await {
                Ok(mut letters) => out.append(&mut letters),
                Err(dlq::DlqError::UnknownStep { .. }) if selection.steps.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.truncate(selection.limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Plans a replay: refuses an unnarrowed one without `all`, checks every `--set`/`--unset`
    /// key against the descriptors, and (when it edits, or no reason was given) counts the
    /// letters and checks the reason rule and the edit on each, before anything moves.
    async fn plan_replay(&self, req: &ReplayRequest) -> Result<(Vec<String>, Vec<String>), OpsError> {
        if req.selection.is_everything() && !req.all && !req.dry_run {
            return Err(OpsError::usage(
                "this would replay every dead letter of every step: narrow it (--step, --job, --error, --since, \
                 --group, --limit) or say --all; --dry-run shows how many",
            ));
        }
        let registry = self.registry().await?;
        let steps = self.steps(&req.selection, &registry);
        let mut notes = edit::check_keys(&req.edit, &steps, &registry)?;
        if !req.edit.is_empty() || (!req.dry_run && req.audit.reason.is_none()) {
            let letters = self.dead_letters(&req.selection, &steps).await?;
            if !req.dry_run {
                req.audit.check("replaying", letters.len())?;
            }
            for d in &letters {
                notes.extend(edit::check(&req.edit, d, &registry)?);
            }
        }
        notes.dedup();
        Ok((steps, notes))
    }

    /// Replays dead letters to their steps (publish with confirm, then ack), as planned; follows
    /// them when asked; records the replay.
    pub async fn replay(&self, req: &ReplayRequest) -> Result<ReplayOutcome, OpsError> {
        let (steps, notes) = self.plan_replay(req).await?;
        let filter = req.selection.filter()?;
        let follower = match req.follow.filter(|_| !req.dry_run) {
            Some(_) => Some(dlq::Follower::start(self.client.broker(), self.names()).await?),
            None => None,
        };
        let report = self.replay_steps(req, &steps, &filter).await?;
        if !req.dry_run && report.replayed > 0 {
            let verb = if req.edit.is_empty() { "replay" } else { "edit" };
            let mut action = self.action(verb, &req.audit, &req.selection, report.replayed, report.ids.clone());
            action.changes = req.edit.describe();
            self.record(&action).await?;
        }
        let fates = match (follower, req.follow) {
            (Some(f), Some(within)) => Some(f.wait(&report.messages, within).await),
            _ => None,
        };
        Ok(ReplayOutcome { report, fates, notes })
    }

    async fn replay_steps(
        &self,
        req: &ReplayRequest,
        steps: &[String],
        filter: &Filter,
    ) -> Result<ReplayReport, OpsError> {
        let mut total = ReplayReport::default();
        let mut remaining = req.selection.limit;
        for step in steps {
            let options = ReplayOptions {
                limit: remaining,
                dry_run: req.dry_run,
                rate_per_s: req.rate_per_s,
                edit: req.edit.clone(),
            };
            let r = match dlq::replay(self.client.broker(), self.names(), step, filter, &options).await {
                Ok(r) => r,
                Err(dlq::DlqError::UnknownStep { .. }) if req.selection.steps.is_empty() => continue,
                Err(e) => return Err(e.into()),
            };
            tracing::debug!(step, replayed = r.replayed, left = r.left, "replayed");
            total.replayed += r.replayed;
            total.left += r.left;
            total.ids.extend(r.ids);
            total.messages.extend(r.messages);
            remaining = remaining.map(|l| l.saturating_sub(r.replayed));
        }
        Ok(total)
    }

    /// Deletes the selected dead letters for good: counts them first and fixes the set, so the
    /// reason rule sees the real count and the record names exactly the letters that went.
    pub async fn purge(&self, selection: &Selection, audit: &Audit) -> Result<usize, OpsError> {
        let registry = self.registry().await?;
        let steps = self.steps(selection, &registry);
        let chosen: Vec<String> = self.dead_letters(selection, &steps).await?.into_iter().map(|d| d.id).collect();
        audit.check("purging", chosen.len())?;
        let mut filter = selection.filter()?;
        filter.ids = Some(chosen.iter().cloned().collect());
        let mut purged = 0;
        for step in &steps {
            match dlq::purge(self.client.broker(), self.names(), step, &filter).await {
                Ok(n) => purged += n,
                Err(dlq::DlqError::UnknownStep { .. }) if selection.steps.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if purged > 0 {
            self.record(&self.action("purge", audit, selection, purged, chosen)).await?;
        }
        Ok(purged)
    }

    /// Cancels a job the namespace has seen: every worker drops its queued and arriving messages.
    pub async fn cancel(&self, job: Uuid, audit: &Audit) -> Result<(), OpsError> {
        audit.check("cancelling", 1)?;
        if self.job_events(job).await?.is_empty() {
            return Err(OpsError::NotFound(format!(
                "no job {job} in namespace {}: no event names it (neither submitted with `warren submit` nor taken \
                 by a worker); `warren jobs` lists the jobs",
                self.namespace()
            )));
        }
        warren::control::cancel(self.client.broker(), self.names(), job, &audit.actor, audit.reason.as_deref()).await?;
        let action = OperatorAction {
            job: Some(job),
            filter: format!("job {job}"),
            ..self.action("cancel", audit, &Selection::default(), 1, vec![job.to_string()])
        };
        self.record(&action).await
    }

    /// Records that `audit.actor` submitted `job` of `pipeline`, so the namespace knows the job
    /// before any worker takes it (`warren cancel` of a job still queued, `warren status`).
    pub async fn record_submitted(&self, job: Uuid, pipeline: &str, audit: &Audit) -> Result<(), OpsError> {
        let action = OperatorAction {
            job: Some(job),
            filter: format!("pipeline {pipeline}"),
            ..self.action(SUBMIT, audit, &Selection::default(), 1, vec![job.to_string()])
        };
        self.record(&action).await
    }

    /// The record of an action on a selection.
    pub(crate) fn action(
        &self,
        verb: &str,
        audit: &Audit,
        selection: &Selection,
        count: usize,
        ids: Vec<String>,
    ) -> OperatorAction {
        OperatorAction {
            action: verb.to_owned(),
            actor: audit.actor.clone(),
            reason: audit.reason.clone(),
            step: selection.steps.join(","),
            job: selection.job.as_deref().and_then(|j| j.parse().ok()),
            filter: selection.describe(),
            count,
            ids,
            changes: Vec::new(),
        }
    }
}
