//! Who may use the dashboard. With no keys configured the gateway listens on loopback only and
//! the dashboard is open; otherwise every page and action needs an admin key, presented as
//! `Authorization: Bearer …` or through the login form, which keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui`. Also refuses cross-site form posts, which would
//! otherwise let any web page move labels through a logged-in (or unauthenticated local)
//! browser.
//!
//! Must not contain pages beyond the login form, nor registry calls.

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use super::view::{self, UiError};
use crate::limits::ApiKeyHash;
use crate::server::AppState;

const COOKIE: &str = "pasarela_admin";
const LOGIN_PATH: &str = "/ui/login";

/// Who made a change, as label history records it. Never the key: a prefix of its hash is
/// enough to tell operators' keys apart.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Lets a request through when the dashboard is open or it carries an admin key; sends a
/// browser to the login page otherwise.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
    if !is_read && !same_origin(req.headers()) {
        return UiError::new(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "This form was sent from another site. Use the dashboard's own pages.",
        )
        .into_response();
    }
    let actor = if state.keys.is_empty() {
        Actor("dashboard".to_owned())
    } else {
        match presented_key(req.headers()) {
            Some(key) if state.admin_keys.accepts(&key) => Actor(actor_for(&key)),
            presented => {
                if is_read {
                    return Redirect::to(&login_url(req.uri())).into_response();
                }
                let message = if presented.is_some() {
                    "That key is not an admin key. Log in again with an admin key."
                } else {
                    "Log in with an admin key first."
                };
                return UiError::new(StatusCode::UNAUTHORIZED, "Not logged in", message)
                    .into_response();
            }
        }
    };
    req.extensions_mut().insert(actor);
    next.run(req).await
}

fn actor_for(key: &str) -> String {
    let hash = ApiKeyHash::of(key).to_string();
    // `sha256:` and 8 hex digits: 32 bits tell a handful of operators apart and reveal
    // nothing usable about a 256-bit key.
    let short = hash.get(..15).unwrap_or(&hash);
    format!("dashboard (admin key {short})")
}

/// The key from `Authorization: Bearer …`, else from the login cookie.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned());
    bearer.or_else(|| cookie_key(headers))
}

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        // Hex in the cookie: a key from an environment variable may hold characters a cookie
        // value cannot.
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// False for a browser's cross-site post: its `Origin` names another host, or its
/// `Sec-Fetch-Site` says so. Clients that send neither (curl, scripts) are not browsers
/// riding on someone's cookie, so they pass.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let hosts = [text(header::HOST.as_str()), text("x-forwarded-host")];
        return origin_host
            .is_some_and(|o| hosts.iter().flatten().any(|h| h.eq_ignore_ascii_case(o)));
    }
    !matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"))
}

fn login_url(uri: &axum::http::Uri) -> String {
    let target = uri.path_and_query().map_or("/ui", |p| p.as_str());
    format!("{LOGIN_PATH}?next={}", percent_encode(target))
}

/// Where a login may send the browser on: a dashboard path, never another site
/// (`//evil.example`, `/ui\..`).
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| {
        (*n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
            && !n.contains("//")
            && !n.contains('\\')
            && n.bytes().all(|b| b.is_ascii_graphic())
    })
    .unwrap_or("/ui")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    let logged_in = presented_key(&headers).is_some_and(|k| state.admin_keys.accepts(&k));
    if state.keys.is_empty() || logged_in {
        return Redirect::to(next).into_response();
    }
    login_form(&state, StatusCode::OK, next, None)
}

fn login_form(state: &AppState, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let ctx = context! {
        next,
        error,
        no_admin_keys => state.admin_keys.is_empty(),
    };
    view::page(status, "login.html", false, ctx)
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if !same_origin(&headers) {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            next,
            Some("Cross-site login refused."),
        );
    }
    if state.keys.is_empty() {
        return Redirect::to(next).into_response();
    }
    let key = form.key.trim();
    if !state.admin_keys.accepts(key) {
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That is not an admin key of this gateway."),
        );
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/ui{}",
        hex::encode(key),
        secure_attribute(&headers)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

/// `Secure` when the browser reached us over HTTPS (through a TLS-terminating proxy): the
/// cookie must then never travel in clear. Plain-HTTP deployments would lose it otherwise.
fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

pub async fn logout(State(state): State<AppState>) -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0");
    let to = if state.keys.is_empty() {
        "/ui"
    } else {
        LOGIN_PATH
    };
    ([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/ui/prompts/a?x=1")), "/ui/prompts/a?x=1");
        assert_eq!(safe_next(Some("/ui")), "/ui");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/ui//evil",
            "/ui\\x",
            "/uix",
            "/v1",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn login_url_round_trips_the_path() {
        let uri: axum::http::Uri = "/ui/prompts/a/diff?from=1&to=2".parse().unwrap();
        assert_eq!(
            login_url(&uri),
            "/ui/login?next=/ui/prompts/a/diff%3Ffrom%3D1%26to%3D2"
        );
    }

    #[test]
    fn cookie_holds_the_key_in_hex() {
        let mut headers = HeaderMap::new();
        let value = format!("other=1; {COOKIE}={}", hex::encode("k;ey"));
        headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        assert_eq!(cookie_key(&headers).as_deref(), Some("k;ey"));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            same_origin(&h)
        };
        assert!(with(&[]));
        assert!(with(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(!with(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ]));
        assert!(!with(&[("host", "127.0.0.1:8080"), ("origin", "null")]));
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
        assert!(with(&[("sec-fetch-site", "same-origin")]));
    }
}
