//! `warren status JOB` and `warren jobs`: history rebuilt from the events stream alone, through
//! the runtime's read model (`warren_ops::history`).

use std::{process::ExitCode, time::Duration};

use uuid::Uuid;
use warren::{Config, EventKind, JobEvent, events::format_time};
use warren_ops::{
    digest::{JobRow, JobRows},
    history::{JobState, JobView},
};

use crate::{Fail, Outcome, connect, parse_age};

/// `warren status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job id.
    job: String,
}

/// `warren jobs` arguments.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Only jobs of this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only jobs in this state: running, done, dead or cancelled.
    #[arg(long)]
    state: Option<String>,
    /// Only jobs submitted in this recent window (90s, 30m, 2h, 7d) or since this job id / time
    /// in milliseconds since the epoch (default: 1h).
    #[arg(long, value_name = "AGE|MS")]
    since: Option<String>,
    /// Only jobs submitted before this time in milliseconds since the epoch.
    #[arg(long, value_name = "MS")]
    until: Option<u64>,
    /// At most this many jobs (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Include RPC calls (`warren::Client::call`), listed as pipeline `rpc`.
    #[arg(long)]
    rpc: bool,
    /// Keep listing jobs as their events arrive (Ctrl-C stops).
    #[arg(long)]
    follow: bool,
}

/// `340ms`, `4s 200ms`, `2m 5s` (humantime), rounded to what a person reads.
pub fn duration(ms: u64) -> String {
    let rounded = match ms {
        0..1_000 => ms,
        1_000..60_000 => ms / 100 * 100,
        _ => ms / 1000 * 1000,
    };
    humantime::format_duration(Duration::from_millis(rounded)).to_string()
}

/// The command that shows or repairs a dead job.
pub fn next_command(job: &JobView) -> Option<String> {
    let d = job.dead.first()?;
    Some(format!(
        "warren dlq show {}    then, once the cause is fixed:  warren dlq replay --step {} --job {} --reason \"…\"",
        d.message_id, d.step, job.job
    ))
}

/// One step of `warren status`: its line, its branches when it fanned out, its error and reports.
fn print_step(s: &warren_ops::history::StepView, submitted_ms: u64, selected: Option<u64>) {
    let n = s.branches.len();
    let times: Vec<u64> = s.branches.iter().filter_map(|b| b.duration_ms).collect();
    let longest = times.iter().max().copied().unwrap_or(0);
    let summary = if n > 1 {
        format!("{n} messages: {} succeeded, {} dead, longest {}", s.succeeded(), s.dead(), duration(longest))
    } else {
        match s.branches.first() {
            Some(b) => format!(
                "{}{}{}",
                b.outcome,
                b.duration_ms.map(|d| format!(" in {}", duration(d))).unwrap_or_default(),
                if b.attempts > 1 { format!(" (attempt {})", b.attempts) } else { String::new() }
            ),
            None => "reported".to_owned(),
        }
    };
    let offset = s.first_ms.saturating_sub(submitted_ms);
    outln!("  {}  {:>9}  {:<10} {summary}", format_time(s.first_ms), format!("+{}", duration(offset)), s.step);
    if n > 1 {
        for (i, b) in s.branches.iter().enumerate() {
            let at = b.started_ms.map(format_time).unwrap_or_else(|| "-".into());
            let err = b.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            let trial = match b.trial() {
                Some((t, r)) => {
                    let mark = if selected == Some(t) { "  ← selected" } else { "" };
                    format!("  trial {t}: {}{mark}", warren_ops::history::trial_summary(r))
                }
                None => String::new(),
            };
            outln!(
                "      #{i:<3} {at}  {:<9} {:>9}  {}{trial}{err}",
                b.outcome,
                b.duration_ms.map(duration).unwrap_or_default(),
                b.message_id
            );
        }
    } else if let Some(err) = s.branches.first().and_then(|b| b.error.as_deref()) {
        outln!("      {err}");
    }
    // A trial's report is on its line above.
    for r in s.reports.iter().filter(|r| r.get("trial").is_none()) {
        outln!("      report: {r}");
    }
}

