//! `warren queues`: per step, messages ready and unacked, consumers, dead letters.
//!
//! Ready messages, consumers and dead letters come over AMQP. Unacked counts are not exposed by
//! AMQP; they come from `rabbitmqctl` when it works here (the broker's own machine) and show as
//! `-` otherwise.

use std::{collections::BTreeMap, process::ExitCode};

use warren::{Config, Names};

use crate::{Outcome, connect, steps::counts};

/// `warren queues` arguments.
#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// Steps to show besides the registered ones (repeatable).
    #[arg(long)]
    step: Vec<String>,
    /// Print Prometheus text exposition (queue depth, consumers, dead letters per step), for a
    /// scrape job or an autoscaler.
    #[arg(long, conflicts_with = "json")]
    prometheus: bool,
}

fn unacked() -> BTreeMap<String, u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-s", "name", "messages_unacknowledged"])
        .output();
    let Ok(out) = out else { return BTreeMap::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// `warren queues`.
pub async fn run(config: &Config, args: QueuesArgs, json: bool) -> Outcome {
    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    let unacked = unacked();
    let mut rows = Vec::new();
    let registered = crate::steps::registry(&client, config).await?;
    let steps: std::collections::BTreeSet<String> = registered.steps.into_keys().chain(args.step).collect();
    for step in steps {
        let queue = names.step_queue(&step);
        let Some((ready, consumers)) = counts(client.broker(), &queue).await else { continue };
        let dead = counts(client.broker(), &names.dead_queue(&step)).await.map_or(0, |(n, _)| n);
        rows.push(serde_json::json!({
            "step": step,
            "ready": ready,
            "unacked": unacked.get(&queue),
            "consumers": consumers,
            "dead": dead,
        }));
    }
    client.broker().close().await;
    if args.prometheus {
        print!("{}", prometheus(&config.namespace, &rows));
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("{:<12} {:>8} {:>8} {:>10} {:>6}", "step", "ready", "unacked", "consumers", "dead");
        for r in rows {
            let unacked = r["unacked"].as_u64().map_or("-".to_owned(), |n| n.to_string());
            println!(
                "{:<12} {:>8} {:>8} {:>10} {:>6}",
                r["step"].as_str().unwrap_or(""),
                r["ready"].to_string(),
                unacked,
                r["consumers"].to_string(),
                r["dead"].to_string()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows as Prometheus text exposition.
fn prometheus(ns: &str, rows: &[serde_json::Value]) -> String {
    let metrics = [
        ("warren_queue_ready", "ready", "Messages ready in a step's queue (its backlog)."),
        ("warren_queue_unacked", "unacked", "Messages delivered to a step's workers and not yet acked."),
        ("warren_queue_consumers", "consumers", "Workers consuming a step's queue."),
        ("warren_dead_letters", "dead", "Messages in a step's dead-letter queue."),
    ];
    let mut out = String::new();
    for (name, field, help) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for r in rows {
            if let Some(v) = r[field].as_u64() {
                let step = r["step"].as_str().unwrap_or("");
                out.push_str(&format!("{name}{{namespace=\"{ns}\",step=\"{step}\"}} {v}\n"));
            }
        }
    }
    out
}
