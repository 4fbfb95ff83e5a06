//! `warren console`: a web console served by the CLI. No database: the broker's events stream
//! (through `warren_ops::history`), its queues and dead-letter queues are the source.
//!
//! Login is by token, with two roles: a viewer reads, an operator also replays, purges and
//! cancels — each action asks for a reason and is recorded in the events stream as the CLI's are.
//! Sessions are random ids in an HttpOnly, SameSite=Strict cookie; every state-changing request
//! carries the session's CSRF token. Pages are rendered on the server; the one script and the
//! stylesheet are embedded in the binary.

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response, sse},
    routing::{get, post},
};
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;
use warren::{Config, Names, events::format_time};
use warren_ops::{
    Audit, OpsError, Selection,
    dlq::{DeadLetter, Edit, Filter},
    history::{JobState, JobView},
    operator::ReplayRequest,
};

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
    /// A file holding the operator token (replay, purge, cancel); default:
    /// $WARREN_CONSOLE_OPERATOR_TOKEN.
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<std::path::PathBuf>,
    /// Steps whose dead letters to show besides the registered ones (repeatable).
    #[arg(long)]
    step: Vec<String>,
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
}

type Shared = Arc<App>;

const SESSION_COOKIE: &str = "warren_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const STYLE: &str = include_str!("console/style.css");
const SCRIPT: &str = include_str!("console/app.js");

fn read_token(file: Option<&std::path::Path>, env: &str) -> Result<Option<String>, Fail> {
    let token = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Fail::usage(format!("cannot read token file {}: {e}", f.display())))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(env).ok().map(|t| t.trim().to_owned()),
    };
    match token {
        Some(t) if t.len() < 16 => {
            Err(Fail::usage(format!("the token from {env} or its file is shorter than 16 characters")))
        }
        other => Ok(other.filter(|t| !t.is_empty())),
    }
}

/// Equal in time whatever the contents (tokens are compared without early exit).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Markup whose interpolated values were escaped: the `html!` macro is its only maker.
struct Markup(String);

/// A value shown in markup: its text, escaped.
struct Escaped<'a, T: std::fmt::Display>(&'a T);

impl<T: std::fmt::Display> std::fmt::Display for Escaped<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&esc(&self.0.to_string()))
    }
}

/// `format!` for markup: the template is trusted, every value is escaped.
macro_rules! html {
    ($template:literal $(, $arg:expr)* $(,)?) => {
        Markup(format!($template $(, Escaped(&$arg))*))
    };
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `warren console`.
pub async fn run(config: &Config, args: ConsoleArgs) -> Outcome {
    let viewer = read_token(args.viewer_token_file.as_deref(), "WARREN_CONSOLE_VIEWER_TOKEN")?;
    let operator = read_token(args.operator_token_file.as_deref(), "WARREN_CONSOLE_OPERATOR_TOKEN")?;
    let mut tokens = Vec::new();
    if let Some(t) = viewer {
        tokens.push((t, Role::Viewer));
    }
    if let Some(t) = operator {
        tokens.push((t, Role::Operator));
    }
    if tokens.is_empty() {
        return Err(Fail::usage(
            "the console needs a token: --operator-token-file FILE (or $WARREN_CONSOLE_OPERATOR_TOKEN), and optionally a viewer token",
        ));
    }
    let client = connect(config).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Fail::usage(format!("--listen {}: {e}", args.listen)))?;
    let app = Arc::new(App {
        config: config.clone(),
        op: client,
        tokens,
        sessions: Mutex::new(HashMap::new()),
        extra_steps: args.step,
    });
    eprintln!("console of namespace {} on http://{}/", config.namespace, args.listen);
    axum::serve(listener, router(app)).with_graceful_shutdown(warren::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/failures", get(failures_page))
        .route("/queues", get(queues_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/live", get(live))
        .route("/actions/replay", post(replay))
        .route("/actions/purge", post(purge))
        .route("/actions/cancel", post(cancel))
        .route("/actions/rerun", post(rerun))
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }))
        .with_state(app)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let mut sessions = app.sessions.lock().ok()?;
    let now = Instant::now();
    sessions.retain(|_, s| s.expires > now);
    sessions.get(&id).cloned()
}

