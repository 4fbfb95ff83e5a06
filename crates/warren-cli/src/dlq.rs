//! `warren dlq`: list, show, stats, replay and purge dead letters.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use warren::{
    Config, Envelope, Names,
    dlq::{self, DeadLetter, DlqError, Filter, ReplayOptions},
};

use crate::{Fail, Outcome, connect, parse_age};

/// Which dead letters.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// Only this step, repeatable (default: the nine ML steps; name custom steps here).
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

/// Who acts and why: recorded with every replay and purge (`warren dlq history`).
#[derive(Debug, Clone, clap::Args)]
pub struct Audit {
    /// Who is acting (default: $USER@host).
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Why; required when more than 10 dead letters are touched.
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

/// Touching more dead letters than this needs a `--reason`.
const HANDFUL: usize = 10;

impl Audit {
    pub(crate) fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
            format!("{user}@{}", warren::broker::hostname())
        })
    }
    fn check(&self, verb: &str, count: usize) -> Result<(), Fail> {
        if count > HANDFUL && self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(Fail::usage(format!(
                "{verb} {count} dead letters needs --reason \"…\" (more than {HANDFUL} are touched; it is recorded \
                 in `warren dlq history`)"
            )));
        }
        Ok(())
    }
}

impl Filters {
    /// The selection as a command line would give it, for the record.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for s in &self.step {
            parts.push(format!("--step {s}"));
        }
        let opt = [("--job", &self.job), ("--error", &self.error), ("--since", &self.since), ("--group", &self.group)];
        for (flag, v) in opt {
            if let Some(v) = v {
                parts.push(format!("{flag} {v}"));
            }
        }
        parts.join(" ")
    }
}

pub(crate) async fn record(config: &Config, action: warren::events::OperatorAction) -> Result<(), Fail> {
    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    warren::events::record(client.broker(), &names, &action)
        .await
        .map_err(|e| Fail::from(format!("done, but the record for `warren dlq history` failed: {e}")))?;
    client.broker().close().await;
    Ok(())
}

/// `warren cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The job id.
    job: String,
    #[command(flatten)]
    audit: Audit,
}

/// `warren cancel JOB`: a control record every worker follows, and an operator event.
pub async fn cancel(config: &Config, args: CancelArgs, json: bool) -> Outcome {
    let job: uuid::Uuid =
        args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    let actor = args.audit.actor();
    warren::control::cancel(client.broker(), &names, job, &actor, args.audit.reason.as_deref()).await?;
    client.broker().close().await;
    let action = warren::events::OperatorAction {
        action: "cancel".into(),
        actor,
        reason: args.audit.reason.clone(),
        job: Some(job),
        filter: format!("job {job}"),
        count: 1,
        ids: vec![job.to_string()],
        ..Default::default()
    };
    record(config, action).await?;
    if json {
        println!("{}", serde_json::json!({ "cancelled": job.to_string() }));
    } else {
        println!("cancelled job {job}: workers drop its queued and arriving messages (`warren status {job}`)");
    }
    Ok(ExitCode::SUCCESS)
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
    #[command(after_help = "Example:\n  warren dlq replay --step train --since 1h --rate 50/s --dry-run")]
    Replay {
        #[command(flatten)]
        filters: Filters,
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Only say what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// At most this many per second, e.g. `50/s`.
        #[arg(long, value_name = "N/s")]
        rate: Option<String>,
        /// Set a parameter of the step before replaying, e.g. `--set max_depth=3` (repeatable;
        /// checked against the step's parameters before anything moves).
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
        audit: Audit,
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
        audit: Audit,
    },
}

fn filter(f: &Filters) -> Result<Filter, Fail> {
    let regex = f
        .error
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| Fail::usage(format!("--error: {}", e.to_string().lines().last().unwrap_or("bad regex"))))?;
    let since_ms =
        f.since.as_deref().map(parse_age).transpose()?.map(|age| warren::envelope::now_ms().saturating_sub(age));
    if f.group.as_deref().is_some_and(str::is_empty) {
        return Err(Fail::usage("--group: give a group id from `warren dlq groups`"));
    }
    Ok(Filter {
        job: f.job.clone(),
        error_contains: None,
        since_ms,
        error_matches: regex.map(|r| Arc::new(move |e: &str| r.is_match(e)) as dlq::ErrorMatcher),
        group: f.group.clone(),
        ids: None,
    })
}

