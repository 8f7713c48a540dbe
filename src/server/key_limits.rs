//! A virtual key's limits on a `/v1` request, in this order: request rate (429 with
//! `Retry-After`), budget (429 `insufficient_quota`), concurrent requests (429), allowed
//! models (403), token rate (429 with `Retry-After`). Rates are counted first so that every
//! response to a rate-limited key, refusals included, carries OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
//!
//! Allowed models are checked here, on the body's `model`, rather than in each handler: one
//! place covers chat, completions and embeddings. A model-restricted key must name its model
//! in the body; one left for a registry prompt to fill in is refused, since the prompt's
//! model is only known later.
//!
//! A token-limited request reserves an estimate of its tokens before the call (see
//! `limits::estimate`); when the response is over (for a stream, its last chunk or the client
//! going away) the reservation is settled on the usage the model reported, and the request's
//! cost is added to the key's spend. A concurrency slot is held until then too.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use crate::limits::{
    KeyPolicy, RateDenied, RateStatus, Reservation, VirtualKeys, estimate, reset_text,
};
use crate::telemetry::{Exchange, KeyRef, Record, names};

pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
pub const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
pub const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";

/// The rate headers a response carries.
#[derive(Default, Clone, Copy)]
struct Rates {
    requests: Option<RateStatus>,
    tokens: Option<RateStatus>,
}

impl Rates {
    fn apply(self, mut resp: Response) -> Response {
        let h = resp.headers_mut();
        if let Some(r) = self.requests {
            set_rate_headers(h, r, [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS]);
        }
        if let Some(t) = self.tokens {
            set_rate_headers(h, t, [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS]);
        }
        resp
    }
}

pub async fn enforce(
    keys: Arc<VirtualKeys>,
    policy: Arc<KeyPolicy>,
    req: Request,
    next: Next,
) -> Response {
    let exchange = req.extensions().get::<Arc<Exchange>>().cloned();
    if let Some(ex) = &exchange {
        ex.update(|r| {
            r.key = Some(KeyRef {
                id: policy.id,
                name: policy.name.clone(),
            });
        });
        if policy.record_content {
            ex.record_content_for_key();
        }
    }
    let mut rates = Rates {
        requests: None,
        tokens: policy.token_status(),
    };
    match policy.check_rate().await {
        None => {}
        Some(Ok(status)) => rates.requests = Some(status),
        Some(Err(denied)) => {
            return requests_refused(&format!("key `{}`", policy.name), "requests", denied);
        }
    }
    if let Some(budget) = policy.budget
        && let Err(over) = keys.spend().check(policy.id, budget)
    {
        let err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            format!(
                "Key `{}` has spent its budget: ${:.6} of ${:.6} this {}. It resets at {}.",
                policy.name,
                micro_to_usd(over.spent_micro_usd),
                micro_to_usd(over.budget.micro_usd),
                over.budget.period.as_str(),
                over.resets_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        )
        .code("insufficient_quota");
        count_refusal("budget");
        return rates.apply(err.into_response());
    }
    let permit = match policy.try_start() {
        Ok(permit) => permit,
        Err(_taken) => {
            let err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                format!(
                    "Too many concurrent requests on key `{}`: at most {} at a time.",
                    policy.name,
                    policy.max_concurrent.unwrap_or_default()
                ),
            )
            .code("concurrency_limit_exceeded");
            count_refusal("concurrency");
            return rates.apply(err.into_response());
        }
    };
    let mut req = req;
    // The model list shows a restricted key only its models.
    req.extensions_mut().insert(policy.clone());
    let reads_body = req.method() == Method::POST
        && (!policy.allowed_models.is_empty() || policy.token_limit().is_some());
    let (req, reserved) = if reads_body {
        match check_body(&keys, &policy, req, &mut rates).await {
            Ok(checked) => checked,
            Err(err) => return rates.apply(err.into_response()),
        }
    } else {
        (req, Reservation::default())
    };
    if let Some(ex) = &exchange {
        let (keys, policy) = (keys.clone(), policy.clone());
        ex.on_finish(move |record| settle(&keys, &policy, reserved, record));
    }
    let resp = next.run(req).await;
    let resp = match permit {
        Some(permit) => resp.map(|body| {
            Body::new(HoldsPermit {
                body,
                _permit: permit,
            })
        }),
        None => resp,
    };
    rates.apply(resp)
}

/// 429 for a request over a request rate, with the rate headers and `Retry-After`.
/// Counts a request refused by `limit` in the metrics.
fn count_refusal(limit: &'static str) {
    metrics::counter!(names::RATE_LIMITED, "limit" => limit).increment(1);
}

pub fn requests_refused(whose: &str, limit: &'static str, denied: RateDenied) -> Response {
    count_refusal(limit);
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        format!(
            "Rate limit reached for requests on {whose}: limit {} per minute. Please try \
             again in {}.",
            denied.status.limit,
            reset_text(denied.retry_after)
        ),
    )
    .code("rate_limit_exceeded");
    err.retry_after = Some(denied.retry_after);
    with_request_rate(err.into_response(), denied.status)
}

