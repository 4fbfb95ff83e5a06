//! `warren dlq`: list, show, stats, groups, replay, purge and history of dead letters; and
//! `warren cancel`. Each subcommand parses, calls the [`Operator`] and prints.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use warren::{Config, Envelope};
use warren_ops::{
    Audit, Operator, Selection,
    dlq::{self, DeadLetter, Edit},
    edit::parse_assignments,
    operator::{ReplayOutcome, ReplayRequest},
    selection::{parse_age, parse_rate},
};

use crate::{Fail, Outcome, connect, print_json};

/// Which dead letters.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// Only this step, repeatable (default: every registered step; name older ones here).
    #[arg(long)]
    step: Vec<String>,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
    /// Only errors matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    error: Option<String>,
    /// Only dead letters from this recent window (90s, 30m, 2h, 7d).
    #[arg(long, value_name = "AGE")]
    since: Option<String>,
    /// Only this failure group (from `warren dlq groups`; a prefix is enough).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

impl Filters {
    fn selection(&self, limit: Option<usize>) -> Selection {
        Selection {
            steps: self.step.clone(),
            job: self.job.clone(),
            error: self.error.clone(),
            since: self.since.clone(),
            group: self.group.clone(),
            limit,
        }
    }
}

/// Who acts and why: recorded with every replay, purge, cancel and rerun (`warren dlq history`).
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Who is acting (default: $USER@host).
    #[arg(long)]
    actor: Option<String>,
    /// Why; required when more than 10 messages are touched.
    #[arg(long)]
    reason: Option<String>,
}

impl AuditArgs {
    pub(crate) fn audit(&self) -> Audit {
        Audit::new(self.actor.clone(), self.reason.clone())
    }
}

/// `warren dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    #[command(after_help = "Example:\n  warren dlq list --step validate --error 'row \\d+'")]
    List(Filters),
    /// One dead letter: its headers and decoded payload (or, with --group, the group's first).
    #[command(after_help = "Example:\n  warren dlq show 0b8e…-message-id\n  warren dlq show --group 3fa2c1")]
    Show {
        /// The dead letter's id (its message id, or `body:…` as `list` shows it).
        id: Option<String>,
        #[command(flatten)]
        filters: Filters,
    },
    /// Counts by step, kind and error shape (numbers, ids, paths and quoted values set aside).
    #[command(after_help = "Example:\n  warren dlq stats --json")]
    Stats(Filters),
    /// Failure groups: the same error shape at the same step, with count, first and last seen,
    /// a sample and the jobs affected.
    #[command(after_help = "Example:\n  warren dlq groups\n  warren dlq replay --group 3fa2c1 --wait")]
    Groups(Filters),
    /// Send dead letters back to their step (publish with confirm, then ack).
    #[command(
        after_help = "Example:\n  warren dlq replay --step train --since 1h --rate 50/s --dry-run\n  warren dlq replay --all --reason \"broker outage\"   # every dead letter of every step"
    )]
    Replay {
        #[command(flatten)]
        filters: Filters,
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Replay every dead letter of every step (needed when no filter narrows the selection).
        #[arg(long)]
        all: bool,
        /// Only say what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// At most this many per second, e.g. `50/s`.
        #[arg(long, value_name = "N/s")]
        rate: Option<String>,
        /// Set a parameter of the step before replaying, e.g. `--set max_depth=3` (repeatable;
        /// checked against the step's parameters before anything moves; values as in a spec
        /// file: `3`, `0.5`, `true`, `"text"`, `[1, 2]`, or bare text).
        #[arg(long = "set", value_name = "PARAM=VALUE")]
        set: Vec<String>,
        /// Remove a parameter (back to the step's default) before replaying (repeatable).
        #[arg(long = "unset", value_name = "PARAM")]
        unset: Vec<String>,
        /// Change a payload field by its dotted path before replaying, e.g.
        /// `--payload-set candidate.hyperparams.max_iterations=500` (repeatable; the field must
        /// exist, and the result is checked against the payload's schema).
        #[arg(long = "payload-set", value_name = "PATH=VALUE")]
        payload_set: Vec<String>,
        /// Follow every replayed message to its fate and say how many succeeded and how many died
        /// again (with the new reasons); exit 1 unless all succeeded. Gives up after SECS (60).
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// What operators did: replays, edits and purges, with who, why, what and how many.
    #[command(after_help = "Example:\n  warren dlq history --since 7d")]
    History {
        /// Only this recent window (90s, 30m, 2h, 7d).
        #[arg(long, value_name = "AGE")]
        since: Option<String>,
    },
    /// Delete dead letters for good.
    #[command(after_help = "Example:\n  warren dlq purge --step ingest --job 01a2… --yes")]
    Purge {
        #[command(flatten)]
        filters: Filters,
        /// Really delete them.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        audit: AuditArgs,
    },
}