/// The page for a signed-in user, or a redirect to the login page.
fn signed_in(app: &App, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    session(app, headers).ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
}

fn page(title: &str, s: Option<&Session>, body: &str) -> Html<String> {
    let nav = match s {
        Some(s) => format!(
            "<nav><a href=\"/\">Jobs</a> <a href=\"/failures\">Failures</a> <a href=\"/queues\">Queues &amp; steps</a>\
             <form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button>Sign out ({})</button></form></nav>",
            esc(&s.csrf),
            if s.role == Role::Operator { "operator" } else { "viewer" }
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Warren</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"><script src=\"/assets/app.js\" defer></script></head>\
         <body><header><h1>Warren</h1>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

async fn login_page() -> Html<String> {
    page(
        "Sign in",
        None,
        "<h2>Sign in</h2><form method=\"post\" action=\"/login\" id=\"login\"><label>Token \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label> \
         <button id=\"sign-in\">Sign in</button></form>",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(app): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    let Some(role) = app.tokens.iter().find(|(t, _)| same(t, form.token.trim())).map(|(_, r)| *r) else {
        tracing::warn!("console sign-in refused");
        return (
            StatusCode::UNAUTHORIZED,
            page(
                "Sign in",
                None,
                "<p class=\"error\">That token is not valid.</p><p><a href=\"/login\">Try again</a></p>",
            ),
        )
            .into_response();
    };
    let id = Uuid::new_v4().simple().to_string();
    let csrf = Uuid::new_v4().simple().to_string();
    if let Ok(mut s) = app.sessions.lock() {
        s.insert(id.clone(), Session { role, csrf, expires: Instant::now() + SESSION_TTL });
    }
    let set = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL.as_secs());
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, set), (header::LOCATION, "/".to_owned())]).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let (Some(id), Some(s)) = (cookie(&headers, SESSION_COOKIE), session(&app, &headers))
        && same(&s.csrf, &form.csrf)
        && let Ok(mut sessions) = app.sessions.lock()
    {
        sessions.remove(&id);
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, clear), (header::LOCATION, "/login".to_owned())]).into_response()
}

fn error_page(status: StatusCode, s: Option<&Session>, message: &str) -> Response {
    (status, page("Error", s, &format!("<p class=\"error\">{}</p>", esc(message)))).into_response()
}

async fn read_jobs(app: &App, since_ms: u64) -> Result<Vec<JobView>, String> {
    let names = Names::new(&app.config.namespace);
    let events = warren::events::read_to_now(
        app.op.client().broker(),
        &names,
        warren::events::From::Time(since_ms.saturating_sub(60_000)),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(warren_ops::history::fold(&events, false))
}

#[derive(Deserialize, Default)]
struct JobsQuery {
    state: Option<String>,
    pipeline: Option<String>,
    hours: Option<u64>,
    partial: Option<u8>,
}

async fn jobs_page(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<JobsQuery>) -> Response {
    let s = match signed_in(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 7);
    let since = warren::envelope::now_ms().saturating_sub(hours * 3_600_000);
    let jobs = match read_jobs(&app, since).await {
        Ok(j) => j,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&s),
                &format!("cannot read the events stream: {e}"),
            );
        }
    };
    let state = q.state.as_deref().filter(|s| !s.is_empty()).and_then(JobState::parse);
    let pipeline = q.pipeline.clone().filter(|p| !p.is_empty());
    let rows: String = jobs
        .iter()
        .filter(|j| j.submitted_ms >= since)
        .filter(|j| state.is_none_or(|st| st == j.state))
        .filter(|j| pipeline.as_deref().is_none_or(|p| p == j.pipeline))
        .take(500)
        .map(|j| {
            format!(
                "<tr class=\"{st}\" data-job=\"{id}\"><td><a href=\"/jobs/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
                 <td class=\"state\">{st}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                format_time(j.submitted_ms),
                esc(&j.pipeline),
                esc(&j.step),
                j.duration_ms.map(crate::jobs::duration).unwrap_or_else(|| "-".into()),
                esc(&j.dead.first().map(|d| d.error.clone()).unwrap_or_default()),
                id = j.job,
                st = j.state.as_str(),
            )
        })
        .collect();
    let table = format!(
        "<table id=\"jobs\"><thead><tr><th>job</th><th>submitted</th><th>pipeline</th><th>state</th><th>step</th>\
         <th>took</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    if q.partial == Some(1) {
        return Html(table).into_response();
    }
    let option = |v: &str| {
        let sel = if q.state.as_deref() == Some(v) { " selected" } else { "" };
        format!("<option{sel}>{v}</option>")
    };
    let filters = format!(
        "<form method=\"get\" class=\"filters\">State <select name=\"state\"><option value=\"\">any</option>{}{}{}{}</select> \
         Pipeline <input name=\"pipeline\" value=\"{}\"> Last <input name=\"hours\" type=\"number\" min=\"1\" max=\"168\" value=\"{hours}\"> hours \
         <button>Filter</button></form>",
        option("running"),
        option("done"),
        option("dead"),
        option("cancelled"),
        esc(pipeline.as_deref().unwrap_or(""))
    );
    page("Jobs", Some(&s), &format!("<h2>Jobs</h2>{filters}<div id=\"live\" data-live=\"jobs\">{table}</div>"))
        .into_response()
}

