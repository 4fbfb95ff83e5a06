//! `warren queues`: per step, messages ready and unacked, consumers, dead letters.
//!
//! Ready messages, consumers and dead letters come over AMQP. Unacked counts are not exposed by
//! AMQP; they come from `rabbitmqctl` when it works here (the broker's own machine), else from
//! RabbitMQ's management API at the broker's host (port 15672, the AMQP URL's credentials: a user
//! with the `monitoring` tag, as `warren-operator` in deploy/rabbitmq-definitions.json), as in
//! the compose image; `-` when neither answers.

use std::process::ExitCode;

use warren::Config;

use crate::{Outcome, connect};

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

/// `warren queues`.
pub async fn run(config: &Config, args: QueuesArgs, json: bool) -> Outcome {
    let op = connect(config).await?;
    let rows = rows(&op, &args.step).await;
    op.close().await;
    let rows = rows?;
    if args.prometheus {
        crate::print_raw(&prometheus(&config.namespace, &rows));
        return Ok(ExitCode::SUCCESS);
    }
    print_rows(rows, json);
    Ok(ExitCode::SUCCESS)
}

/// Per registered step (and each of `extra`): ready, unacked (where rabbitmqctl or the
/// management API answers), consumers, dead letters; as JSON rows.
pub async fn rows(op: &warren_ops::Operator, extra: &[String]) -> Result<Vec<serde_json::Value>, crate::Fail> {
    Ok(json_rows(&op.queues(extra).await?))
}

/// Queue rows as the JSON `warren queues --json`, the exporter and the console read.
pub fn json_rows(rows: &[warren_ops::queues::QueueRow]) -> Vec<serde_json::Value> {
    rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect()
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
    let op = std::sync::Arc::new(connect(config).await?);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| crate::Fail::usage(format!("--listen {}: {e}", args.listen)))?;
    eprintln!("queue metrics of namespace {} on http://{}/metrics", config.namespace, args.listen);
    let (config, extra) = (config.clone(), args.step);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (op, config, extra) = (op.clone(), config.clone(), extra.clone());
            async move {
                match rows(&op, &extra).await {
                    Ok(rows) => (axum::http::StatusCode::OK, prometheus(&config.namespace, &rows)),
                    Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("# broker: {}\n", e.message)),
                }
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(warren::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
