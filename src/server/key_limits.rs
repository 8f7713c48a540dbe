//! A virtual key's limits on a `/v1` request, answered in this order: request rate (429 with
//! `Retry-After`), budget (429 `insufficient_quota`), concurrent requests (429), allowed
//! models (403), token rate (429 with `Retry-After`). The request rate counts every request
//! (a refused one too) and comes first, so that every response to a rate-limited key,
//! refusals included, carries OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//! headers; tokens are reserved only for a request that passed every other check.
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
    KeyPolicy, OverBudget, RateDenied, RateStatus, Refused, Reservation, VirtualKeys, estimate,
    reset_text,
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
    let mut req = req;
    // The model list shows a restricted key only its models.
    req.extensions_mut().insert(policy.clone());
    // The body, where a limit needs it, is read first, so that the request and token rates
    // are taken together (one round trip when Redis holds them). Refusals still come in the
    // order above: every check is made before any is answered.
    let reads_body = req.method() == Method::POST
        && (!policy.allowed_models.is_empty() || policy.token_limit().is_some());
    let (req, json) = if reads_body {
        match read_json(req).await {
            Ok(read) => read,
            Err(err) => return rates.apply(err.into_response()),
        }
    } else {
        (req, None)
    };
    let over_budget = policy
        .budget
        .and_then(|budget| keys.spend().check(policy.id, budget).err());
    let permit = policy.try_start();
    let model = match &json {
        Some(json) if !policy.allowed_models.is_empty() => {
            check_model(&policy, json.get("model").and_then(Value::as_str))
        }
        _ => Ok(()),
    };
    let wanted = match &json {
        Some(json) => tokens_wanted(&keys, &policy, json),
        None => Ok(None),
    };
    let runs = over_budget.is_none() && permit.is_ok() && model.is_ok();
    let taken = policy
        .take_rates(wanted.as_ref().ok().copied().flatten().filter(|_| runs))
        .await;
    match taken.requests {
        None => {}
        Some(Ok(status)) => rates.requests = Some(status),
        Some(Err(denied)) => {
            return requests_refused(&format!("key `{}`", policy.name), "requests", denied);
        }
    }
    if let Some(over) = over_budget {
        count_refusal("budget");
        return rates.apply(budget_refused(&policy, &over).into_response());
    }
    let Ok(permit) = permit else {
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
    };
    if let Err(err) = model {
        return rates.apply(err.into_response());
    }
    let wanted = match wanted {
        Ok(wanted) => wanted.unwrap_or_default(),
        Err(too_large) => {
            count_refusal("tokens");
            return rates.apply(too_large.into_response());
        }
    };
    let reserved = match taken.tokens {
        None => Reservation::default(),
        Some(Ok((status, reservation))) => {
            rates.tokens = Some(status);
            reservation
        }
        Some(Err(refused)) => {
            count_refusal("tokens");
            rates.tokens = Some(refused.status);
            return rates.apply(tokens_refused(&policy, &refused, wanted).into_response());
        }
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

/// Reads the body (within the gateway's body limit) and puts it back for the handler, with
/// its JSON when it is some: an unreadable body is the handler's to reject, with its own
/// message, and no limit that needs the body applies to it (nothing will run).
async fn read_json(req: Request) -> Result<(Request, Option<Value>), ApiError> {
    let (parts, body) = req.into_parts();
    // The body limit travels in the extensions; the probe carries them so that it applies.
    let mut probe = Request::new(body);
    *probe.extensions_mut() = parts.extensions.clone();
    let bytes = Bytes::from_request(probe, &())
        .await
        .map_err(super::extract::body_error)?;
    let json = serde_json::from_slice::<Value>(&bytes).ok();
    Ok((Request::from_parts(parts, Body::from(bytes)), json))
}

/// The tokens a request reserves against its key's token rate: `None` without one, the
/// refusal when its input alone is over the rate (it could never run).
fn tokens_wanted(
    keys: &VirtualKeys,
    policy: &KeyPolicy,
    json: &Value,
) -> Result<Option<u64>, ApiError> {
    let Some(limit) = policy.token_limit() else {
        return Ok(None);
    };
    let guess = estimate(json, keys.accounting().default_output_tokens);
    if guess.input > limit {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tokens",
            format!(
                "Request too large for key `{}`: its limit is {limit} tokens per minute and \
                 this request needs about {} for its input alone.",
                policy.name, guess.input
            ),
        )
        .code("rate_limit_exceeded"));
    }
    // The output cap may be above the whole rate; the reservation never is, so that such a
    // request can run when the key is idle and pays for what it really used.
    Ok(Some(guess.total().min(limit)))
}

fn tokens_refused(policy: &KeyPolicy, refused: &Refused, wanted: u64) -> ApiError {
    let wait = refused.retry_after.unwrap_or_default();
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "tokens",
        format!(
            "Rate limit reached for tokens on key `{}`: limit {} per minute, requested about \
             {wanted}. Please try again in {}.",
            policy.name,
            refused.status.limit,
            reset_text(wait)
        ),
    )
    .code("rate_limit_exceeded");
    err.retry_after = Some(wait);
    err
}

fn budget_refused(policy: &KeyPolicy, over: &OverBudget) -> ApiError {
    ApiError::new(
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
    .code("insufficient_quota")
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