async fn job_page(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = match signed_in(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(job) = id.parse::<Uuid>() else { return error_page(StatusCode::NOT_FOUND, Some(&s), "not a job id") };
    let made = warren_ops::history::uuid_time_ms(&job).unwrap_or(0);
    let jobs = match read_jobs(&app, made).await {
        Ok(j) => j,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e),
    };
    let Some(j) = jobs.into_iter().find(|j| j.job == job) else {
        return error_page(StatusCode::NOT_FOUND, Some(&s), &format!("no events for job {job}"));
    };
    let mut body = format!(
        "<h2>Job {job}</h2><p>pipeline <b>{}</b> · <span class=\"state {st}\" id=\"job-state\">{st}</span> · submitted {}{}</p>",
        esc(&j.pipeline),
        format_time(j.submitted_ms),
        j.duration_ms.map(|d| format!(" · took {}", crate::jobs::duration(d))).unwrap_or_default(),
        st = j.state.as_str()
    );
    body.push_str("<table class=\"timeline\"><thead><tr><th>started</th><th>step</th><th>outcome</th><th>time</th><th>detail</th></tr></thead><tbody>");
    for step in &j.steps {
        for (i, b) in step.branches.iter().enumerate() {
            let name = if step.branches.len() > 1 { format!("{} #{i}", step.step) } else { step.step.clone() };
            body.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                b.outcome,
                b.started_ms.map(format_time).unwrap_or_default(),
                esc(&name),
                b.outcome,
                b.duration_ms.map(crate::jobs::duration).unwrap_or_default(),
                esc(b.error.as_deref().unwrap_or(""))
            ));
        }
        for r in &step.reports {
            body.push_str(&format!(
                "<tr class=\"report\"><td></td><td>{}</td><td>report</td><td></td><td><code>{}</code></td></tr>",
                esc(&step.step),
                esc(&r.to_string())
            ));
        }
    }
    body.push_str("</tbody></table>");
    for a in &j.actions {
        body.push_str(&format!(
            "<p class=\"action\">{} by {}{}</p>",
            esc(&a.action),
            esc(&a.actor),
            a.reason.as_deref().map(|r| format!(": {}", esc(r))).unwrap_or_default()
        ));
    }
    if let Some(d) = j.dead.first() {
        body.push_str(&format!(
            "<h3>Dead at {}</h3><p class=\"error\">{}</p><p>dead letter <code>{}</code></p>",
            esc(&d.step),
            esc(&d.error),
            d.message_id
        ));
        if s.role == Role::Operator {
            body.push_str(&action_form(
                "/actions/replay",
                &s,
                &[("step", &d.step), ("job", &job.to_string())],
                "Replay this job's dead letters",
            ));
        }
    }
    for r in &j.reruns {
        body.push_str(&format!("<p>re-run as <a href=\"/jobs/{r}\">{r}</a></p>"));
    }
    if let Some(old) = j.rerun_of {
        body.push_str(&format!("<p>a re-run of <a href=\"/jobs/{old}\">{old}</a></p>"));
    }
    if s.role == Role::Operator && j.state == JobState::Running {
        body.push_str(&action_form("/actions/cancel", &s, &[("job", &job.to_string())], "Cancel the job"));
    }
    if s.role == Role::Operator && j.state != JobState::Running && j.steps.len() > 1 {
        let options: String =
            j.steps[1..].iter().map(|st| format!("<option>{}</option>", esc(&st.step))).collect::<Vec<_>>().join("");
        body.push_str(&format!(
            "<details><summary>Re-run from a step</summary><form method=\"post\" action=\"/actions/rerun\" class=\"action rerun\">\
             <input type=\"hidden\" name=\"job\" value=\"{job}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             from <select name=\"from\">{options}</select> <textarea name=\"set\" rows=\"2\" cols=\"40\" \
             placeholder=\"step.param=value, one per line (optional)\"></textarea><br><input name=\"reason\" \
             placeholder=\"why (recorded)\" required minlength=\"10\" size=\"40\"> <button>Re-run</button></form></details>",
            esc(&s.csrf)
        ));
    }
    page(&format!("Job {job}"), Some(&s), &body).into_response()
}