/// `warren dlq …`.
pub async fn run(config: &Config, cmd: DlqCommand, json: bool) -> Outcome {
    let op = connect(config).await?;
    let code = match cmd {
        DlqCommand::List(f) => list(&op, &f, json).await,
        DlqCommand::Show { id, filters } => show(&op, id.as_deref(), &filters, json).await,
        DlqCommand::Stats(f) => stats(&op, &f, json).await,
        DlqCommand::Groups(f) => groups(&op, &f, json).await,
        DlqCommand::History { since } => history(&op, since.as_deref(), json).await,
        DlqCommand::Replay { filters, limit, all, dry_run, rate, set, unset, payload_set, wait, audit } => {
            let edit = Edit {
                set: parse_assignments("--set", &set)?,
                unset,
                payload_set: parse_assignments("--payload-set", &payload_set)?,
            };
            let req = ReplayRequest {
                selection: filters.selection(limit),
                all,
                edit,
                dry_run,
                rate_per_s: rate
                    .as_deref()
                    .map(parse_rate)
                    .transpose()
                    .map_err(|e| Fail::usage(format!("--rate: {e}")))?,
                follow: wait.map(Duration::from_secs),
                audit: audit.audit(),
            };
            replay(&op, &req, json).await
        }
        DlqCommand::Purge { filters, yes, audit } => purge(&op, &filters, yes, &audit, json).await,
    };
    op.close().await;
    code
}

async fn letters(op: &Operator, f: &Filters) -> Result<Vec<DeadLetter>, Fail> {
    let selection = f.selection(None);
    let steps = op.steps(&selection, &op.registry().await?);
    Ok(op.dead_letters(&selection, &steps).await?)
}

fn summary(d: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "group": d.group, "step": d.step, "job": d.job, "kind": d.kind,
        "error": d.error, "failed_at_ms": d.failed_at_ms, "bytes": d.body.len(),
    })
}

