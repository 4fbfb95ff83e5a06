//! `warren dlq`: list, show, stats, replay and purge dead letters.

use std::{collections::BTreeMap, process::ExitCode, sync::Arc};

use warren::{
    Config, Envelope, Names,
    dlq::{self, DeadLetter, Filter, ReplayOptions},
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
}

/// `warren dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    #[command(after_help = "Example:\n  warren dlq list --step validate --error 'row \\d+'")]
    List(Filters),
    /// One dead letter: its headers and decoded payload.
    #[command(after_help = "Example:\n  warren dlq show 0b8e…-message-id")]
    Show {
        /// The message id.
        id: String,
        #[command(flatten)]
        filters: Filters,
    },
    /// Counts by step, kind and error.
    #[command(after_help = "Example:\n  warren dlq stats --json")]
    Stats(Filters),
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
        /// Set a parameter of the step before replaying, e.g. `--set max_depth=3` (repeatable).
        #[arg(long = "set", value_name = "PARAM=VALUE")]
        set: Vec<String>,
    },
    /// Delete dead letters for good.
    #[command(after_help = "Example:\n  warren dlq purge --step ingest --job 01a2… --yes")]
    Purge {
        #[command(flatten)]
        filters: Filters,
        /// Really delete them.
        #[arg(long)]
        yes: bool,
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
    Ok(Filter {
        job: f.job.clone(),
        error_contains: None,
        since_ms,
        error_matches: regex.map(|r| Arc::new(move |e: &str| r.is_match(e)) as dlq::ErrorMatcher),
    })
}

fn steps(f: &Filters) -> Vec<String> {
    if f.step.is_empty() { warren_steps::STEPS.iter().map(|s| (*s).to_owned()).collect() } else { f.step.clone() }
}

fn summary(d: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": d.message_id,
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
    for step in steps(f) {
        match dlq::list(client.broker(), &names, &step, &flt).await {
            Ok(mut d) => out.append(&mut d),
            Err(e) if e.to_string().contains("NOT_FOUND") => {}
            Err(e) => return Err(e.into()),
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
                println!("{:<38} {:<9} {:<11} error", "id", "step", "kind");
                for d in &letters {
                    println!("{:<38} {:<9} {:<11} {}", d.message_id.as_deref().unwrap_or("-"), d.step, d.kind, d.error);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id, filters } => {
            let letters = collect(config, &filters).await?;
            let d = letters
                .iter()
                .find(|d| d.message_id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| Fail::from(format!("no dead letter with id {id}")))?;
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
                let error: String = d.error.lines().next().unwrap_or("").chars().take(80).collect();
                *counts.entry((d.step.clone(), d.kind.clone(), error)).or_default() += 1;
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
        DlqCommand::Replay { filters, limit, dry_run, rate, set } => {
            let rate_per_s = rate
                .as_deref()
                .map(|r| {
                    r.trim_end_matches("/s")
                        .parse::<f64>()
                        .map_err(|_| Fail::usage(format!("--rate {r}: expected N/s such as 50/s")))
                })
                .transpose()?;
            let mut set_params = Vec::new();
            for s in &set {
                let (k, v) =
                    s.split_once('=').ok_or_else(|| Fail::usage(format!("--set {s}: expected PARAM=VALUE")))?;
                let value: rmpv::Value = v
                    .parse::<i64>()
                    .map(Into::into)
                    .or_else(|_| v.parse::<f64>().map(Into::into))
                    .or_else(|_| v.parse::<bool>().map(Into::into))
                    .unwrap_or_else(|_| v.into());
                set_params.push((k.to_owned(), value));
            }
            let flt = filter(&filters)?;
            let client = connect(config).await?;
            let names = Names::new(&config.namespace);
            let mut total = dlq::ReplayReport::default();
            let mut remaining = limit;
            for step in steps(&filters) {
                let options = ReplayOptions { limit: remaining, dry_run, rate_per_s, set_params: set_params.clone() };
                let r = match dlq::replay(client.broker(), &names, &step, &flt, &options).await {
                    Ok(r) => r,
                    Err(e) if e.to_string().contains("NOT_FOUND") => continue,
                    Err(e) => return Err(e.into()),
                };
                total.replayed += r.replayed;
                total.left += r.left;
                remaining = remaining.map(|l| l.saturating_sub(r.replayed));
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "replayed": total.replayed, "left": total.left, "dry_run": dry_run })
                );
            } else {
                let verb = if dry_run { "would replay" } else { "replayed" };
                println!("{verb} {} dead letter(s); {} left in place", total.replayed, total.left);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge { filters, yes } => {
            if !yes {
                return Err(Fail::usage("purge deletes dead letters for good: add --yes"));
            }
            let flt = filter(&filters)?;
            let client = connect(config).await?;
            let names = Names::new(&config.namespace);
            let mut purged = 0;
            for step in steps(&filters) {
                match dlq::purge(client.broker(), &names, &step, &flt).await {
                    Ok(n) => purged += n,
                    Err(e) if e.to_string().contains("NOT_FOUND") => {}
                    Err(e) => return Err(e.into()),
                }
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