/// Edit-and-replay: parameters to change (checked against the step), then replay.
fn edit_form(s: &Session, fields: &[(&str, &str)], count: usize) -> String {
    let hidden: String =
        fields.iter().map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v))).collect();
    format!(
        "<details><summary>Edit and replay</summary><form method=\"post\" action=\"/actions/replay\" class=\"action edit\">{hidden}\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><textarea name=\"set\" rows=\"3\" cols=\"40\" \
         placeholder=\"param=value, one per line\" required></textarea><br><input name=\"reason\" placeholder=\"why (recorded)\" \
         required minlength=\"10\" size=\"40\"> <button>Edit and replay {count}</button></form></details>",
        esc(&s.csrf)
    )
}

fn action_form(action: &str, s: &Session, fields: &[(&str, &str)], label: &str) -> String {
    let hidden: String =
        fields.iter().map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v))).collect();
    format!(
        "<form method=\"post\" action=\"{action}\" class=\"action\">{hidden}<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input name=\"reason\" placeholder=\"why (recorded)\" required minlength=\"10\" size=\"40\"> <button>{}</button></form>",
        esc(&s.csrf),
        esc(label)
    )
}

async fn dead_letters(app: &App) -> Result<Vec<DeadLetter>, String> {
    let names = Names::new(&app.config.namespace);
    let registry = warren::registry::read(app.op.client().broker(), &names).await.map_err(|e| e.to_string())?;
    let mut steps: Vec<String> = registry.steps.into_keys().collect();
    steps.extend(app.extra_steps.iter().cloned());
    steps.sort();
    steps.dedup();
    let mut out = Vec::new();
    for step in steps {
        match warren_ops::dlq::list(app.op.client().broker(), &names, &step, &Filter::default()).await {
            Ok(mut d) => out.append(&mut d),
            Err(warren_ops::dlq::DlqError::UnknownStep { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// A failure group: count, kind, a sample error, the jobs it holds.
type Group = (usize, String, String, std::collections::BTreeSet<String>);

async fn failures_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match signed_in(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let letters = match dead_letters(&app).await {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e),
    };
    let mut groups: std::collections::BTreeMap<(String, String), Group> = std::collections::BTreeMap::new();
    for d in &letters {
        let g = groups.entry((d.step.clone(), d.group.clone())).or_insert((
            0,
            d.kind.clone(),
            d.error.clone(),
            Default::default(),
        ));
        g.0 += 1;
        if let Some(j) = &d.job {
            g.3.insert(j.clone());
        }
    }
    let mut body = String::from("<h2>Failure groups</h2>");
    if groups.is_empty() {
        body.push_str("<p>No dead letters.</p>");
    }
    for ((step, group), (count, kind, sample, jobs)) in &groups {
        body.push_str(&format!(
            "<section class=\"group\" data-group=\"{g}\" data-step=\"{st}\"><h3>{st} · {kind} · <span class=\"count\">{count}</span> dead letter(s)</h3>\
             <p class=\"error\">{}</p><p>group <code>{g}</code> · jobs: {}</p>",
            esc(sample),
            jobs.iter().map(|j| format!("<a href=\"/jobs/{j}\">{}</a>", esc(&j[..j.len().min(13)]))).collect::<Vec<_>>().join(", "),
            g = esc(group),
            st = esc(step),
            kind = esc(kind),
        ));
        if s.role == Role::Operator {
            let fields = [("step", step.as_str()), ("group", group.as_str())];
            body.push_str(&action_form("/actions/replay", &s, &fields, &format!("Replay {count}")));
            body.push_str(&edit_form(&s, &fields, *count));
            body.push_str(&action_form("/actions/purge", &s, &fields, &format!("Purge {count} for good")));
        }
        body.push_str("</section>");
    }
    page("Failures", Some(&s), &body).into_response()
}

async fn queues_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match signed_in(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let rows = match crate::queues::rows(app.op.client(), &app.config, &app.extra_steps).await {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e.message),
    };
    let names = Names::new(&app.config.namespace);
    let registry = warren::registry::read(app.op.client().broker(), &names).await.unwrap_or_default();
    // Rates over the last five minutes, from the events stream.
    let since = warren::envelope::now_ms().saturating_sub(300_000);
    let events = warren::events::read_to_now(app.op.client().broker(), &names, warren::events::From::Time(since))
        .await
        .unwrap_or_default();
    let per_min = |step: &str, kind: warren::EventKind| {
        let n = events.iter().filter(|e| &*e.step == step && e.kind == kind).count();
        format!("{:.1}", n as f64 / 5.0)
    };
    let mut body = String::from(
        "<h2>Queues</h2><table id=\"queues\"><thead><tr><th>step</th><th>ready</th><th>unacked</th><th>consumers</th>\
         <th>dead letters</th><th>done/min</th><th>died/min</th></tr></thead><tbody>",
    );
    for r in &rows {
        let step = r["step"].as_str().unwrap_or("");
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(step),
            r["ready"],
            r["unacked"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
            r["consumers"],
            r["dead"],
            per_min(step, warren::EventKind::Succeeded),
            per_min(step, warren::EventKind::Dead),
        ));
    }
    body.push_str("</tbody></table><h2>Steps</h2><table><thead><tr><th>step</th><th>version</th><th>takes → sends</th><th>live workers</th></tr></thead><tbody>");
    for (step, e) in &registry.steps {
        let workers: Vec<String> = e.workers.iter().filter(|w| w.live).map(|w| esc(&w.worker)).collect();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
            esc(step),
            esc(&e.descriptor.version),
            esc(&e.descriptor.input),
            esc(&e.descriptor.output),
            if workers.is_empty() { "-".to_owned() } else { workers.join("<br>") }
        ));
    }
    body.push_str("</tbody></table>");
    page("Queues", Some(&s), &body).into_response()
}

