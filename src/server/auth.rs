//! Bearer-key authentication: API keys and virtual keys for `/v1`, admin keys for `/api`.
//! A virtual key's limits are applied here, before the handler (see [`super::key_limits`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::key_limits;

/// `/v1`: a virtual key is checked against its limits; a configured key passes unlimited.
/// With no configured keys the gateway is open (and on loopback): a virtual key presented
/// there still has its limits applied, and other callers share `limits.per_ip_rpm` per
/// address.
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(policy) = bearer(&req).and_then(|key| state.virtual_keys.find(key)) {
        return key_limits::enforce(state.virtual_keys.clone(), policy, req, next).await;
    }
    if state.keys.is_empty() {
        return match (&state.per_ip, client_ip(&req)) {
            (Some(per_ip), Some(ip)) => match per_ip.check(ip) {
                Ok(status) => key_limits::with_request_rate(next.run(req).await, status),
                Err(denied) => {
                    key_limits::requests_refused(&format!("client {ip}"), "client_ip", denied)
                }
            },
            _ => next.run(req).await,
        };
    }
    match bearer(&req) {
        None => ApiError::unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header as \
             'Authorization: Bearer YOUR_KEY'.",
        )
        .into_response(),
        Some(key) if state.keys.accepts(key) => next.run(req).await,
        Some(_) => ApiError::unauthorized("Incorrect API key provided.").into_response(),
    }
}

/// Admin routes: open when the gateway has no keys at all (it then listens on loopback only),
/// otherwise only to an admin key.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.keys.is_empty() {
        return next.run(req).await;
    }
    match bearer(&req) {
        None => ApiError::unauthorized(
            "This endpoint needs an admin key in the Authorization header ('Authorization: \
             Bearer ADMIN_KEY').",
        )
        .into_response(),
        Some(key) if state.admin_keys.accepts(key) => next.run(req).await,
        Some(_) if state.admin_keys.is_empty() => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "invalid_request_error",
            "No admin keys are configured ([auth] admin_key_hashes or admin_key_envs): the \
             admin API is closed.",
        )
        .into_response(),
        Some(_) => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "invalid_request_error",
            "This endpoint needs an admin key; the key provided is not one.",
        )
        .into_response(),
    }
}

/// The peer's address, when the server recorded it (not in tests that call the router
/// directly).
fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}
