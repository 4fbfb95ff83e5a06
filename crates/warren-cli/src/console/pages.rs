//! The pages: jobs (search, filters, pages of 50), a job's timeline, failure groups, queues and
//! steps with charts over time, and the model registry.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;
use warren::events::format_time;
use warren_ops::{
    digest::JobRow,
    history::{JobState, JobView},
};

use super::{
    Role, Session, Shared, charts,
    html::{Markup, action_form, error_page, hidden, html, job_link, page, reason_field},
};

/// Jobs on one page of the list.
pub const PAGE_SIZE: usize = 50;

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    state: Option<String>,
    pipeline: Option<String>,
    hours: Option<u64>,
    /// A job id, whole or a part of it.
    q: Option<String>,
    /// Which page of [`PAGE_SIZE`] jobs (from 1).
    page: Option<usize>,
    partial: Option<u8>,
}

impl JobsQuery {
    /// The filter of the list: whether it keeps a job (by its id, state and pipeline).
    fn filter(&self) -> impl Fn(Uuid, JobState, &str) -> bool + use<> {
        let state = self.state.as_deref().filter(|s| !s.is_empty()).and_then(JobState::parse);
        let pipeline: Option<String> = self.pipeline.clone().filter(|p| !p.is_empty());
        let needle = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_ascii_lowercase);
        move |job: Uuid, s: JobState, p: &str| {
            state.is_none_or(|st| st == s)
                && pipeline.as_deref().is_none_or(|want| want == p)
                && needle.as_deref().is_none_or(|q| job.to_string().contains(q))
        }
    }

    /// The query string of another page of the same list.
    fn with_page(&self, page: usize) -> String {
        let pairs = [("state", self.state.clone()), ("pipeline", self.pipeline.clone()), ("q", self.q.clone())];
        let mut parts: Vec<String> = pairs
            .into_iter()
            .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={}", encode(&v))))
            .collect();
        parts.push(format!("hours={}", self.hours.unwrap_or(24)));
        parts.push(format!("page={page}"));
        parts.join("&")
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn job_row(j: &JobRow) -> Markup {
    let error = j.error.as_deref().unwrap_or("");
    html!(
        "<tr class=\"{}\" data-job=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{}</td>\
         <td>{}</td><td class=\"error clip\" title=\"{}\">{}</td></tr>",
        j.state.as_str(),
        j.job,
        job_link(&j.job.to_string()),
        format_time(j.submitted_ms),
        &*j.pipeline,
        j.state.as_str(),
        &*j.step,
        j.duration_ms.map(crate::jobs::duration).unwrap_or_else(|| "-".into()),
        error,
        error.lines().next().unwrap_or("")
    )
}

/// The list's table and its pager: `shown`, page `page` of `total` jobs.
fn jobs_table(shown: &[JobRow], total: usize, page: usize, q: &JobsQuery) -> Markup {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let rows = Markup::concat(shown.iter().map(job_row));
    let first = if total == 0 { 0 } else { (page - 1) * PAGE_SIZE + 1 };
    let last = (page * PAGE_SIZE).min(total);
    let mut pager = html!("<p class=\"pager\" id=\"pager\">jobs {}–{} of {}", first, last, total);
    if page > 1 {
        pager.push(html!(" · <a href=\"/?{}\" id=\"newer\">newer</a>", q.with_page(page - 1)));
    }
    if page < pages {
        pager.push(html!(" · <a href=\"/?{}\" id=\"older\">older</a>", q.with_page(page + 1)));
    }
    pager.push(Markup::literal("</p>"));
    html!(
        "<table id=\"jobs\"><thead><tr><th>job</th><th>submitted</th><th>pipeline</th><th>state</th><th>step</th>\
         <th>took</th><th>error</th></tr></thead><tbody>{}</tbody></table>{}",
        rows,
        pager
    )
}

fn jobs_filters(q: &JobsQuery, hours: u64) -> Markup {
    let options = Markup::concat(["running", "done", "dead", "cancelled"].into_iter().map(|v| {
        let selected = if q.state.as_deref() == Some(v) { " selected" } else { "" };
        html!("<option{}>{}</option>", Markup::literal(selected), v)
    }));
    html!(
        "<form method=\"get\" class=\"filters\">Job <input name=\"q\" value=\"{}\" placeholder=\"id or part of it\" size=\"16\"> \
         State <select name=\"state\"><option value=\"\">any</option>{}</select> Pipeline <input name=\"pipeline\" value=\"{}\"> \
         Last <input name=\"hours\" type=\"number\" min=\"1\" max=\"168\" value=\"{}\"> hours <button>Filter</button></form>",
        q.q.as_deref().unwrap_or(""),
        options,
        q.pipeline.as_deref().unwrap_or(""),
        hours
    )
}

pub async fn jobs_page(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<JobsQuery>) -> Response {
    let s = signed_in_or_return!(app, headers);
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 7);
    let since = warren::envelope::now_ms().saturating_sub(hours * 3_600_000);
    let keep = q.filter();
    let wanted = q.page.unwrap_or(1).max(1);
    let (shown, total, page_no, loading) = if app.jobs.covers(since) {
        // From the live model, once it holds what was published before this request (as a read
        // of the stream would); a page past the end shows the last one.
        // (A live page's own refresh, once a second at most, takes the model as it is.)
        if q.partial != Some(1) {
            let (broker, names) = (app.op.client().broker(), app.op.names());
            app.jobs.sync(broker, names, std::time::Duration::from_secs(2)).await;
        }
        let mut snap = app.jobs.page(since, &keep, (wanted - 1) * PAGE_SIZE, PAGE_SIZE);
        let last = wanted.min(snap.total.div_ceil(PAGE_SIZE).max(1));
        if last != wanted {
            snap = app.jobs.page(since, &keep, (last - 1) * PAGE_SIZE, PAGE_SIZE);
        }
        (snap.rows, snap.total, last, snap.loading)
    } else {
        // Further back than the model keeps: read the window and fold it into rows.
        let rows = match app.op.job_rows(since, false).await {
            Ok(r) => r.rows_since(since),
            Err(e) => {
                let message = format!("cannot read the events stream: {e}");
                return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &message);
            }
        };
        let kept: Vec<JobRow> = rows.into_iter().filter(|r| keep(r.job, r.state, &r.pipeline)).collect();
        let last = wanted.min(kept.len().div_ceil(PAGE_SIZE).max(1));
        let shown = kept.iter().skip((last - 1) * PAGE_SIZE).take(PAGE_SIZE).cloned().collect();
        (shown, kept.len(), last, None)
    };
    let mut table = Markup::default();
    if let Some(read) = loading {
        table.push(html!(
            "<p class=\"notice\" id=\"loading\">Loading the jobs of the last {} hours: {} events read so far; \
             the list fills in as they are.</p>",
            app.jobs_hours,
            read
        ));
    }
    table.push(jobs_table(&shown, total, page_no, &q));
    if q.partial == Some(1) {
        return Html(table.into_string()).into_response();
    }
    let body = html!("<h2>Jobs</h2>{}<div id=\"live\" data-live=\"jobs\">{}</div>", jobs_filters(&q, hours), table);
    page("Jobs", Some(&s), body).into_response()
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// The search box: a whole job id opens its page, anything else lists the jobs whose id holds it.
pub async fn search(Query(q): Query<SearchQuery>) -> Response {
    let text = q.q.unwrap_or_default().trim().to_ascii_lowercase();
    match text.parse::<Uuid>() {
        Ok(job) => Redirect::to(&format!("/jobs/{job}")).into_response(),
        Err(_) => Redirect::to(&format!("/?q={}&hours=168", encode(&text))).into_response(),
    }
}