/// Server-sent events: one `job` event per job event of the namespace, for live pages.
async fn live(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if session(&app, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let names = Names::new(&app.config.namespace);
    let rx = match warren::events::subscribe_from(app.op.client().broker(), &names, warren::events::From::Next).await {
        Ok(rx) => rx,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let stream = tokio_stream_from(rx).map(|e| {
        let data =
            serde_json::json!({ "job": e.job_id.to_string(), "kind": e.kind.as_str(), "step": e.step.to_string() });
        Ok::<_, std::convert::Infallible>(sse::Event::default().event("job").data(data.to_string()))
    });
    sse::Sse::new(stream).keep_alive(sse::KeepAlive::default()).into_response()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    reason: String,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    job: Option<String>,
    /// Parameters to change before replaying, one `name=value` per line.
    #[serde(default)]
    set: Option<String>,
    /// The step a rerun starts at.
    #[serde(default)]
    from: Option<String>,
}

/// The operator behind a state-changing request, after the CSRF and reason checks.
fn operator(app: &App, headers: &HeaderMap, form: &ActionForm) -> Result<Session, Box<Response>> {
    let Some(s) = session(app, headers) else { return Err(Box::new(StatusCode::UNAUTHORIZED.into_response())) };
    if !same(&s.csrf, &form.csrf) {
        let message = "the form is stale or foreign (CSRF check failed); reload the page";
        return Err(Box::new(error_page(StatusCode::FORBIDDEN, Some(&s), message)));
    }
    if s.role != Role::Operator {
        let message = "viewers cannot change anything: sign in with the operator token";
        return Err(Box::new(error_page(StatusCode::FORBIDDEN, Some(&s), message)));
    }
    Ok(s)
}

/// Who acts from the console, and why (the reason rule is the operator's, as for the CLI).
fn audit(form: &ActionForm) -> Audit {
    Audit::new(Some(format!("console-operator@{}", warren::broker::hostname())), Some(form.reason.clone()))
}

/// An operator's refusal or failure as a page: bad requests are the operator's to fix.
fn ops_error(s: &Session, what: &str, e: &OpsError) -> Response {
    let status = if e.is_usage() {
        StatusCode::BAD_REQUEST
    } else if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    error_page(status, Some(s), &format!("nothing {what}: {e}"))
}

/// The selection of an action on one step's dead letters (a failure group, a job's).
fn selection(form: &ActionForm) -> Option<Selection> {
    let step = form.step.clone().filter(|s| !s.is_empty())?;
    Some(Selection { steps: vec![step], group: form.group.clone(), job: form.job.clone(), ..Default::default() })
}

/// The `set` field: `name=value` per line.
fn set_lines(form: &ActionForm) -> Vec<String> {
    form.set.as_deref().unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

async fn replay(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = match operator(&app, &headers, &form) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(selection) = selection(&form) else { return error_page(StatusCode::BAD_REQUEST, Some(&s), "no step") };
    let set = match warren_ops::edit::parse_assignments("set", &set_lines(&form)) {
        Ok(set) => set,
        Err(e) => return ops_error(&s, "replayed", &e),
    };
    let step = selection.steps.join(",");
    let req = ReplayRequest {
        selection,
        all: false,
        edit: Edit { set, ..Default::default() },
        dry_run: false,
        rate_per_s: None,
        follow: None,
        audit: audit(&form),
    };
    match app.op.replay(&req).await {
        Ok(out) => {
            let body = html!(
                "<h2>Replayed</h2><p id=\"result\">replayed {} dead letter(s) of {}</p><p><a href=\"/failures\">Failures</a> · <a href=\"/\">Jobs</a></p>",
                out.report.replayed,
                step
            );
            page("Replayed", Some(&s), &body.0).into_response()
        }
        Err(e) => ops_error(&s, "replayed", &e),
    }
}

async fn purge(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = match operator(&app, &headers, &form) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(selection) = selection(&form) else { return error_page(StatusCode::BAD_REQUEST, Some(&s), "no step") };
    match app.op.purge(&selection, &audit(&form)).await {
        Ok(purged) => {
            let body = html!(
                "<h2>Purged</h2><p id=\"result\">purged {} dead letter(s) of {}</p>",
                purged,
                selection.steps.join(",")
            );
            page("Purged", Some(&s), &body.0).into_response()
        }
        Err(e) => ops_error(&s, "purged", &e),
    }
}

async fn cancel(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = match operator(&app, &headers, &form) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(job) = form.job.as_deref().and_then(|j| j.parse::<Uuid>().ok()) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "no job");
    };
    match app.op.cancel(job, &audit(&form)).await {
        Ok(()) => Redirect::to(&format!("/jobs/{job}")).into_response(),
        Err(e) => ops_error(&s, "cancelled", &e),
    }
}

async fn rerun(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = match operator(&app, &headers, &form) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(job), Some(from)) = (form.job.as_deref().and_then(|j| j.parse::<Uuid>().ok()), form.from.as_deref())
    else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "a rerun needs a job and a step");
    };
    let changes = match warren_ops::rerun::parse_changes(&set_lines(&form)) {
        Ok(c) => c,
        Err(e) => return ops_error(&s, "rerun", &e),
    };
    match app.op.rerun(job, from, &changes, &audit(&form)).await {
        Ok((new_job, _)) => Redirect::to(&format!("/jobs/{new_job}")).into_response(),
        Err(e) => ops_error(&s, "rerun", &e),
    }
}
