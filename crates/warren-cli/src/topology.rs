//! `warren topology declare` and `warren topology check`.

use std::process::ExitCode;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use warren::{Config, Declarer, Names};

use crate::{Outcome, connect};

/// `warren topology` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopologyCommand {
    /// Declare the exchanges, the events stream and every step's queues (idempotent).
    #[command(after_help = "Example:\n  warren topology declare --namespace prod")]
    Declare,
    /// Report missing queues and queues declared with other arguments than the workers use.
    #[command(after_help = "Example:\n  warren topology check --json")]
    Check,
}

/// `warren topology …`.
pub async fn run(config: &Config, cmd: TopologyCommand, json: bool) -> Outcome {
    let client = connect(config).await?;
    let names = Names::new(&config.namespace);
    let mut rows = Vec::new();
    let mut bad = 0;
    match cmd {
        TopologyCommand::Declare => {
            let mut d = Declarer::new(client.broker(), &names);
            d.base().await?;
            for step in warren_steps::STEPS {
                d.step(&warren_steps::topology(step, config)).await?;
                rows.push(serde_json::json!({ "step": step, "queue": names.step_queue(step), "state": "declared" }));
            }
        }
        TopologyCommand::Check => {
            for step in warren_steps::STEPS {
                let queue = names.step_queue(step);
                let ch = client.broker().channel().await?;
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                let exists = ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await.is_ok();
                let state = if !exists {
                    bad += 1;
                    "missing".to_owned()
                } else {
                    // Declaring an existing queue with the workers' arguments is a no-op, or a conflict.
                    match Declarer::new(client.broker(), &names).step(&warren_steps::topology(step, config)).await {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => {
                            bad += 1;
                            e.to_string()
                        }
                    }
                };
                rows.push(serde_json::json!({ "step": step, "queue": queue, "state": state }));
            }
        }
    }
    client.broker().close().await;
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for r in &rows {
            println!("{:<28} {}", r["queue"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or(""));
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