/// A branch's detail: its error, or the trial it trained (marked when it was selected).
fn branch_detail(b: &warren_ops::history::Branch, selected: Option<u64>) -> Markup {
    match (b.error.as_deref(), b.trial()) {
        (Some(e), _) => html!("<span class=\"error\">{}</span>", e),
        (None, Some((t, r))) if selected == Some(t) => {
            html!("trial {}: {} <b class=\"selected\">selected</b>", t, warren_ops::history::trial_summary(r))
        }
        (None, Some((t, r))) => html!("trial {}: {}", t, warren_ops::history::trial_summary(r)),
        (None, None) => Markup::default(),
    }
}

fn timeline(j: &JobView) -> Markup {
    let mut rows = Markup::default();
    for step in &j.steps {
        for (i, b) in step.branches.iter().enumerate() {
            let name = if step.branches.len() > 1 { format!("{} #{i}", step.step) } else { step.step.clone() };
            rows.push(html!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                b.outcome,
                b.started_ms.map(format_time).unwrap_or_default(),
                name,
                b.outcome,
                b.duration_ms.map(crate::jobs::duration).unwrap_or_default(),
                branch_detail(b, j.selected_trial)
            ));
        }
        for r in step.reports.iter().filter(|r| r.get("trial").is_none()) {
            rows.push(html!(
                "<tr class=\"report\"><td></td><td>{}</td><td>report</td><td></td><td><code>{}</code></td></tr>",
                step.step,
                r
            ));
        }
    }
    html!(
        "<table class=\"timeline\"><thead><tr><th>started</th><th>step</th><th>outcome</th><th>time</th><th>detail</th>\
         </tr></thead><tbody>{}</tbody></table>",
        rows
    )
}

