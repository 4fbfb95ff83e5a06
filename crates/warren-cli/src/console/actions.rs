//! What an operator does from the console: replay (with checked edits), purge, cancel and re-run,
//! each through the same [`warren_ops::Operator`] as the `warren` command, with a reason.

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;
use warren_ops::{Audit, OpsError, Selection, dlq::Edit, operator::ReplayRequest};

use super::{
    Session, Shared,
    auth::operator,
    html::{error_page, html, page},
};

#[derive(Deserialize)]
pub struct ActionForm {
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

macro_rules! operator_or_return {
    ($app:expr, $headers:expr, $csrf:expr) => {
        match operator(&$app, &$headers, $csrf) {
            Ok(s) => s,
            Err(r) => return *r,
        }
    };
}
pub(super) use operator_or_return;

/// Who acts from the console, and why (the reason rule is the operator's, as for the CLI).
pub fn audit(reason: &str) -> Audit {
    Audit::new(Some(format!("console-operator@{}", warren::broker::hostname())), Some(reason.to_owned()))
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

pub async fn replay(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
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
        audit: audit(&form.reason),
    };
    match app.op.replay(&req).await {
        Ok(out) => {
            let body = html!(
                "<h2>Replayed</h2><p id=\"result\">replayed {} dead letter(s) of {}</p><p><a href=\"/failures\">Failures</a> · \
                 <a href=\"/\">Jobs</a></p>",
                out.report.replayed,
                step
            );
            page("Replayed", Some(&s), body).into_response()
        }
        Err(e) => ops_error(&s, "replayed", &e),
    }
}

pub async fn purge(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
    let Some(selection) = selection(&form) else { return error_page(StatusCode::BAD_REQUEST, Some(&s), "no step") };
    match app.op.purge(&selection, &audit(&form.reason)).await {
        Ok(purged) => {
            let step = selection.steps.join(",");
            let body = html!("<h2>Purged</h2><p id=\"result\">purged {} dead letter(s) of {}</p>", purged, step);
            page("Purged", Some(&s), body).into_response()
        }
        Err(e) => ops_error(&s, "purged", &e),
    }
}

pub async fn cancel(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
    let Some(job) = form.job.as_deref().and_then(|j| j.parse::<Uuid>().ok()) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "no job");
    };
    match app.op.cancel(job, &audit(&form.reason)).await {
        Ok(()) => Redirect::to(&format!("/jobs/{job}")).into_response(),
        Err(e) => ops_error(&s, "cancelled", &e),
    }
}

pub async fn rerun(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ActionForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
    let (Some(job), Some(from)) = (form.job.as_deref().and_then(|j| j.parse::<Uuid>().ok()), form.from.as_deref())
    else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "a rerun needs a job and a step");
    };
    let changes = match warren_ops::rerun::parse_changes(&set_lines(&form)) {
        Ok(c) => c,
        Err(e) => return ops_error(&s, "rerun", &e),
    };
    match app.op.rerun(job, from, &changes, &audit(&form.reason)).await {
        Ok((new_job, _)) => Redirect::to(&format!("/jobs/{new_job}")).into_response(),
        Err(e) => ops_error(&s, "rerun", &e),
    }
}
