//! The model registry in the console: models, their versions with metrics and aliases, and
//! promote and roll back with a reason, through the same functions as `warren models`.

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use warren_schemas::models::{AliasMove, Entry};

use super::{
    Role, Session, Shared,
    actions::operator_or_return,
    auth::operator,
    html::{Markup, error_page, hidden, html, page, reason_field},
};

fn aliases_of(aliases: &std::collections::BTreeMap<String, AliasMove>, v: u32) -> String {
    aliases.iter().filter(|(_, m)| m.version == v).map(|(a, _)| a.as_str()).collect::<Vec<_>>().join(", ")
}

fn metrics(e: &Entry) -> String {
    e.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// The deployment's model registry, or the page saying why it cannot be read.
fn models(app: &super::App, s: &Session) -> Result<crate::models::Models, Box<Response>> {
    crate::models::Models::open(&app.config)
        .map_err(|f| Box::new(error_page(StatusCode::SERVICE_UNAVAILABLE, Some(s), &f.message)))
}

pub async fn models_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = signed_in_or_return!(app, headers);
    let store = match models(&app, &s) {
        Ok(store) => store,
        Err(page) => return *page,
    };
    let names = store.names().await.unwrap_or_default();
    let mut rows = Markup::default();
    for n in &names {
        let r = store.registry(n);
        let versions = r.versions().await.map(|v| v.len()).unwrap_or(0);
        let aliases = r.aliases().await.unwrap_or_default();
        let text = aliases.iter().map(|(a, m)| format!("{a} → v{}", m.version)).collect::<Vec<_>>().join(", ");
        rows.push(html!("<tr><td><a href=\"/models/{}\">{}</a></td><td>{}</td><td>{}</td></tr>", n, n, versions, text));
    }
    let body = if names.is_empty() {
        html!("<h2>Models</h2><p>No models are registered in {}.</p>", store.shown())
    } else {
        html!(
            "<h2>Models</h2><table id=\"models\"><thead><tr><th>model</th><th>versions</th><th>aliases</th></tr></thead>\
             <tbody>{}</tbody></table>",
            rows
        )
    };
    page("Models", Some(&s), body).into_response()
}

/// Promote a version to an alias, or roll an alias back: operators only.
fn model_forms(s: &Session, model: &str, e: &Entry) -> Markup {
    if s.role != Role::Operator {
        return Markup::default();
    }
    let version = e.version.to_string();
    html!(
        "<form method=\"post\" action=\"/actions/promote\" class=\"action promote\">{}to <input name=\"to\" value=\"production\" size=\"10\"> \
         {} <button>Promote v{}</button></form>",
        hidden(s, &[("model", model), ("version", &version)]),
        reason_field(),
        e.version
    )
}

pub async fn model_page(State(app): State<Shared>, headers: HeaderMap, Path(model): Path<String>) -> Response {
    let s = signed_in_or_return!(app, headers);
    let store = match models(&app, &s) {
        Ok(store) => store,
        Err(page) => return *page,
    };
    let r = store.registry(&model);
    let versions = r.versions().await.unwrap_or_default();
    if versions.is_empty() {
        return error_page(StatusCode::NOT_FOUND, Some(&s), &format!("no model `{model}` is registered"));
    }
    let aliases = r.aliases().await.unwrap_or_default();
    let rows = Markup::concat(versions.iter().rev().map(|e| {
        html!(
            "<tr data-version=\"{}\"><td>v{}</td><td class=\"aliases\">{}</td><td>{}</td><td>{}</td><td class=\"format\">{}</td><td>{}</td><td>{}</td></tr>",
            e.version,
            e.version,
            aliases_of(&aliases, e.version),
            metrics(e),
            e.candidate["algorithm"].as_str().unwrap_or("?"),
            match &e.onnx {
                Some(o) => format!("onnx ({})", o.producer),
                None => e.format.to_string(),
            },
            warren::events::format_time(e.registered_at_ms),
            model_forms(&s, &model, e)
        )
    }));
    let mut body = html!(
        "<h2>Model {}</h2><table id=\"versions\"><thead><tr><th>version</th><th>aliases</th><th>metrics</th><th>algorithm</th>\
         <th>format</th><th>registered</th><th></th></tr></thead><tbody>{}</tbody></table>",
        model,
        rows
    );
    if s.role == Role::Operator {
        for alias in aliases.keys() {
            body.push(html!(
                "<form method=\"post\" action=\"/actions/rollback\" class=\"action rollback\">{}{} <button>Roll back {}</button></form>",
                hidden(&s, &[("model", &model), ("alias", alias)]),
                reason_field(),
                alias
            ));
        }
    }
    page(&format!("Model {model}"), Some(&s), body).into_response()
}

#[derive(Deserialize)]
pub struct ModelForm {
    csrf: String,
    reason: String,
    model: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    alias: Option<String>,
}

fn by(reason: &str) -> String {
    format!("console-operator@{} with the console: {reason}", warren::broker::hostname())
}

pub async fn promote(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ModelForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
    if let Err(e) = super::actions::audit(&form.reason).check("promoting", 1) {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), &format!("nothing promoted: {e}"));
    }
    let (Some(version), Some(to)) = (form.version.as_deref(), form.to.as_deref().filter(|t| !t.is_empty())) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "a promotion needs a version and an alias");
    };
    let store = match models(&app, &s) {
        Ok(store) => store,
        Err(page) => return *page,
    };
    let how = crate::models::Promotion {
        model: &form.model,
        at: version,
        to,
        metric: None,
        margin: 0.0,
        force: false,
        by: by(&form.reason),
    };
    match crate::models::promote_version(&store, &how).await {
        Ok(_) => Redirect::to(&format!("/models/{}", form.model)).into_response(),
        Err(f) => error_page(StatusCode::BAD_REQUEST, Some(&s), &format!("nothing promoted: {}", f.message)),
    }
}

pub async fn rollback(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<ModelForm>) -> Response {
    let s = operator_or_return!(app, headers, &form.csrf);
    if let Err(e) = super::actions::audit(&form.reason).check("rolling back", 1) {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), &format!("nothing rolled back: {e}"));
    }
    let Some(alias) = form.alias.as_deref() else {
        return error_page(StatusCode::BAD_REQUEST, Some(&s), "a rollback needs an alias");
    };
    let store = match models(&app, &s) {
        Ok(store) => store,
        Err(page) => return *page,
    };
    match crate::models::rollback_alias(&store, &form.model, alias, by(&form.reason)).await {
        Ok(_) => Redirect::to(&format!("/models/{}", form.model)).into_response(),
        Err(f) => error_page(StatusCode::BAD_REQUEST, Some(&s), &format!("nothing rolled back: {}", f.message)),
    }
}
