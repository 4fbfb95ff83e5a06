//! `warren steps`: the registered steps (what their workers announced) and their live workers.

use std::process::ExitCode;

use warren::{Config, Names, registry::Registry};

use crate::{Fail, Outcome, connect};

/// `warren steps` arguments.
#[derive(Debug, clap::Args)]
pub struct StepsArgs {
    /// Show one step's whole descriptor (parameters with their types, ranges and defaults).
    step: Option<String>,
}

/// The registry of the configured namespace.
pub async fn registry(client: &warren::Client, config: &Config) -> Result<Registry, Fail> {
    let names = Names::new(&config.namespace);
    warren::registry::read(client.broker(), &names)
        .await
        .map_err(|e| Fail::from(format!("cannot read the step registry: {e}")))
}

/// `warren steps`.
pub async fn run(config: &Config, args: StepsArgs, json: bool) -> Outcome {
    let client = connect(config).await?.into_client();
    let registry = registry(&client, config).await?;
    let out = match args.step {
        Some(step) => describe(&registry, &step, config, json),
        None => list(&client, &registry, config, json).await,
    };
    client.broker().close().await;
    out
}

/// One step: what it takes and sends, its live workers and its parameters as a table.
fn describe(registry: &Registry, step: &str, config: &Config, json: bool) -> Outcome {
    let entry = registry.steps.get(step).ok_or_else(|| {
        Fail::usage(format!("no worker has announced step `{step}` in namespace {}", config.namespace))
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(entry)?);
        return Ok(ExitCode::SUCCESS);
    }
    let d = &entry.descriptor;
    outln!("{} {}: {}", d.step, d.version, d.about);
    outln!("takes {} -> sends {}{}", d.input, d.output, if d.fan_out { " (many)" } else { "" });
    let live: Vec<&warren::registry::WorkerEntry> = entry.workers.iter().filter(|w| w.live).collect();
    if live.is_empty() {
        outln!("live workers: none");
    } else {
        outln!("live workers (what each reads and writes):");
        for w in live {
            outln!("  {}  {}", w.worker, warren::compat::Versions::describe(w.protocol.as_ref()));
        }
    }
    let params = warren_ops::describe::params(d);
    if params.is_empty() {
        outln!("no parameters");
        return Ok(ExitCode::SUCCESS);
    }
    outln!();
    let rows = params
        .into_iter()
        .map(|p| {
            let name = if p.required { format!("{} (required)", p.name) } else { p.name };
            vec![name, p.kind, p.default, p.allowed, p.about]
        })
        .collect();
    crate::print_raw(&crate::table(&["parameter", "type", "default", "allowed", "what it does"], rows, &[]));
    outln!("\n(`warren steps {step} --json` shows the whole descriptor: schemas, concurrency, maximum duration)");
    Ok(ExitCode::SUCCESS)
}

/// A live worker as the list shows it: its name and health URL.
fn worker_cell(w: &warren::registry::WorkerEntry) -> String {
    let health = w.health_addr.as_deref().map(|h| format!(" http://{h}/")).unwrap_or_default();
    format!("{}{health}", w.worker)
}

/// Every registered step with its queue and its live workers.
async fn list(client: &warren::Client, registry: &Registry, config: &Config, json: bool) -> Outcome {
    let names = Names::new(&config.namespace);
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for (step, entry) in &registry.steps {
        let (ready, consumers) =
            warren_ops::queues::counts(client.broker(), &names.step_queue(step)).await.unwrap_or((0, 0));
        let d = &entry.descriptor;
        // Each worker holds one consumer: no more workers are live than the queue has consumers,
        // whatever the last heartbeats said (a killed worker's connection closes at once). The
        // ones heard from last are the live ones.
        let mut live: Vec<&warren::registry::WorkerEntry> = entry.workers.iter().filter(|w| w.live).collect();
        live.sort_by_key(|w| std::cmp::Reverse(w.last_seen_ms));
        live.truncate(consumers as usize);
        rows.push(serde_json::json!({
            "step": step, "version": d.version, "input": d.input, "output": d.output, "fan_out": d.fan_out,
            "about": d.about, "announced": warren::events::format_time(entry.announced_ms),
            "consumers": consumers, "ready": ready,
            "workers": live.iter().map(|w| serde_json::json!({
                "worker": w.worker, "version": w.version, "health": w.health_addr,
                "last_seen": warren::events::format_time(w.last_seen_ms), "protocol": w.protocol,
            })).collect::<Vec<_>>(),
        }));
        let flow = format!("{} -> {}{}", d.input, d.output, if d.fan_out { " (many)" } else { "" });
        let workers: Vec<String> = live.iter().map(|w| worker_cell(w)).collect();
        let workers = if workers.is_empty() { "-".to_owned() } else { workers.join(", ") };
        cells.push(vec![step.clone(), d.version.clone(), consumers.to_string(), ready.to_string(), flow, workers]);
    }
    if json {
        outln!("{}", serde_json::Value::Array(rows));
    } else if cells.is_empty() {
        outln!("no steps registered in namespace {} (workers announce their step when they start)", config.namespace);
    } else {
        let header = ["step", "version", "consumers", "ready", "takes -> sends", "live workers"];
        crate::print_raw(&crate::table(&header, cells, &[2, 3]));
    }
    Ok(ExitCode::SUCCESS)
}