/// What an operator may do to the job: replay its dead letters, cancel it, re-run it from a step.
fn job_actions(j: &JobView, s: &Session) -> Markup {
    let job = j.job.to_string();
    let mut out = Markup::default();
    if let Some(d) = j.dead.first() {
        out.push(html!(
            "<h3>Dead at {}</h3><p class=\"error\">{}</p><p>dead letter <code>{}</code></p>",
            d.step,
            d.error,
            d.message_id
        ));
        if s.role == Role::Operator {
            let fields = [("step", d.step.as_str()), ("job", job.as_str())];
            out.push(action_form("/actions/replay", s, &fields, "Replay this job's dead letters"));
        }
    }
    if s.role == Role::Operator && j.state == JobState::Running {
        out.push(action_form("/actions/cancel", s, &[("job", &job)], "Cancel the job"));
    }
    if s.role == Role::Operator && j.state != JobState::Running && j.steps.len() > 1 {
        let options = Markup::concat(j.steps[1..].iter().map(|st| html!("<option>{}</option>", st.step)));
        out.push(html!(
            "<details><summary>Re-run from a step</summary><form method=\"post\" action=\"/actions/rerun\" class=\"action rerun\">\
             {}from <select name=\"from\">{}</select> <textarea name=\"set\" rows=\"2\" cols=\"40\" \
             placeholder=\"step.param=value, one per line (optional)\"></textarea><br>{} <button>Re-run</button></form></details>",
            hidden(s, &[("job", &job)]),
            options,
            reason_field()
        ));
    }
    out
}

pub async fn job_page(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = signed_in_or_return!(app, headers);
    let Ok(job) = id.parse::<Uuid>() else { return error_page(StatusCode::NOT_FOUND, Some(&s), "not a job id") };
    // The live model knows when the job was last heard of (once it holds what was published
    // before this request): read its events up to then, not the rest of the stream.
    let (broker, names) = (app.op.client().broker(), app.op.names());
    let until = if app.jobs.sync(broker, names, std::time::Duration::from_secs(2)).await {
        app.jobs.last_event_ms(job)
    } else {
        None
    };
    let from = warren::events::From::Time(warren_ops::history::uuid_time_ms(&job).unwrap_or(0).saturating_sub(60_000));
    let jobs = match warren::events::read_until(broker, names, from, until).await {
        Ok(events) => warren_ops::history::fold(&events, false),
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e.to_string()),
    };
    let Some(j) = jobs.into_iter().find(|j| j.job == job) else {
        return error_page(StatusCode::NOT_FOUND, Some(&s), &format!("no events for job {job}"));
    };
    let took = j.duration_ms.map(|d| format!(" · took {}", crate::jobs::duration(d))).unwrap_or_default();
    let mut body = html!(
        "<h2>Job <code>{}</code></h2><p>pipeline <b>{}</b> · <span class=\"state {}\" id=\"job-state\">{}</span> · submitted {}{}</p>{}",
        job,
        j.pipeline,
        j.state.as_str(),
        j.state.as_str(),
        format_time(j.submitted_ms),
        took,
        timeline(&j)
    );
    for a in &j.actions {
        let why = a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        body.push(html!("<p class=\"action\">{} by {}{}</p>", a.action, a.actor, why));
    }
    body.push(job_actions(&j, &s));
    for r in &j.reruns {
        body.push(html!("<p>re-run as <a href=\"/jobs/{}\">{}</a></p>", r, r));
    }
    if let Some(old) = j.rerun_of {
        body.push(html!("<p>a re-run of <a href=\"/jobs/{}\">{}</a></p>", old, old));
    }
    page(&format!("Job {job}"), Some(&s), body).into_response()
}

/// Edit-and-replay: parameters to change (checked against the step), then replay.
fn edit_form(s: &Session, fields: &[(&str, &str)], count: usize) -> Markup {
    html!(
        "<details><summary>Edit and replay</summary><form method=\"post\" action=\"/actions/replay\" class=\"action edit\">{}\
         <textarea name=\"set\" rows=\"3\" cols=\"40\" placeholder=\"param=value, one per line\" required></textarea><br>{} \
         <button>Edit and replay {}</button></form></details>",
        hidden(s, fields),
        reason_field(),
        count
    )
}

