//! `warren topology declare` and `warren topology check`.

use std::process::ExitCode;

use warren::{Config, Declarer, Names};

use crate::{Outcome, connect};

/// `warren topology` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopologyCommand {
    /// Declare the exchanges, the streams and the queues of every registered step and of each
    /// `--step` (idempotent), as their workers declare them.
    #[command(after_help = "Example:\n  warren topology declare --namespace prod --step resize")]
    Declare {
        /// A step to declare besides the registered ones (repeatable).
        #[arg(long)]
        step: Vec<String>,
    },
    /// Report missing queues and queues declared with other arguments than the workers use.
    #[command(after_help = "Example:\n  warren topology check --json")]
    Check {
        /// A step to check besides the registered ones (repeatable).
        #[arg(long)]
        step: Vec<String>,
    },
}

/// Each step's topology: from its descriptor when registered, else the defaults.
async fn topologies(
    client: &warren::Client,
    config: &Config,
    extra: &[String],
) -> Result<Vec<warren::StepTopology>, crate::Fail> {
    let registry = crate::steps::registry(client, config).await?;
    let mut out: Vec<warren::StepTopology> =
        registry.steps.values().map(|e| e.descriptor.topology(config.delivery_limit)).collect();
    for s in extra {
        if !registry.steps.contains_key(s) {
            out.push(warren::StepTopology {
                step: s.clone(),
                delivery_limit: config.delivery_limit,
                max_duration: None,
            });
        }
    }
    Ok(out)
}

/// `warren topology …`.
pub async fn run(config: &Config, cmd: TopologyCommand, json: bool) -> Outcome {
    let client = connect(config).await?.into_client();
    let names = Names::new(&config.namespace);
    let mut rows = Vec::new();
    let mut bad = 0;
    match cmd {
        TopologyCommand::Declare { step } => {
            let mut d = Declarer::new(client.broker(), &names);
            d.base().await?;
            for t in topologies(&client, config, &step).await? {
                d.step(&t).await?;
                rows.push(
                    serde_json::json!({ "step": t.step, "queue": names.step_queue(&t.step), "state": "declared" }),
                );
            }
        }
        TopologyCommand::Check { step } => {
            for t in topologies(&client, config, &step).await? {
                let step = &t.step;
                let queue = names.step_queue(step);
                let exists = warren_ops::queues::counts(client.broker(), &queue).await.is_some();
                let state = if !exists {
                    bad += 1;
                    "missing".to_owned()
                } else {
                    // Declaring an existing queue with the workers' arguments is a no-op, or a conflict.
                    match Declarer::new(client.broker(), &names).step(&t).await {
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
        outln!("{}", serde_json::Value::Array(rows));
    } else {
        for r in &rows {
            outln!("{:<28} {}", r["queue"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or(""));
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