/// The steps `--step` names, else every step in the registry (steps whose workers announced
/// themselves in the last 13 hours; name older ones with `--step`).
async fn steps(client: &warren::Client, config: &Config, f: &Filters) -> Result<Vec<String>, Fail> {
    if !f.step.is_empty() {
        return Ok(f.step.clone());
    }
    Ok(crate::steps::registry(client, config).await?.steps.into_keys().collect())
}

/// A step named with `--step` that has no dead-letter queue is a mistake (exit 2); one of the
/// default steps that was never declared is simply skipped.
fn unknown_step(f: &Filters, e: DlqError) -> Result<(), Fail> {
    match e {
        DlqError::UnknownStep { .. } if f.step.is_empty() => Ok(()),
        DlqError::UnknownStep { .. } => Err(Fail::usage(e.to_string())),
        e => Err(e.into()),
    }
}

fn summary(d: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "group": d.group,
        "step": d.step,
        "job": d.job,
        "kind": d.kind,
        "error": d.error,
        "failed_at_ms": d.failed_at_ms,
        "bytes": d.body.len(),
    })
}

fn headers_json(d: &DeadLetter) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let text = match v {
                lapin::types::AMQPValue::LongString(s) => {
                    serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into())
                }
                lapin::types::AMQPValue::LongLongInt(n) => serde_json::Value::from(*n),
                other => serde_json::Value::String(format!("{other:?}")),
            };
            map.insert(k.to_string(), text);
        }
    }
    serde_json::Value::Object(map)
}

async fn collect(config: &Config, f: &Filters) -> Result<Vec<DeadLetter>, Fail> {
    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    let flt = filter(f)?;
    let mut out = Vec::new();
    for step in steps(&client, config, f).await? {
        match dlq::list(client.broker(), &names, &step, &flt).await {
            Ok(mut d) => out.append(&mut d),
            Err(e) => unknown_step(f, e)?,
        }
    }
    client.broker().close().await;
    Ok(out)
}