pub async fn failures_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = signed_in_or_return!(app, headers);
    let registry = app.op.registry().await.unwrap_or_default();
    let mut steps = app.op.steps(&Default::default(), &registry);
    steps.extend(app.extra_steps.iter().cloned());
    steps.sort();
    steps.dedup();
    let letters = match app.op.dead_letters(&Default::default(), &steps).await {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e.to_string()),
    };
    let groups = warren_ops::dlq::groups(&letters);
    let mut body = Markup::literal("<h2>Failure groups</h2>");
    if groups.is_empty() {
        body.push(Markup::literal("<p>No dead letters.</p>"));
    }
    for g in &groups {
        let jobs =
            Markup::concat(g.jobs.iter().map(|j| html!("<a href=\"/jobs/{}\">{}</a> ", j, &j[..j.len().min(13)])));
        body.push(html!(
            "<section class=\"group\" data-group=\"{}\" data-step=\"{}\"><h3>{} · {} · <span class=\"count\">{}</span> dead letter(s)</h3>\
             <p class=\"error\">{}</p><p>group <code>{}</code> · first {} · last {} · jobs: {}</p>",
            g.group,
            g.step,
            g.step,
            g.kind,
            g.count,
            g.sample,
            g.group,
            format_time(g.first_ms),
            format_time(g.last_ms),
            jobs
        ));
        if s.role == Role::Operator {
            let fields = [("step", g.step.as_str()), ("group", g.group.as_str())];
            body.push(action_form("/actions/replay", &s, &fields, &format!("Replay {}", g.count)));
            body.push(edit_form(&s, &fields, g.count));
            body.push(action_form("/actions/purge", &s, &fields, &format!("Purge {} for good", g.count)));
        }
        body.push(Markup::literal("</section>"));
    }
    page("Failures", Some(&s), body).into_response()
}

/// The queues table: counts now, and per minute over the last hour.
fn queues_table(
    rows: &[serde_json::Value],
    rates: &BTreeMap<String, (Vec<u64>, Vec<u64>)>,
    depths: &charts::Depths,
) -> Markup {
    let mut body = Markup::default();
    for r in rows {
        let step = r["step"].as_str().unwrap_or("");
        let (done, died) = rates.get(step).cloned().unwrap_or_else(|| (vec![0; 60], vec![0; 60]));
        let recent = |v: &[u64]| format!("{:.1}", v.iter().rev().take(5).sum::<u64>() as f64 / 5.0);
        body.push(html!(
            "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            step,
            step,
            r["ready"],
            r["unacked"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
            r["consumers"],
            r["dead"],
            recent(&done),
            recent(&died),
            charts::bars(&done, "done", &format!("{step}: done per minute, last hour"), "done"),
            charts::bars(&died, "died", &format!("{step}: died per minute, last hour"), "died"),
            charts::bars(
                &charts::depth_of(depths, step),
                "depth",
                &format!("{step}: ready messages, last hour"),
                "ready"
            )
        ));
    }
    html!(
        "<table id=\"queues\"><thead><tr><th>step</th><th>ready</th><th>unacked</th><th>consumers</th><th>dead letters</th>\
         <th>done/min</th><th>died/min</th><th>done per minute (1 h)</th><th>died per minute (1 h)</th><th>ready (1 h)</th>\
         </tr></thead><tbody>{}</tbody></table>",
        body
    )
}

fn steps_table(registry: &warren::registry::Registry) -> Markup {
    let rows = Markup::concat(registry.steps.iter().map(|(step, e)| {
        let workers = e.workers.iter().filter(|w| w.live).map(|w| w.worker.as_str()).collect::<Vec<_>>().join(", ");
        html!(
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
            step,
            e.descriptor.version,
            e.descriptor.input,
            e.descriptor.output,
            if workers.is_empty() { "-".to_owned() } else { workers }
        )
    }));
    html!(
        "<h2>Steps</h2><table><thead><tr><th>step</th><th>version</th><th>takes → sends</th><th>live workers</th></tr>\
         </thead><tbody>{}</tbody></table>",
        rows
    )
}

pub async fn queues_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = signed_in_or_return!(app, headers);
    let registry = match app.op.registry().await {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&s), &e.to_string()),
    };
    let rows = crate::queues::json_rows(&app.op.queues_of(&registry, &app.extra_steps, true).await);
    let now = warren::envelope::now_ms();
    let rates = match app.jobs.per_minute(now, 60) {
        Some(rates) => rates,
        None => {
            // Still loading: the last hour from the stream.
            let from = warren::events::From::Time(now.saturating_sub(3_600_000));
            let events = app.op.events(from).await.unwrap_or_default();
            warren_ops::history::per_minute(&events, now, 60)
        }
    };
    let depths = app.depths.lock().map(|d| d.clone()).unwrap_or_default();
    let body = html!("<h2>Queues</h2>{}{}", queues_table(&rows, &rates, &depths), steps_table(&registry));
    page("Queues", Some(&s), body).into_response()
}
