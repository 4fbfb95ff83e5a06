//! Markup that is escaped by default: [`Markup`] is made only by the `html!` macro, which escapes
//! every value it interpolates (a [`Markup`] value goes in as it is), or from a `'static` literal.
//! Nothing in the console builds HTML with `format!`.

use std::fmt::{self, Display, Write};

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};

use super::{Role, Session};

/// HTML whose every interpolated value was escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Markup(String);

impl Markup {
    /// A trusted literal (a `'static` string is written by us, never by a user).
    pub fn literal(s: &'static str) -> Self {
        Self(s.to_owned())
    }

    /// Pieces of markup one after the other.
    pub fn concat(parts: impl IntoIterator<Item = Markup>) -> Self {
        Self(parts.into_iter().map(|m| m.0).collect())
    }

    /// Appends more markup.
    pub fn push(&mut self, more: Markup) {
        self.0.push_str(&more.0);
    }

    /// The HTML text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// What may stand in a template: text is escaped, markup is not.
pub trait Render {
    /// Writes itself as HTML.
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl Render for Markup {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.0)
    }
}

impl<T: Display + ?Sized> Render for T {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        write!(text, "{self}")?;
        out.write_str(&escape(&text))
    }
}

/// A value in a template, rendered by [`Render`].
pub struct Arg<'a, T: Render + ?Sized>(pub &'a T);

impl<T: Render + ?Sized> Display for Arg<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(f)
    }
}

/// `format!` for markup: the template is ours, every value escaped unless it is [`Markup`].
macro_rules! html {
    ($template:literal $(, $arg:expr)* $(,)?) => {
        $crate::console::html::Markup::from_formatted(format!($template $(, $crate::console::html::Arg(&$arg))*))
    };
}
pub(crate) use html;

impl Markup {
    /// Only for the `html!` macro: its output, every value already escaped.
    #[doc(hidden)]
    pub fn from_formatted(s: String) -> Self {
        Self(s)
    }
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the header with the navigation (for a signed-in user) around `body`.
pub fn page(title: &str, s: Option<&Session>, body: Markup) -> Html<String> {
    let nav = match s {
        Some(s) => html!(
            "<nav><a href=\"/\">Jobs</a> <a href=\"/failures\">Failures</a> <a href=\"/queues\">Queues &amp; steps</a> \
             <a href=\"/models\">Models</a><form method=\"get\" action=\"/search\" class=\"inline search\">\
             <input name=\"q\" id=\"search\" placeholder=\"job id\" size=\"20\" aria-label=\"find a job by id\"></form>\
             <form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button>Sign out ({})</button></form></nav>",
            s.csrf,
            if s.role == Role::Operator { "operator" } else { "viewer" }
        ),
        None => Markup::default(),
    };
    let doc = html!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"color-scheme\" content=\"light dark\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · Warren</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"><script src=\"/assets/app.js\" defer></script></head>\
         <body><header><h1>Warren</h1>{}</header><main>{}</main></body></html>",
        title,
        nav,
        body
    );
    Html(doc.into_string())
}

/// An error page with `status`.
pub fn error_page(status: StatusCode, s: Option<&Session>, message: &str) -> Response {
    (status, page("Error", s, html!("<p class=\"error\">{}</p>", message))).into_response()
}

/// Hidden inputs for `fields` and the session's CSRF token.
pub fn hidden(s: &Session, fields: &[(&str, &str)]) -> Markup {
    let mut out =
        Markup::concat(fields.iter().map(|(k, v)| html!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", k, v)));
    out.push(html!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", s.csrf));
    out
}

/// The reason field every action asks for.
pub fn reason_field() -> Markup {
    Markup::literal("<input name=\"reason\" placeholder=\"why (recorded)\" required minlength=\"10\" size=\"40\">")
}

/// A one-button action posting `fields` to `action`, with a reason.
pub fn action_form(action: &str, s: &Session, fields: &[(&str, &str)], label: &str) -> Markup {
    html!(
        "<form method=\"post\" action=\"{}\" class=\"action\">{}{} <button>{}</button></form>",
        action,
        hidden(s, fields),
        reason_field(),
        label
    )
}

/// A job id as a table shows it: its random tail (a UUIDv7 begins with its time, the same for
/// jobs submitted together), linked, the whole id in the title.
pub fn job_link(job: &str) -> Markup {
    let short = job.get(job.len().saturating_sub(12)..).unwrap_or(job);
    html!("<a href=\"/jobs/{}\" title=\"{}\" class=\"job\"><code>…{}</code></a>", job, job, short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_markup_is_not() {
        let evil = "<script>alert('x')</script> & \"quotes\"";
        let inner = html!("<b>{}</b>", evil);
        assert_eq!(
            inner.clone().into_string(),
            "<b>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;</b>"
        );
        let outer = html!("<p>{} {}</p>", inner, 7);
        assert!(outer.into_string().starts_with("<p><b>&lt;script&gt;"), "markup goes in as it is, once escaped");
        assert_eq!(job_link("01a2-<x>-0123456789ab").into_string().matches("&lt;x&gt;").count(), 2);
    }
}
