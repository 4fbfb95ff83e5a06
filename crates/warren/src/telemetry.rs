//! Logging, and the health and metrics endpoint of Warren's binaries (feature `cli`).
//!
//! | path | answers |
//! | --- | --- |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 while the worker holds a consumer on its queue and the broker takes its publishes, else 503 saying why |
//! | `/metrics` | Prometheus text: `warren_messages_total{step,outcome}`, `warren_handler_seconds{step}`, `warren_in_flight{step}`, `warren_retries_total{step}`, `warren_dead_letters_total{step,kind}` |

use axum::{Router, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Health;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init() {
    init_with("text");
}

/// Logging to stderr as `format` says: `text` (colour only on a terminal) or `json` (one object
/// per line, for a log shipper). `RUST_LOG` filters, default `info,lapin=warn`.
pub fn init_with(format: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}

/// Installs the Prometheus recorder for this process (once) and returns its handle.
pub fn metrics_recorder() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0])
                .ok()?
                .install_recorder()
                .ok()
                .inspect(|_| crate::worker::describe_metrics())
        })
        .clone()
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends.
pub async fn serve(addr: &str, health: Health) -> std::io::Result<()> {
    let metrics = metrics_recorder();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let why = health.not_ready_because();
                async move {
                    match why {
                        None => (StatusCode::OK, "ready\n".to_owned()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
                async move { body }
            }),
        );
    axum::serve(listener, app).await
}
