//! `warren console`: a web console served by the CLI. No database: the broker's events stream,
//! its queues and dead-letter queues, and the model registry in the artifact store are the
//! source, read through the same [`warren_ops::Operator`] as the `warren` command.
//!
//! # Layout
//!
//! - `auth`: sign-in by token with two roles (a viewer reads; an operator also replays, purges,
//!   cancels, re-runs, promotes and rolls back, each with a reason recorded as the CLI's are);
//!   sessions in an HttpOnly, SameSite=Strict cookie; the CSRF check of every change.
//! - `html`: markup escaped by default (`html!`; nothing builds HTML with `format!`).
//! - `pages`: jobs (search, filters, pages of 50), a job's timeline, failure groups, queues and
//!   steps with charts over time; `models`: the registry's page and its actions.
//! - `actions`: replay (with checked edits), purge, cancel, re-run.
//! - `charts`: bars per minute as inline SVG.
//! - `history`: the live read model of the jobs list (the last `--history-hours` of jobs, a
//!   row each, kept up to date from the events stream).
//!
//! The one script (live reload on job events) and the stylesheet (light and dark) are embedded.

/// The signed-in session, or the handler returns the redirect to the login page.
macro_rules! signed_in_or_return {
    ($app:expr, $headers:expr) => {
        match $crate::console::auth::signed_in(&$app, &$headers) {
            Ok(s) => s,
            Err(r) => return *r,
        }
    };
}

mod actions;
mod auth;
mod charts;
mod history;
mod html;
mod models;
mod pages;

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response, sse},
    routing::{get, post},
};
use futures_util::StreamExt;
use warren::Config;

use crate::{Fail, Outcome, connect};

/// `warren console` arguments.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Where to serve the console.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// A file holding the viewer token (read-only access); default: $WARREN_CONSOLE_VIEWER_TOKEN.
    #[arg(long, value_name = "FILE")]
    viewer_token_file: Option<std::path::PathBuf>,
    /// A file holding the operator token (replay, purge, cancel, rerun, promote); default:
    /// $WARREN_CONSOLE_OPERATOR_TOKEN.
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<std::path::PathBuf>,
    /// Steps whose dead letters to show besides the registered ones (repeatable).
    #[arg(long)]
    step: Vec<String>,
    /// Hours of jobs the console keeps listed in memory, kept up to date from the events stream
    /// (1 to 168); the jobs page reads windows further back from the stream.
    #[arg(long, default_value_t = 24, value_name = "HOURS", value_parser = clap::value_parser!(u64).range(1..=168))]
    history_hours: u64,
}

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Viewer,
    Operator,
}

#[derive(Debug, Clone)]
struct Session {
    role: Role,
    csrf: String,
    expires: Instant,
}

struct App {
    config: Config,
    op: warren_ops::Operator,
    tokens: Vec<(String, Role)>,
    sessions: Mutex<HashMap<String, Session>>,
    extra_steps: Vec<String>,
    /// Ready messages per step, sampled every [`charts::SAMPLE_EVERY`] for the queues' charts.
    depths: Mutex<charts::Depths>,
    /// The jobs of the last `jobs_hours` hours, kept live.
    jobs: Arc<history::LiveJobs>,
    jobs_hours: u64,
}

type Shared = Arc<App>;

const SESSION_COOKIE: &str = "warren_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// `warren console`.
pub async fn run(config: &Config, args: ConsoleArgs) -> Outcome {
    let viewer = auth::read_token(args.viewer_token_file.as_deref(), "WARREN_CONSOLE_VIEWER_TOKEN")?;
    let operator = auth::read_token(args.operator_token_file.as_deref(), "WARREN_CONSOLE_OPERATOR_TOKEN")?;
    let tokens: Vec<(String, Role)> =
        viewer.map(|t| (t, Role::Viewer)).into_iter().chain(operator.map(|t| (t, Role::Operator))).collect();
    if tokens.is_empty() {
        return Err(Fail::usage(
            "the console needs a token: --operator-token-file FILE (or $WARREN_CONSOLE_OPERATOR_TOKEN), and optionally a viewer token",
        ));
    }
    let op = connect(config).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Fail::usage(format!("--listen {}: {e}", args.listen)))?;
    let app = Arc::new(App {
        config: config.clone(),
        op,
        tokens,
        sessions: Mutex::new(HashMap::new()),
        extra_steps: args.step,
        depths: Mutex::new(charts::Depths::new()),
        jobs: history::LiveJobs::new(args.history_hours * 3_600_000),
        jobs_hours: args.history_hours,
    });
    tokio::spawn(sample_depths(app.clone()));
    let (broker, names) = (app.op.client().broker().clone(), app.op.names().clone());
    tokio::spawn(app.jobs.clone().run(broker, names));
    eprintln!("console of namespace {} on http://{}/", config.namespace, args.listen);
    axum::serve(listener, router(app)).with_graceful_shutdown(warren::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Samples every step's ready messages, keeping the last hour for the queues page's charts.
async fn sample_depths(app: Shared) {
    let mut tick = tokio::time::interval(charts::SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Ok(registry) = app.op.registry().await else { continue };
        let rows = app.op.queues_of(&registry, &app.extra_steps, false).await;
        let sample = rows.into_iter().map(|r| (r.step, u64::from(r.ready))).collect();
        if let Ok(mut depths) = app.depths.lock() {
            depths.push_back((warren::envelope::now_ms(), sample));
            while depths.len() > charts::SAMPLES {
                depths.pop_front();
            }
        }
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(pages::jobs_page))
        .route("/search", get(pages::search))
        .route("/jobs/{id}", get(pages::job_page))
        .route("/failures", get(pages::failures_page))
        .route("/queues", get(pages::queues_page))
        .route("/models", get(models::models_page))
        .route("/models/{model}", get(models::model_page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/live", get(live))
        .route("/actions/replay", post(actions::replay))
        .route("/actions/purge", post(actions::purge))
        .route("/actions/cancel", post(actions::cancel))
        .route("/actions/rerun", post(actions::rerun))
        .route("/actions/promote", post(models::promote))
        .route("/actions/rollback", post(models::rollback))
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }))
        .with_state(app)
}

/// Server-sent events: one `job` event per job event of the namespace, for live pages.
async fn live(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if auth::session(&app, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let from = warren::events::From::Next;
    let mut rx = match warren::events::subscribe_from(app.op.client().broker(), app.op.names(), from).await {
        Ok(rx) => rx,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|e| {
        let data =
            serde_json::json!({ "job": e.job_id.to_string(), "kind": e.kind.as_str(), "step": e.step.to_string() });
        Ok::<_, std::convert::Infallible>(sse::Event::default().event("job").data(data.to_string()))
    });
    sse::Sse::new(stream).keep_alive(sse::KeepAlive::default()).into_response()
}