/// `warren status`.
pub async fn status(config: &Config, args: StatusArgs, json: bool) -> Outcome {
    let job: Uuid = args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    // The job id (UUIDv7) says when it was made: read from a minute before.
    let op = connect(config).await?;
    let all = op.job_history(job).await;
    op.close().await;
    let all = all?;
    let mine: Vec<JobEvent> = all.iter().filter(|e| e.job_id == job).cloned().collect();
    let Some(view) = warren_ops::history::fold(&all, true).into_iter().find(|j| j.job == job) else {
        return Err(Fail::from(format!("no events for job {job} in namespace {}", config.namespace)));
    };
    if json {
        let mut v = serde_json::to_value(&view)?;
        v["events"] = serde_json::to_value(&mine)?;
        v["next"] = serde_json::json!(next_command(&view));
        outln!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let took = view.duration_ms.map(|d| format!(" in {}", duration(d))).unwrap_or_default();
    outln!("job {job}");
    outln!("  pipeline {}  {}{took}  submitted {}", view.pipeline, view.state.as_str(), format_time(view.submitted_ms));
    for s in &view.steps {
        print_step(s, view.submitted_ms, view.selected_trial);
    }
    for a in &view.actions {
        let why = a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        outln!("  {} by {}{why}", a.action, a.actor);
    }
    for r in &view.reruns {
        outln!("  re-run as job {r}");
    }
    if let Some(old) = view.rerun_of {
        outln!("  a re-run of job {old}");
    }
    if let Some(next) = next_command(&view) {
        outln!("  dead at {}: {}", view.dead[0].step, view.dead[0].error);
        outln!("  next: {next}");
    }
    Ok(ExitCode::SUCCESS)
}

fn window(args: &JobsArgs) -> Result<(u64, Option<u64>), Fail> {
    let now = warren::envelope::now_ms();
    let since = match args.since.as_deref() {
        None => now.saturating_sub(3_600_000),
        Some(s) if s.chars().all(|c| c.is_ascii_digit()) && s.len() >= 12 => {
            s.parse().map_err(|_| Fail::usage(format!("--since {s}: not a time")))?
        }
        Some(s) => match s.parse::<Uuid>() {
            Ok(id) => warren_ops::history::uuid_time_ms(&id)
                .ok_or_else(|| Fail::usage(format!("--since {s}: not a UUIDv7")))?,
            Err(_) => now.saturating_sub(parse_age(s)?),
        },
    };
    Ok((since, args.until))
}

fn select(jobs: Vec<JobRow>, args: &JobsArgs, since: u64, until: Option<u64>) -> Result<Vec<JobRow>, Fail> {
    let state = match args.state.as_deref() {
        Some(s) => Some(
            JobState::parse(s)
                .ok_or_else(|| Fail::usage(format!("--state {s}: expected running, done, dead or cancelled")))?,
        ),
        None => None,
    };
    Ok(jobs
        .into_iter()
        .filter(|j| j.submitted_ms >= since && until.is_none_or(|u| j.submitted_ms < u))
        .filter(|j| args.pipeline.as_deref().is_none_or(|p| p == &*j.pipeline))
        .filter(|j| state.is_none_or(|s| s == j.state))
        .collect())
}

fn row(j: &JobRow) -> serde_json::Value {
    serde_json::json!({
        "job": j.job.to_string(),
        "pipeline": j.pipeline,
        "state": j.state.as_str(),
        "step": j.step,
        "submitted": format_time(j.submitted_ms),
        "submitted_ms": j.submitted_ms,
        "duration_ms": j.duration_ms,
        "error": j.error,
    })
}

fn print_rows(jobs: &[JobRow], header: bool) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job.to_string(),
                format_time(j.submitted_ms),
                j.pipeline.to_string(),
                j.state.as_str().to_owned(),
                j.step.to_string(),
                j.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = if header { &["job", "submitted", "pipeline", "state", "step", "took"][..] } else { &[][..] };
    crate::print_raw(&crate::table(header, rows, &[5]));
}

/// `warren jobs`: the window's events (from where the stream's write times say the window
/// begins) folded straight into rows, a compact state per job ([`JobRows`]).
pub async fn jobs(config: &Config, args: JobsArgs, json: bool) -> Outcome {
    let (since, until) = window(&args)?;
    let op = connect(config).await?;
    // (Read from a minute before the window: events of a job come after it was submitted.)
    let rows = op.job_rows(since, args.rpc).await?;
    let mut jobs = select(rows.rows_since(since), &args, since, until)?;
    if jobs.len() > args.limit {
        eprintln!("showing the newest {} of {} jobs (--limit N shows more)", args.limit, jobs.len());
        jobs.truncate(args.limit);
    }
    if json && !args.follow {
        outln!("{}", serde_json::Value::Array(jobs.iter().map(row).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    if !args.follow {
        if jobs.is_empty() {
            eprintln!("no jobs in the window (try --since 1d)");
        }
        print_rows(&jobs, true);
        return Ok(ExitCode::SUCCESS);
    }
    follow(op, rows, jobs, &args, since, json).await
}

/// `warren jobs --follow`: each job again whenever its state changes, folded incrementally.
async fn follow(
    op: warren_ops::Operator,
    mut rows: JobRows,
    listed: Vec<JobRow>,
    args: &JobsArgs,
    since: u64,
    json: bool,
) -> Outcome {
    let mut rx = warren::events::subscribe_from(op.client().broker(), op.names(), warren::events::From::Next).await?;
    let mut shown: std::collections::BTreeMap<Uuid, JobState> = listed.iter().map(|j| (j.job, j.state)).collect();
    if !json {
        print_rows(&listed.iter().rev().cloned().collect::<Vec<_>>(), true);
    }
    let stop = warren::shutdown_signal();
    tokio::pin!(stop);
    for seen in 1u64.. {
        let e = tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            e = rx.recv() => match e { Some(e) => e, None => return Err(Fail::from("the events stream closed")) },
        };
        // Keep memory bounded on a long follow: now and then, forget jobs quiet for an hour.
        if seen % 10_000 == 0 {
            let _ = rows.forget_before(warren::envelope::now_ms().saturating_sub(3_600_000));
        }
        if e.kind == EventKind::Report {
            rows.push(&e);
            continue;
        }
        let Some(job) = rows.push(&e) else { continue };
        let Some(view) = rows.row(job) else { continue };
        if select(vec![view.clone()], args, since, None)?.is_empty() || shown.get(&job) == Some(&view.state) {
            continue;
        }
        shown.insert(job, view.state);
        if json {
            outln!("{}", row(&view));
        } else {
            print_rows(&[view], false);
        }
    }
    Ok(ExitCode::SUCCESS)
}
