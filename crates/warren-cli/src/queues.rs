//! `warren queues`: per step, messages ready and unacked, consumers, dead letters.
//!
//! Ready messages, consumers and dead letters come over AMQP. Unacked counts are not exposed by
//! AMQP; they come from `rabbitmqctl` when it works here (the broker's own machine) and show as
//! `-` otherwise.

use std::{collections::BTreeMap, process::ExitCode};

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use warren::{Broker, Config, Names};

use crate::{Outcome, connect};

/// `warren queues` arguments.
#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// Steps to show besides the ML steps.
    #[arg(long)]
    step: Vec<String>,
}

async fn counts(broker: &Broker, queue: &str) -> Option<(u32, u32)> {
    let ch = broker.channel().await.ok()?;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ok()?;
    let _ = ch.close(200, "".into()).await;
    Some((q.message_count(), q.consumer_count()))
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
    let steps = warren_steps::STEPS.iter().map(|s| (*s).to_owned()).chain(args.step);
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
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("{:<12} {:>8} {:>8} {:>10} {:>6}", "step", "ready", "unacked", "consumers", "dead");
        for r in rows {
            let unacked = r["unacked"].as_u64().map_or("-".to_owned(), |n| n.to_string());
            println!(
                "{:<12} {:>8} {:>8} {:>10} {:>6}",
                r["step"].as_str().unwrap_or(""),
                r["ready"],
                unacked,
                r["consumers"],
                r["dead"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
