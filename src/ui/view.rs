//! How dashboard pages become HTML: the embedded templates, rendered by minijinja with HTML
//! autoescaping always on, and [`UiError`], the one error shape of the dashboard (an HTML page
//! with the right status).
//!
//! Must not contain what a page shows (that is `pages` and `actions`) nor registry calls.

use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};

use crate::prompts::RegistryError;
use crate::store::StoreError;

/// Every template, by the name pages render it with. Embedded, so the binary needs no files.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("list.html", include_str!("templates/list.html")),
    ("prompt.html", include_str!("templates/prompt.html")),
    ("diff.html", include_str!("templates/diff.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// Built once; a template that does not compile is a build defect that the unit test below
/// catches, and at run time it turns every page into a 500 rather than a panic.
static ENVIRONMENT: LazyLock<Result<Environment<'static>, minijinja::Error>> =
    LazyLock::new(environment);

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // Prompt templates, messages and authors are user content: they must show as text, never
    // as markup, whatever a template's file name says.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // Printing a misspelt field fails the render instead of showing an empty cell; `if`
    // tests on missing optional fields still work.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// Renders `template` with `ctx` plus what the layout needs on every page.
pub fn render(template: &str, auth: bool, ctx: Value) -> Result<String, UiError> {
    let env = ENVIRONMENT.as_ref().map_err(|e| UiError::internal(e))?;
    let page = env
        .get_template(template)
        .map_err(|e| UiError::internal(&e))?;
    page.render(context! { auth, ..ctx })
        .map_err(|e| UiError::internal(&e))
}

/// A rendered page with `status`.
pub fn page(status: StatusCode, template: &str, auth: bool, ctx: Value) -> Response {
    match render(template, auth, ctx) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How times show on the dashboard: UTC, to the second, the same for every viewer.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A failure the dashboard shows as an error page.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    /// Whether the layout offers a logout (the viewer is logged in, auth is on).
    pub auth: bool,
}

impl UiError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        UiError {
            status,
            title,
            message: message.into(),
            auth: false,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        UiError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        UiError::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }

    fn internal(e: &dyn std::error::Error) -> Self {
        // The cause goes to the log, not to the page: it may name files or queries.
        tracing::error!(error = %crate::error_chain(e), "dashboard page failed");
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The dashboard could not show this page; the gateway's log says why.",
        )
    }

    pub fn with_auth(mut self, auth: bool) -> Self {
        self.auth = auth;
        self
    }
}

impl From<RegistryError> for UiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(what) => UiError::not_found(not_found_text(what)),
            RegistryError::Protected { .. } => {
                UiError::new(StatusCode::FORBIDDEN, "Protected label", e.to_string())
            }
            RegistryError::Invalid(message) => UiError::bad_request(message),
            RegistryError::Store(StoreError::Conflict(message)) => UiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("{message}; reload the page and try again"),
            ),
            other => UiError::internal(&other),
        }
    }
}

/// The registry's own not-found messages read as sentences (`no prompt named …`); the store's
/// name only the missing thing (`version 3 of prompt …`).
fn not_found_text(what: String) -> String {
    if what.starts_with("no ") || what.contains(" never ") {
        what
    } else {
        format!("{what} not found")
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let ctx = context! { title => self.title, message => &self.message };
        match render("error.html", self.auth, ctx) {
            Ok(html) => (self.status, Html(html)).into_response(),
            // The error page itself failed: plain text still says what happened.
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let env = environment().unwrap();
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
    }

    #[test]
    fn content_is_escaped_whatever_the_template() {
        let html = render(
            "error.html",
            false,
            context! { title => "t", message => "<script>alert(1)</script>" },
        )
        .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
    }

    #[test]
    fn store_not_found_messages_become_sentences() {
        assert_eq!(
            not_found_text("version 3 of prompt `a`".into()),
            "version 3 of prompt `a` not found"
        );
        assert_eq!(
            not_found_text("no prompt named `a`".into()),
            "no prompt named `a`"
        );
    }
}
