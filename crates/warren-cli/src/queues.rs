//! `warren queues`: per step, messages ready and unacked, consumers, dead letters.
//!
//! Ready messages, consumers and dead letters come over AMQP. Unacked counts are not exposed by
//! AMQP; they come from `rabbitmqctl` when it works here (the broker's own machine), else from
//! RabbitMQ's management API at the broker's host (port 15672, the AMQP URL's credentials: a user
//! with the `monitoring` tag, as `warren-operator` in deploy/rabbitmq-definitions.json), as in
//! the compose image; `-` when neither answers.

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

/// Unacked counts per queue name: `rabbitmqctl` where it answers, else the management API.
async fn unacked(config: &Config) -> BTreeMap<String, u64> {
    let local = from_rabbitmqctl();
    if !local.is_empty() {
        return local;
    }
    match config.amqp_urls.first() {
        Some(url) => warren_ops::management::unacked(url).await.unwrap_or_default(),
        None => BTreeMap::new(),
    }
}

fn from_rabbitmqctl() -> BTreeMap<String, u64> {
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
    let client = connect(config).await?.into_client();
    let rows = rows(&client, config, &args.step).await?;
    client.broker().close().await;
    if args.prometheus {
        crate::print_raw(&prometheus(&config.namespace, &rows));
        return Ok(ExitCode::SUCCESS);
    }
    print_rows(rows, json);
    Ok(ExitCode::SUCCESS)
}

/// Per registered step (and each of `extra`): ready, unacked (where rabbitmqctl or the management API answers),
/// consumers, dead letters.
pub async fn rows(
    client: &warren::Client,
    config: &Config,
    extra: &[String],
) -> Result<Vec<serde_json::Value>, crate::Fail> {
    let names = Names::new(&config.namespace);
    let unacked = unacked(config).await;
    let mut rows = Vec::new();
    let registered = crate::steps::registry(client, config).await?;
    let steps: std::collections::BTreeSet<String> = registered.steps.into_keys().chain(extra.iter().cloned()).collect();
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
    Ok(rows)
}

fn print_rows(rows: Vec<serde_json::Value>, json: bool) {
    if json {
        outln!("{}", serde_json::Value::Array(rows));
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["step"].as_str().unwrap_or("").to_owned(),
                r["ready"].to_string(),
                r["unacked"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
                r["consumers"].to_string(),
                r["dead"].to_string(),
            ]
        })
        .collect();
    crate::print_raw(&crate::table(&["step", "ready", "unacked", "consumers", "dead"], cells, &[1, 2, 3, 4]));
}

/// The rows as Prometheus text exposition.
pub fn prometheus(ns: &str, rows: &[serde_json::Value]) -> String {
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

/// `warren exporter` arguments.
#[derive(Debug, clap::Args)]
pub struct ExporterArgs {
    /// Where to serve `/metrics`.
    #[arg(long, default_value = "127.0.0.1:9419", value_name = "ADDR")]
    listen: String,
    /// Steps to cover besides the registered ones (repeatable).
    #[arg(long)]
    step: Vec<String>,
}

/// `warren exporter`: serves the queue gauges of `warren queues --prometheus` on `/metrics`,
/// read from the broker at each scrape, until SIGTERM or Ctrl-C.
pub async fn exporter(config: &Config, args: ExporterArgs) -> Outcome {
    let client = std::sync::Arc::new(connect(config).await?.into_client());
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| crate::Fail::usage(format!("--listen {}: {e}", args.listen)))?;
    eprintln!("queue metrics of namespace {} on http://{}/metrics", config.namespace, args.listen);
    let (config, extra) = (config.clone(), args.step);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (client, config, extra) = (client.clone(), config.clone(), extra.clone());
            async move {
                match rows(&client, &config, &extra).await {
                    Ok(rows) => (axum::http::StatusCode::OK, prometheus(&config.namespace, &rows)),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("# broker: {}\n", e.message)),
                }
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(warren::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
