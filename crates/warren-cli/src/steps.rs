//! `warren steps`: the registered steps (what their workers announced) and their live workers.

use std::process::ExitCode;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
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

/// Ready messages and consumers of a queue (passive declare), if it exists.
pub async fn counts(broker: &warren::Broker, queue: &str) -> Option<(u32, u32)> {
    let ch = broker.channel().await.ok()?;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ok();
    let _ = ch.close(200, "".into()).await;
    q.map(|q| (q.message_count(), q.consumer_count()))
}

/// `warren steps`.
pub async fn run(config: &Config, args: StepsArgs, json: bool) -> Outcome {
    let client = connect(config).await?.into_client();
    let names = Names::new(&config.namespace);
    let registry = registry(&client, config).await?;
    if let Some(step) = args.step {
        let entry = registry.steps.get(&step).ok_or_else(|| {
            Fail::usage(format!("no worker has announced step `{step}` in namespace {}", config.namespace))
        })?;
        outln!("{}", serde_json::to_string_pretty(entry)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for (step, entry) in &registry.steps {
        let (ready, consumers) = counts(client.broker(), &names.step_queue(step)).await.unwrap_or((0, 0));
        let d = &entry.descriptor;
        let live: Vec<&warren::registry::WorkerEntry> = entry.workers.iter().filter(|w| w.live).collect();
        rows.push(serde_json::json!({
            "step": step,
            "version": d.version,
            "input": d.input,
            "output": d.output,
            "fan_out": d.fan_out,
            "about": d.about,
            "announced": warren::events::format_time(entry.announced_ms),
            "consumers": consumers,
            "ready": ready,
            "workers": live.iter().map(|w| serde_json::json!({
                "worker": w.worker, "version": w.version, "health": w.health_addr,
                "last_seen": warren::events::format_time(w.last_seen_ms),
            })).collect::<Vec<_>>(),
        }));
    }
    client.broker().close().await;
    if json {
        outln!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!("no steps registered in namespace {} (workers announce their step when they start)", config.namespace);
        return Ok(ExitCode::SUCCESS);
    }
    let mut cells = Vec::new();
    for r in &rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        let flow = format!("{} -> {}{}", s("input"), s("output"), if r["fan_out"] == true { " (many)" } else { "" });
        let workers: Vec<String> = r["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        let health = w["health"].as_str().map(|h| format!(" http://{h}/")).unwrap_or_default();
                        format!("{}{health}", w["worker"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        cells.push(vec![
            s("step"),
            s("version"),
            r["consumers"].to_string(),
            r["ready"].to_string(),
            flow,
            if workers.is_empty() { "-".to_owned() } else { workers.join(", ") },
        ]);
    }
    crate::print_raw(&crate::table(
        &["step", "version", "consumers", "ready", "takes -> sends", "live workers"],
        cells,
        &[2, 3],
    ));
    Ok(ExitCode::SUCCESS)
}