async fn list(op: &Operator, f: &Filters, json: bool) -> Outcome {
    let letters = letters(op, f).await?;
    if json {
        print_json(&serde_json::Value::Array(letters.iter().map(summary).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = letters
        .iter()
        .map(|d| vec![d.id.clone(), d.group.clone(), d.step.clone(), d.kind.clone(), first_line(&d.error)])
        .collect();
    crate::print(&crate::table(&["id", "group", "step", "kind", "error"], rows, &[]));
    Ok(ExitCode::SUCCESS)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_owned()
}

async fn show(op: &Operator, id: Option<&str>, f: &Filters, json: bool) -> Outcome {
    if id.is_none() && f.group.is_none() {
        return Err(Fail::usage("dlq show needs a dead letter's id or --group"));
    }
    let letters = letters(op, f).await?;
    let d = letters
        .iter()
        .find(|d| id.is_none_or(|i| d.id == i))
        .ok_or_else(|| Fail::from(format!("no dead letter with id {}", id.unwrap_or("-"))))?;
    let payload = match Envelope::<rmpv::Value>::decode(&d.body) {
        Ok(env) => serde_json::json!({
            "job_id": env.job_id.to_string(),
            "pipeline": env.pipeline,
            "slip": serde_json::to_value(&env.slip).unwrap_or_default(),
            "schema": env.schema,
            "payload": serde_json::to_value(&env.payload).unwrap_or_default(),
        }),
        Err(e) => serde_json::json!({ "undecodable": e.to_string(), "bytes": d.body.len() }),
    };
    let out = serde_json::json!({ "dead_letter": summary(d), "headers": d.headers_json(), "envelope": payload });
    crate::print(&if json { out.to_string() } else { serde_json::to_string_pretty(&out).unwrap_or_default() });
    Ok(ExitCode::SUCCESS)
}

async fn stats(op: &Operator, f: &Filters, json: bool) -> Outcome {
    let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for d in letters(op, f).await? {
        *counts.entry((d.step, d.kind, dlq::fingerprint(&d.error))).or_default() += 1;
    }
    if json {
        let rows: Vec<_> = counts
            .iter()
            .map(|((s, k, e), n)| serde_json::json!({ "step": s, "kind": k, "error": e, "count": n }))
            .collect();
        print_json(&serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = counts.into_iter().map(|((s, k, e), n)| vec![n.to_string(), s, k, e]).collect();
    crate::print(&crate::table(&["count", "step", "kind", "error"], rows, &[0]));
    Ok(ExitCode::SUCCESS)
}

async fn groups(op: &Operator, f: &Filters, json: bool) -> Outcome {
    let groups = dlq::groups(&letters(op, f).await?);
    if json {
        print_json(&serde_json::to_value(&groups)?);
        return Ok(ExitCode::SUCCESS);
    }
    let when = |ms: u64| if ms == 0 { "-".to_owned() } else { warren::events::format_time(ms) };
    let rows = groups
        .iter()
        .map(|g| {
            let (count, jobs) = (g.count.to_string(), g.jobs.len().to_string());
            vec![
                g.group.clone(),
                count,
                g.step.clone(),
                g.kind.clone(),
                when(g.first_ms),
                when(g.last_ms),
                jobs,
                first_line(&g.sample),
            ]
        })
        .collect();
    let header = ["group", "count", "step", "kind", "first", "last", "jobs", "sample error"];
    crate::print(&crate::table(&header, rows, &[1, 6]));
    Ok(ExitCode::SUCCESS)
}

async fn history(op: &Operator, since: Option<&str>, json: bool) -> Outcome {
    let since_ms = since
        .map(parse_age)
        .transpose()
        .map_err(|e| Fail::usage(format!("--since: {e}")))?
        .map(|a| warren::envelope::now_ms().saturating_sub(a));
    let events = op.events(since_ms.map_or(warren::events::From::First, warren::events::From::Time)).await?;
    let actions: Vec<(u64, warren::events::OperatorAction)> = events
        .iter()
        .filter(|e| since_ms.is_none_or(|s| e.at_ms >= s))
        .filter_map(|e| warren::events::OperatorAction::from_event(e).map(|a| (e.at_ms, a)))
        .filter(|(_, a)| a.action != warren_ops::operator::SUBMIT)
        .collect();
    if json {
        let rows: Vec<_> = actions
            .iter()
            .map(|(at, a)| {
                let mut v = serde_json::to_value(a).unwrap_or_default();
                v["at_ms"] = (*at).into();
                v
            })
            .collect();
        print_json(&serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = actions
        .iter()
        .map(|(at, a)| {
            let mut what = a.filter.clone();
            if !a.changes.is_empty() {
                what.push_str(&format!(": {}", a.changes.join(", ")));
            }
            let reason = a.reason.clone().unwrap_or_else(|| "-".into());
            vec![warren::events::format_time(*at), a.actor.clone(), a.action.clone(), a.count.to_string(), what, reason]
        })
        .collect();
    crate::print(&crate::table(&["when", "actor", "action", "count", "what", "reason"], rows, &[3]));
    Ok(ExitCode::SUCCESS)
}

async fn replay(op: &Operator, req: &ReplayRequest, json: bool) -> Outcome {
    let out = op.replay(req).await?;
    for note in &out.notes {
        eprintln!("warren: note: {note}");
    }
    if json {
        print_json(&replay_json(&out, req.dry_run));
    } else {
        let verb = if req.dry_run { "would replay" } else { "replayed" };
        crate::print(&format!("{verb} {} dead letter(s); {} left in place", out.report.replayed, out.report.left));
        if let Some(line) = fates_line(&out, req.follow.unwrap_or_default()) {
            crate::print(&line);
        }
    }
    let unsettled = out.fates.as_ref().is_some_and(|f| !f.dead_again.is_empty() || f.pending > 0);
    Ok(if unsettled { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn replay_json(out: &ReplayOutcome, dry_run: bool) -> serde_json::Value {
    let mut v = serde_json::json!({ "replayed": out.report.replayed, "left": out.report.left, "dry_run": dry_run });
    if let Some(f) = &out.fates {
        v["succeeded"] = f.succeeded.into();
        v["dead_again"] = f
            .dead_again
            .iter()
            .map(|(id, reason)| serde_json::json!({ "id": id.to_string(), "error": reason }))
            .collect();
        v["pending"] = f.pending.into();
    }
    v
}

/// `3 succeeded, 1 dead again: <reason> (×n); 2 not settled within 60s`.
fn fates_line(out: &ReplayOutcome, within: Duration) -> Option<String> {
    let f = out.fates.as_ref()?;
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in &f.dead_again {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    let mut line = format!("{} succeeded, {} dead again", f.succeeded, f.dead_again.len());
    if !reasons.is_empty() {
        let list: Vec<String> =
            reasons.iter().map(|(r, n)| if *n > 1 { format!("{r} (×{n})") } else { (*r).to_owned() }).collect();
        line.push_str(&format!(": {}", list.join("; ")));
    }
    if f.pending > 0 {
        line.push_str(&format!("; {} not settled within {}s", f.pending, within.as_secs()));
    }
    let unfollowed = out.report.replayed.saturating_sub(out.report.messages.len());
    if unfollowed > 0 {
        line.push_str(&format!("; {unfollowed} undecodable, not followed"));
    }
    Some(line)
}

async fn purge(op: &Operator, f: &Filters, yes: bool, audit: &AuditArgs, json: bool) -> Outcome {
    if !yes {
        return Err(Fail::usage("purge deletes dead letters for good: add --yes"));
    }
    let purged = op.purge(&f.selection(None), &audit.audit()).await?;
    if json {
        print_json(&serde_json::json!({ "purged": purged }));
    } else {
        crate::print(&format!("purged {purged} dead letter(s)"));
    }
    Ok(ExitCode::SUCCESS)
}
