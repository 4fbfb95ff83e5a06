//! Sign-in by token (viewer or operator), sessions in an HttpOnly, SameSite=Strict cookie, and
//! the CSRF and role checks every state-changing request goes through.

use std::time::Instant;

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    App, Role, SESSION_COOKIE, SESSION_TTL, Session, Shared,
    html::{Markup, error_page, page},
};
use crate::Fail;

/// A token from its file, else from the environment; shorter than 16 characters is refused.
pub fn read_token(file: Option<&std::path::Path>, env: &str) -> Result<Option<String>, Fail> {
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
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// The request's session, if it has a live one.
pub fn session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let mut sessions = app.sessions.lock().ok()?;
    let now = Instant::now();
    sessions.retain(|_, s| s.expires > now);
    sessions.get(&id).cloned()
}

/// The page for a signed-in user, or a redirect to the login page.
pub fn signed_in(app: &App, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    session(app, headers).ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
}

/// The operator behind a state-changing request, after the CSRF and role checks.
pub fn operator(app: &App, headers: &HeaderMap, csrf: &str) -> Result<Session, Box<Response>> {
    let Some(s) = session(app, headers) else { return Err(Box::new(StatusCode::UNAUTHORIZED.into_response())) };
    if !same(&s.csrf, csrf) {
        let message = "the form is stale or foreign (CSRF check failed); reload the page";
        return Err(Box::new(error_page(StatusCode::FORBIDDEN, Some(&s), message)));
    }
    if s.role != Role::Operator {
        let message = "viewers cannot change anything: sign in with the operator token";
        return Err(Box::new(error_page(StatusCode::FORBIDDEN, Some(&s), message)));
    }
    Ok(s)
}

pub async fn login_page() -> Html<String> {
    page(
        "Sign in",
        None,
        Markup::literal(
            "<h2>Sign in</h2><form method=\"post\" action=\"/login\" id=\"login\"><label>Token \
             <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label> \
             <button id=\"sign-in\">Sign in</button></form>",
        ),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(app): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    let Some(role) = app.tokens.iter().find(|(t, _)| same(t, form.token.trim())).map(|(_, r)| *r) else {
        tracing::warn!("console sign-in refused");
        let body =
            Markup::literal("<p class=\"error\">That token is not valid.</p><p><a href=\"/login\">Try again</a></p>");
        return (StatusCode::UNAUTHORIZED, page("Sign in", None, body)).into_response();
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
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(State(app): State<Shared>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let (Some(id), Some(s)) = (cookie(&headers, SESSION_COOKIE), session(&app, &headers))
        && same(&s.csrf, &form.csrf)
        && let Ok(mut sessions) = app.sessions.lock()
    {
        sessions.remove(&id);
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, clear), (header::LOCATION, "/login".to_owned())]).into_response()
}