/// Adds the `x-ratelimit-*-requests` headers.
pub fn with_request_rate(resp: Response, status: RateStatus) -> Response {
    Rates {
        requests: Some(status),
        tokens: None,
    }
    .apply(resp)
}

fn micro_to_usd(micro: i64) -> f64 {
    micro as f64 / 1e6
}

/// Settles the token reservation and counts the request's cost, once its response is over.
fn settle(keys: &VirtualKeys, policy: &Arc<KeyPolicy>, reserved: Reservation, record: &Record) {
    let used = match record.usage {
        Some(u) => u.input + u.output,
        // Refused before any model ran: nothing was used.
        None if record.status >= 400 || record.deployment.is_none() => 0,
        // Served, but the usage never arrived: keep the estimate.
        None => reserved.tokens,
    };
    policy.settle_tokens(reserved, used);
    let Some(usage) = record.usage else { return };
    let cost = keys
        .accounting()
        .prices
        .cost(record.deployment.as_deref(), record.model.as_deref(), usage)
        .unwrap_or(0);
    let period = policy
        .budget
        .map_or(crate::store::BudgetPeriod::Month, |b| b.period);
    keys.spend().record(policy.id, period, cost);
}

/// Reads the body (within the gateway's body limit), refuses a model the key may not use,
/// reserves the request's tokens, and puts the body back for the handler. Returns the
/// request and the tokens reserved.
async fn check_body(
    keys: &VirtualKeys,
    policy: &KeyPolicy,
    req: Request,
    rates: &mut Rates,
) -> Result<(Request, Reservation), ApiError> {
    let (parts, body) = req.into_parts();
    // The body limit travels in the extensions; the probe carries them so that it applies.
    let mut probe = Request::new(body);
    *probe.extensions_mut() = parts.extensions.clone();
    let bytes = Bytes::from_request(probe, &())
        .await
        .map_err(super::extract::body_error)?;
    // An unreadable body is the handler's to reject, with its own message; nothing runs, so
    // nothing is reserved.
    let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok((
            Request::from_parts(parts, Body::from(bytes)),
            Reservation::default(),
        ));
    };
    if !policy.allowed_models.is_empty() {
        check_model(policy, json.get("model").and_then(Value::as_str))?;
    }
    let mut reserved = Reservation::default();
    if let Some(limit) = policy.token_limit() {
        let guess = estimate(&json, keys.accounting().default_output_tokens);
        if guess.input > limit {
            count_refusal("tokens");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tokens",
                format!(
                    "Request too large for key `{}`: its limit is {limit} tokens per minute \
                     and this request needs about {} for its input alone.",
                    policy.name, guess.input
                ),
            )
            .code("rate_limit_exceeded"));
        }
        // The output cap may be above the whole rate; the reservation never is, so that such
        // a request can run when the key is idle and pays for what it really used.
        let wanted = guess.total().min(limit);
        match policy.reserve_tokens(wanted).await {
            None => {}
            Some(Ok((status, reservation))) => {
                rates.tokens = Some(status);
                reserved = reservation;
            }
            Some(Err(refused)) => {
                count_refusal("tokens");
                rates.tokens = Some(refused.status);
                let wait = refused.retry_after.unwrap_or_default();
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tokens",
                    format!(
                        "Rate limit reached for tokens on key `{}`: limit {limit} per minute, \
                         requested about {wanted}. Please try again in {}.",
                        policy.name,
                        reset_text(wait)
                    ),
                )
                .code("rate_limit_exceeded");
                err.retry_after = Some(wait);
                return Err(err);
            }
        }
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), reserved))
}

fn check_model(policy: &KeyPolicy, model: Option<&str>) -> Result<(), ApiError> {
    let allowed = policy.allowed_models.join(", ");
    match model {
        Some(model) if policy.allows_model(model) => Ok(()),
        Some(model) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "Key `{}` may not use model `{model}`; it may use: {allowed}.",
                policy.name
            ),
        )
        .param("model")
        .code("model_not_allowed")),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "Key `{}` may use only some models ({allowed}): name one in 'model'.",
                policy.name
            ),
        )
        .param("model")
        .code("model_not_allowed")),
    }
}

fn set_rate_headers(headers: &mut HeaderMap, rate: RateStatus, names: [&'static str; 3]) {
    let [limit, remaining, reset] = names;
    headers.insert(limit, HeaderValue::from(rate.limit));
    headers.insert(remaining, HeaderValue::from(rate.remaining));
    if let Ok(v) = HeaderValue::from_str(&reset_text(rate.reset)) {
        headers.insert(reset, v);
    }
}

/// A response body that holds a concurrency slot until it is finished or dropped.
struct HoldsPermit {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for HoldsPermit {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