/// `warren dlq …`.
pub async fn run(config: &Config, cmd: DlqCommand, json: bool) -> Outcome {
    match cmd {
        DlqCommand::List(f) => {
            let letters = collect(config, &f).await?;
            if json {
                println!("{}", serde_json::Value::Array(letters.iter().map(summary).collect()));
            } else {
                println!("{:<38} {:<12} {:<9} {:<11} error", "id", "group", "step", "kind");
                for d in &letters {
                    println!("{:<38} {:<12} {:<9} {:<11} {}", d.id, d.group, d.step, d.kind, d.error);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id, filters } => {
            if id.is_none() && filters.group.is_none() {
                return Err(Fail::usage("dlq show needs a dead letter's id or --group"));
            }
            let letters = collect(config, &filters).await?;
            let d = letters
                .iter()
                .find(|d| id.as_deref().is_none_or(|i| d.id == i))
                .ok_or_else(|| Fail::from(format!("no dead letter with id {}", id.as_deref().unwrap_or("-"))))?;
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
            let out = serde_json::json!({ "dead_letter": summary(d), "headers": headers_json(d), "envelope": payload });
            println!("{}", if json { out.to_string() } else { serde_json::to_string_pretty(&out).unwrap_or_default() });
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Stats(f) => {
            let letters = collect(config, &f).await?;
            let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
            for d in &letters {
                *counts.entry((d.step.clone(), d.kind.clone(), dlq::fingerprint(&d.error))).or_default() += 1;
            }
            if json {
                let rows: Vec<_> = counts
                    .iter()
                    .map(|((s, k, e), n)| serde_json::json!({ "step": s, "kind": k, "error": e, "count": n }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:>6}  {:<9} {:<11} error", "count", "step", "kind");
                for ((s, k, e), n) in counts {
                    println!("{n:>6}  {s:<9} {k:<11} {e}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Groups(f) => {
            let letters = collect(config, &f).await?;
            groups(&letters, json);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::History { since } => {
            let since_ms =
                since.as_deref().map(parse_age).transpose()?.map(|a| warren::envelope::now_ms().saturating_sub(a));
            let from = since_ms.map_or(warren::events::From::First, warren::events::From::Time);
            let events = crate::jobs::read_all(config, from).await?;
            let actions: Vec<(u64, warren::events::OperatorAction)> = events
                .iter()
                .filter(|e| since_ms.is_none_or(|s| e.at_ms >= s))
                .filter_map(|e| warren::events::OperatorAction::from_event(e).map(|a| (e.at_ms, a)))
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
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<19}  {:<20} {:<7} {:>6}  {:<28} reason", "when", "actor", "action", "count", "what");
                for (at, a) in &actions {
                    let mut what = a.filter.clone();
                    if !a.changes.is_empty() {
                        what.push_str(&format!(" set {}", a.changes.join(", ")));
                    }
                    println!(
                        "{:<19}  {:<20} {:<7} {:>6}  {:<28} {}",
                        warren::events::format_time(*at),
                        a.actor,
                        a.action,
                        a.count,
                        what,
                        a.reason.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay { filters, limit, dry_run, rate, set, unset, payload_set, wait, audit } => {
            let rate_per_s = rate
                .as_deref()
                .map(|r| {
                    r.trim_end_matches("/s")
                        .parse::<f64>()
                        .map_err(|_| Fail::usage(format!("--rate {r}: expected N/s such as 50/s")))
                })
                .transpose()?;
            let mut edit = dlq::Edit { unset, ..dlq::Edit::default() };
            for (flag, list, out) in
                [("--set", &set, &mut edit.set), ("--payload-set", &payload_set, &mut edit.payload_set)]
            {
                for item in list {
                    let (k, v) = item
                        .split_once('=')
                        .filter(|(k, _)| !k.trim().is_empty())
                        .ok_or_else(|| Fail::usage(format!("{flag} {item}: expected NAME=VALUE")))?;
                    out.push((
                        k.trim().to_owned(),
                        parse_value(v).map_err(|e| Fail::usage(format!("{flag} {k}: {e}")))?,
                    ));
                }
            }
            let flt = filter(&filters)?;
            if !edit.is_empty() || (!dry_run && audit.reason.is_none()) {
                // Count and check first: a large replay needs a reason, and an edit must fit every
                // letter it touches, before anything moves.
                let letters = collect(config, &filters).await?;
                let registry = if edit.is_empty() {
                    warren::registry::Registry::default()
                } else {
                    let client = connect(config).await?;
                    crate::steps::registry(&client, config).await?
                };
                let chosen: Vec<&DeadLetter> =
                    letters.iter().filter(|d| flt.matches(d)).take(limit.unwrap_or(usize::MAX)).collect();
                tracing::debug!(matching = chosen.len(), "counted before replaying");
                if !dry_run && audit.reason.is_none() {
                    audit.check("replaying", chosen.len())?;
                }
                for d in &chosen {
                    check_edit(&edit, d, &registry)?;
                }
            }
            let client = connect(config).await?;
            let names = Names::new(&config.namespace);
            let mut total = dlq::ReplayReport::default();
            let mut remaining = limit;
            let follower = match wait.filter(|_| !dry_run) {
                Some(_) => Some(dlq::Follower::start(client.broker(), &names).await?),
                None => None,
            };
            for step in steps(&client, config, &filters).await? {
                let options = ReplayOptions { limit: remaining, dry_run, rate_per_s, edit: edit.clone() };
                let r = match dlq::replay(client.broker(), &names, &step, &flt, &options).await {
                    Ok(r) => r,
                    Err(e) => {
                        unknown_step(&filters, e)?;
                        continue;
                    }
                };
                tracing::debug!(step, replayed = r.replayed, left = r.left, "replayed");
                total.replayed += r.replayed;
                total.left += r.left;
                total.ids.extend(r.ids);
                total.messages.extend(r.messages);
                remaining = remaining.map(|l| l.saturating_sub(r.replayed));
            }
            if !dry_run && total.replayed > 0 {
                let action = warren::events::OperatorAction {
                    action: if edit.is_empty() { "replay" } else { "edit" }.into(),
                    actor: audit.actor(),
                    reason: audit.reason.clone(),
                    step: filters.step.join(","),
                    job: filters.job.as_deref().and_then(|j| j.parse().ok()),
                    filter: filters.describe(),
                    count: total.replayed,
                    ids: total.ids.clone(),
                    changes: edit.describe(),
                };
                record(config, action).await?;
                tracing::debug!("recorded for dlq history");
            }
            let fates = match follower {
                Some(f) => Some(f.wait(&total.messages, Duration::from_secs(wait.unwrap_or(60))).await),
                None => None,
            };
            client.broker().close().await;
            let mut code = ExitCode::SUCCESS;
            if json {
                let mut out = serde_json::json!({ "replayed": total.replayed, "left": total.left, "dry_run": dry_run });
                if let Some(f) = &fates {
                    out["succeeded"] = f.succeeded.into();
                    out["dead_again"] = f
                        .dead_again
                        .iter()
                        .map(|(id, reason)| serde_json::json!({ "id": id.to_string(), "error": reason }))
                        .collect();
                    out["pending"] = f.pending.into();
                }
                println!("{out}");
            } else {
                let verb = if dry_run { "would replay" } else { "replayed" };
                println!("{verb} {} dead letter(s); {} left in place", total.replayed, total.left);
                if let Some(f) = &fates {
                    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
                    for (_, r) in &f.dead_again {
                        *reasons.entry(r.as_str()).or_default() += 1;
                    }
                    let mut line = format!("{} succeeded, {} dead again", f.succeeded, f.dead_again.len());
                    if !reasons.is_empty() {
                        let list: Vec<String> = reasons
                            .iter()
                            .map(|(r, n)| if *n > 1 { format!("{r} (×{n})") } else { (*r).to_owned() })
                            .collect();
                        line.push_str(&format!(": {}", list.join("; ")));
                    }
                    if f.pending > 0 {
                        line.push_str(&format!("; {} not settled within {}s", f.pending, wait.unwrap_or(0)));
                    }
                    if total.replayed > total.messages.len() {
                        line.push_str(&format!(
                            "; {} undecodable, not followed",
                            total.replayed - total.messages.len()
                        ));
                    }
                    println!("{line}");
                }
            }
            if fates.as_ref().is_some_and(|f| !f.dead_again.is_empty() || f.pending > 0) {
                code = ExitCode::FAILURE;
            }
            Ok(code)
        }
        DlqCommand::Purge { filters, yes, audit } => {
            if !yes {
                return Err(Fail::usage("purge deletes dead letters for good: add --yes"));
            }
            let mut flt = filter(&filters)?;
            // Count first and fix the set: a large purge needs a reason, and the record names
            // exactly the letters that went.
            let chosen: Vec<String> =
                collect(config, &filters).await?.into_iter().filter(|d| flt.matches(d)).map(|d| d.id).collect();
            audit.check("purging", chosen.len())?;
            flt.ids = Some(chosen.iter().cloned().collect());
            let client = connect(config).await?;
            let names = Names::new(&config.namespace);
            let mut purged = 0;
            for step in steps(&client, config, &filters).await? {
                match dlq::purge(client.broker(), &names, &step, &flt).await {
                    Ok(n) => purged += n,
                    Err(e) => unknown_step(&filters, e)?,
                }
            }
            if purged > 0 {
                let action = warren::events::OperatorAction {
                    action: "purge".into(),
                    actor: audit.actor(),
                    reason: audit.reason.clone(),
                    step: filters.step.join(","),
                    job: filters.job.as_deref().and_then(|j| j.parse().ok()),
                    filter: filters.describe(),
                    count: purged,
                    ids: chosen,
                    changes: Vec::new(),
                };
                record(config, action).await?;
            }
            if json {
                println!("{}", serde_json::json!({ "purged": purged }));
            } else {
                println!("purged {purged} dead letter(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints failure groups, largest first.
fn groups(letters: &[DeadLetter], json: bool) {
    struct Group<'a> {
        count: usize,
        step: &'a str,
        kind: &'a str,
        first_ms: u64,
        last_ms: u64,
        sample: &'a str,
        jobs: BTreeSet<&'a str>,
    }
    let mut groups: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for d in letters {
        let g = groups.entry(d.group.as_str()).or_insert_with(|| Group {
            count: 0,
            step: &d.step,
            kind: &d.kind,
            first_ms: u64::MAX,
            last_ms: 0,
            sample: &d.error,
            jobs: BTreeSet::new(),
        });
        g.count += 1;
        g.first_ms = g.first_ms.min(d.failed_at_ms);
        g.last_ms = g.last_ms.max(d.failed_at_ms);
        if let Some(j) = &d.job {
            g.jobs.insert(j);
        }
    }
    let mut sorted: Vec<(&str, Group<'_>)> = groups.into_iter().collect();
    sorted.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    let when = |ms: u64| if ms == 0 || ms == u64::MAX { "-".to_owned() } else { warren::events::format_time(ms) };
    if json {
        let rows: Vec<_> = sorted
            .iter()
            .map(|(id, g)| {
                serde_json::json!({
                    "group": id, "count": g.count, "step": g.step, "kind": g.kind,
                    "first_ms": g.first_ms, "last_ms": g.last_ms, "sample": g.sample,
                    "fingerprint": dlq::fingerprint(g.sample), "jobs": g.jobs,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<12} {:>6}  {:<9} {:<10} {:<19} {:<19} {:>5}  sample error",
        "group", "count", "step", "kind", "first", "last", "jobs"
    );
    for (id, g) in &sorted {
        println!(
            "{id:<12} {:>6}  {:<9} {:<10} {:<19} {:<19} {:>5}  {}",
            g.count,
            g.step,
            g.kind,
            when(g.first_ms),
            when(g.last_ms),
            g.jobs.len(),
            g.sample.lines().next().unwrap_or("")
        );
    }
}

/// A value from the command line: JSON when it looks like JSON (`{…}`, `[…]`, `"…"`), else an
/// integer, a number, `true`/`false`, or the text as it is.
pub(crate) fn parse_value(v: &str) -> Result<rmpv::Value, String> {
    let t = v.trim();
    if t.starts_with('{') || t.starts_with('[') || t.starts_with('"') {
        let json: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("{t} is not valid JSON: {e}"))?;
        return warren::envelope::to_msgpack_value(&json).map_err(|e| e.to_string());
    }
    Ok(t.parse::<i64>()
        .map(Into::into)
        .or_else(|_| t.parse::<f64>().map(Into::into))
        .or_else(|_| t.parse::<bool>().map(Into::into))
        .unwrap_or_else(|_| t.into()))
}

/// An edit must fit the letter: the step's parameters and the payload's schema, where Warren
/// knows them. Any misfit is bad usage (exit 2) naming the flag and key, and nothing is replayed.
pub(crate) fn check_edit(edit: &dlq::Edit, d: &DeadLetter, registry: &warren::registry::Registry) -> Result<(), Fail> {
    if edit.is_empty() {
        return Ok(());
    }
    let env = edit.apply_value(&d.body).map_err(|e| Fail::usage(format!("cannot edit dead letter {}: {e}", d.id)))?;
    let step = env.slip.first().map(|h| h.step.clone()).unwrap_or_else(|| d.step.clone());
    let params_fit = |e: &dlq::Edit| -> Result<bool, String> {
        let env = e.apply_value(&d.body)?;
        let params = env.slip.first().map(|h| h.params.clone()).unwrap_or(rmpv::Value::Nil);
        let params = if params.is_nil() { rmpv::Value::Map(Vec::new()) } else { params };
        let Some(descriptor) = registry.descriptor(&step) else { return Ok(false) };
        let json = serde_json::to_value(&params).map_err(|e| e.to_string())?;
        warren::spec::check_params(descriptor, &json).map(|()| true)
    };
    let payload_fits = |e: &dlq::Edit| -> Result<bool, String> {
        let env = e.apply_value(&d.body)?;
        let schema = registry
            .descriptor(&step)
            .filter(|desc| desc.input == env.schema)
            .and_then(|desc| desc.input_schema.clone());
        let Some(schema) = schema else { return Ok(false) };
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        let json = serde_json::to_value(&env.payload).map_err(|e| e.to_string())?;
        let problems: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", at.trim_start_matches('/').replace('/', "."))
            })
            .collect();
        if problems.is_empty() { Ok(true) } else { Err(problems.join("; ")) }
    };
    // Which change is to blame: the one whose removal makes the rest fit.
    let culprit = |fits: &dyn Fn(&dlq::Edit) -> Result<bool, String>, error: String| -> Fail {
        for (i, (k, v)) in edit.set.iter().enumerate() {
            let mut without = edit.clone();
            without.set.remove(i);
            if fits(&without).is_ok() {
                return Fail::usage(format!("--set {k}={v}: not accepted by step {step}: {error}"));
            }
        }
        for (i, k) in edit.unset.iter().enumerate() {
            let mut without = edit.clone();
            without.unset.remove(i);
            if fits(&without).is_ok() {
                return Fail::usage(format!("--unset {k}: step {step} needs it: {error}"));
            }
        }
        for (i, (k, v)) in edit.payload_set.iter().enumerate() {
            let mut without = edit.clone();
            without.payload_set.remove(i);
            if fits(&without).is_ok() {
                return Fail::usage(format!(
                    "--payload-set {k}={v}: the payload no longer fits {}: {error}",
                    env.schema
                ));
            }
        }
        Fail::usage(format!("the edit does not fit dead letter {}: {error}", d.id))
    };
    if !(edit.set.is_empty() && edit.unset.is_empty()) {
        match params_fit(edit) {
            Ok(true) => {}
            Ok(false) => eprintln!("warren: note: step {step} has no parameter schema here; --set/--unset not checked"),
            Err(e) => return Err(culprit(&params_fit, e)),
        }
    }
    if !edit.payload_set.is_empty() {
        match payload_fits(edit) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("warren: note: payload schema {} is not known here; --payload-set not checked", env.schema)
            }
            Err(e) => return Err(culprit(&payload_fits, e)),
        }
    }
    Ok(())
}
