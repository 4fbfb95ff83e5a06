//! `warren status JOB` and `warren jobs`: history rebuilt from the events stream alone.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use uuid::Uuid;
use warren::{Config, EventKind, JobEvent, Names};

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
    /// Only jobs with events in this recent window (90s, 30m, 2h, 7d).
    #[arg(long, value_name = "AGE")]
    since: Option<String>,
}

/// The events in the namespace's stream from `from` on, read until it has been quiet a moment.
pub async fn read_all(config: &Config, from: warren::events::From) -> Result<Vec<JobEvent>, Fail> {
    let client = connect(config).await?;
    let mut rx = warren::events::subscribe_from(client.broker(), &Names::new(&config.namespace), from).await?;
    let mut events = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(800), rx.recv()).await {
        events.push(e);
    }
    client.broker().close().await;
    Ok(events)
}

fn state(events: &[&JobEvent]) -> &'static str {
    let cancelled = |e: &JobEvent| {
        e.kind == EventKind::Cancelled
            || warren::events::OperatorAction::from_event(e).is_some_and(|a| a.action == "cancel")
    };
    if events.iter().any(|e| e.kind == EventKind::Succeeded && e.last_step) {
        "done"
    } else if events.iter().any(|e| cancelled(e)) {
        "cancelled"
    } else if events.iter().any(|e| e.kind == EventKind::Dead) {
        "dead"
    } else {
        "running"
    }
}

fn time(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

/// `warren status`.
pub async fn status(config: &Config, args: StatusArgs, json: bool) -> Outcome {
    let job: Uuid = args.job.parse().map_err(|_| Fail::usage(format!("`{}` is not a job id (a UUID)", args.job)))?;
    // The job id (UUIDv7) says when it was made: read from a minute before.
    let made_ms = job.get_timestamp().map(|t| t.to_unix()).map_or(0, |(s, n)| s * 1000 + u64::from(n) / 1_000_000);
    let all = read_all(config, warren::events::From::Time(made_ms.saturating_sub(60_000))).await?;
    let events: Vec<&JobEvent> = all.iter().filter(|e| e.job_id == job).collect();
    if events.is_empty() {
        return Err(Fail::from(format!("no events for job {job} in namespace {}", config.namespace)));
    }
    if json {
        let out = serde_json::json!({
            "job": job.to_string(),
            "pipeline": events[0].pipeline.to_string(),
            "state": state(&events),
            "events": events,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("job {job}  pipeline {}  {}", events[0].pipeline, state(&events));
    for e in &events {
        let detail = match e.kind {
            EventKind::Succeeded => format!(
                "{} ms, {} out{}",
                e.duration_ms.unwrap_or(0),
                e.outputs,
                if e.last_step { ", job complete" } else { "" }
            ),
            EventKind::Retrying => {
                format!("retry in {} ms: {}", e.delay_ms.unwrap_or(0), e.error.clone().unwrap_or_default())
            }
            EventKind::Dead => {
                format!("{}: {}", e.error_kind.clone().unwrap_or_default(), e.error.clone().unwrap_or_default())
            }
            EventKind::Report => {
                e.detail.as_ref().map(|d| serde_json::to_string(d).unwrap_or_default()).unwrap_or_default()
            }
            _ => String::new(),
        };
        println!("  {}  {:<9} {:<10} attempt {}  {}  {}", time(e.at_ms), e.step, e.kind, e.attempt, e.worker, detail);
    }
    Ok(ExitCode::SUCCESS)
}

/// `warren jobs`.
pub async fn jobs(config: &Config, args: JobsArgs, json: bool) -> Outcome {
    let since =
        args.since.as_deref().map(parse_age).transpose()?.map(|age| warren::envelope::now_ms().saturating_sub(age));
    let from = since.map_or(warren::events::From::First, |s| warren::events::From::Time(s.saturating_sub(60_000)));
    let all = read_all(config, from).await?;
    let mut by_job: BTreeMap<Uuid, Vec<&JobEvent>> = BTreeMap::new();
    for e in &all {
        if e.job_id.is_nil()
            || e.kind == EventKind::Operator
            || args.pipeline.as_deref().is_some_and(|p| p != &*e.pipeline)
        {
            continue;
        }
        by_job.entry(e.job_id).or_default().push(e);
    }
    by_job.retain(|_, evs| since.is_none_or(|s| evs.iter().any(|e| e.at_ms >= s)));
    let rows: Vec<serde_json::Value> = by_job
        .iter()
        .map(|(job, evs)| {
            serde_json::json!({
                "job": job.to_string(),
                "pipeline": evs[0].pipeline.to_string(),
                "state": state(evs),
                "first_ms": evs.iter().map(|e| e.at_ms).min(),
                "last_ms": evs.iter().map(|e| e.at_ms).max(),
                "last_step": evs.iter().max_by_key(|e| e.at_ms).map(|e| e.step.to_string()),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("{:<38} {:<14} {:<8} last step", "job", "pipeline", "state");
        for r in rows {
            println!(
                "{:<38} {:<14} {:<8} {}",
                r["job"].as_str().unwrap_or(""),
                r["pipeline"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["last_step"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
