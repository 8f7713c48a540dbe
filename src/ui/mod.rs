//! The dashboard at `/ui`: server-rendered pages over the prompt registry (prompt list,
//! version history with label badges, label moves and the eval runs that tested each version,
//! side-by-side diffs) and the forms that move and roll back labels, plus its login. Pages are
//! minijinja templates with HTML autoescaping; their little JavaScript only asks for
//! confirmation and requires the "force" box for protected labels.
//!
//! Must not contain SQL or provider calls: everything goes through
//! [`crate::prompts::Registry`] (and its store's eval runs repository).

mod actions;
mod assets;
mod auth;
mod pages;
mod view;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};

use crate::server::AppState;

/// The dashboard's route table, to merge into the gateway's.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::prompt_list))
        .route("/ui/prompts/{name}", get(pages::prompt))
        .route("/ui/prompts/{name}/diff", get(pages::diff))
        .route("/ui/prompts/{name}/labels", post(actions::move_label))
        .route(
            "/ui/prompts/{name}/labels/{label}/rollback",
            post(actions::rollback),
        )
        .route("/ui/logout", post(auth::logout))
        // Everything above needs an admin key when the gateway has keys; what follows
        // cannot, or nobody could log in.
        .route_layer(from_fn_with_state(state, auth::require_admin))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/static/{file}", get(assets::file))
        .layer(from_fn(security_headers))
}

/// Defence in depth behind autoescaping: scripts and styles only from the dashboard's own
/// files (no inline script can run, even if markup slipped through), no framing, forms only to
/// the dashboard, and no key-bearing URL leaked through `Referer`.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}
