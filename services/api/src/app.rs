//! One request's way through: its key authenticated (401 and 429 first), its
//! `Idempotency-Key` if it changes anything, then its command and the reply.

use crate::rpc::{Rpc, RpcError};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ps_contract::ids::MerchantId;
use ps_contract::secret::Secret;
use ps_contract::session::Mode;
use ps_contract::{ApiError, ErrorCode};
use ps_store::api_keys::{self, Authenticated};
use serde_json::Value;
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pool: Pool,
    rpc: Arc<Rpc>,
    mode: Mode,
    /// Requests per key id.
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl AppState {
    pub fn new(pool: Pool, rpc: Rpc, mode: Mode, per_second: u32) -> AppState {
        let quota = Quota::per_second(NonZeroU32::new(per_second.max(1)).expect("at least one"));
        AppState { pool, rpc: Arc::new(rpc), mode, limiter: Arc::new(RateLimiter::keyed(quota)) }
    }
}

/// A request's way past authentication: on to its command, or answered here.
enum Gate {
    Proceed(MerchantId),
    Answered(Response),
}

/// An answer in Moment's error shape, with the request's id.
fn error(request_id: &str, status: StatusCode, e: &ApiError) -> Response {
    with_request_id(request_id, (status, axum::Json(e.to_reply())).into_response())
}

fn with_request_id(request_id: &str, mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("request-id", v);
    }
    r
}

/// Errors of the HTTP layer itself, in the contract's shape.
fn unauthenticated(request_id: &str) -> Response {
    let e = ApiError::new(ErrorCode::InvalidApiKey, "no valid API key: send Authorization: Bearer sk_test_… or sk_…");
    let mut r = error(request_id, StatusCode::UNAUTHORIZED, &e);
    r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

impl AppState {
    /// The key's merchant, or the answer: 401 for any key that does not
    /// authenticate (its reason goes to the log only), 429 past its rate.
    async fn authenticate(&self, headers: &HeaderMap, request_id: &str) -> Gate {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|k| Secret::new(k.trim()));
        let Some(presented) = presented else { return Gate::Answered(unauthenticated(request_id)) };
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "database unavailable: keys cannot be checked");
                return Gate::Answered(unavailable(request_id));
            }
        };
        match api_keys::authenticate(&client, &presented, self.mode).await {
            Ok(Authenticated::Merchant { merchant, key_id }) => match self.limiter.check_key(&key_id) {
                Ok(()) => {
                    tracing::info!(key = %key_id, merchant = %merchant, "authenticated");
                    Gate::Proceed(merchant)
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    let e = ApiError::new(ErrorCode::RateLimited, "too many requests for this key; retry after the time in Retry-After");
                    let mut r = error(request_id, StatusCode::TOO_MANY_REQUESTS, &e);
                    let secs = wait.as_secs() + 1;
                    r.headers_mut().insert("retry-after", HeaderValue::from(secs));
                    Gate::Answered(r)
                }
            },
            Ok(Authenticated::Refused(why)) => {
                tracing::warn!(reason = why.as_str(), "API key refused");
                Gate::Answered(unauthenticated(request_id))
            }
            Err(e) => {
                tracing::error!(error = %ps_runtime::consumer::describe_db_error(&e), "keys cannot be checked");
                Gate::Answered(unavailable(request_id))
            }
        }
    }

    /// Sends the command and answers with its reply, its status by error type.
    /// Its span's context goes with the command (traceparent), so the trace
    /// runs from the HTTP request through the owning service.
    #[tracing::instrument(name = "api.command", skip_all, fields(request_id, routing_key, merchant = %merchant))]
    async fn command(&self, request_id: &str, call: &Call, merchant: &MerchantId, idempotency_key: Option<&str>) -> Response {
        let routing_key = call.routing_key;
        let span = tracing::Span::current();
        span.record("request_id", request_id);
        span.record("routing_key", routing_key);
        match self.rpc.call(routing_key, merchant, idempotency_key, &call.body, request_id).await {
            Ok(reply) => {
                let body = call.shape.reshape(reply.body);
                let status = match body.get("error").and_then(|e| e.get("code")).and_then(Value::as_str) {
                    Some(code) => ErrorCode::parse(code).map_or(500, ErrorCode::http_status),
                    None => 200,
                };
                let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
                if reply.replayed {
                    r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
                }
                with_request_id(request_id, r)
            }
            Err(RpcError::Timeout(after)) => {
                tracing::warn!(routing_key, ?after, "no reply in time");
                let e = ApiError::new(
                    ErrorCode::InternalError,
                    "no answer in time; the request may have been applied: retry it with the same Idempotency-Key",
                );
                error(request_id, StatusCode::GATEWAY_TIMEOUT, &e)
            }
            Err(e) => {
                tracing::error!(routing_key, error = %e, "command not sent");
                unavailable(request_id)
            }
        }
    }
}

fn unavailable(request_id: &str) -> Response {
    let e = ApiError::new(ErrorCode::InternalError, "temporarily unavailable; retry with the same Idempotency-Key");
    error(request_id, StatusCode::SERVICE_UNAVAILABLE, &e)
}

fn request_id() -> String {
    format!("req_{}", uuid::Uuid::now_v7().simple())
}

/// Whether a route changes anything: a mutation needs its `Idempotency-Key`.
#[derive(Clone, Copy)]
pub enum Kind {
    Read,
    Mutation,
}

/// What the client sees of the reply.
pub enum Shape {
    /// The owning service's reply as it is.
    AsIs,
    /// The payment (`pay_…`, as the path gave it) of the session the reply
    /// carries: Moment's payments API over our session commands.
    Payment(String),
}

impl Shape {
    fn reshape(&self, reply: Value) -> Value {
        let Shape::Payment(id) = self else { return reply };
        let missing = || ApiError::param(ErrorCode::PaymentNotFound, "id", format!("no such payment: {id}")).to_reply();
        match reply.get("error").and_then(|e| e.get("code")).and_then(Value::as_str) {
            Some(code) if code == ErrorCode::SessionNotFound.as_str() => missing(),
            Some(_) => reply,
            None => match reply.get("payment") {
                Some(p) if !p.is_null() => p.clone(),
                // The session has not started paying: it has no payment yet.
                _ => missing(),
            },
        }
    }
}

/// A command to send for a request.
pub struct Call {
    pub routing_key: &'static str,
    pub kind: Kind,
    pub shape: Shape,
    pub body: Vec<u8>,
}

impl AppState {
    /// One request: its key authenticated (401 and 429 first), its
    /// `Idempotency-Key` if it is a mutation, then its command.
    pub async fn serve(&self, headers: &HeaderMap, call: Call) -> Response {
        let rid = request_id();
        let merchant = match self.authenticate(headers, &rid).await {
            Gate::Proceed(m) => m,
            Gate::Answered(r) => return r,
        };
        let key = match call.kind {
            Kind::Read => None,
            Kind::Mutation => match idempotency_key(headers) {
                Ok(k) => Some(k),
                Err(e) => return error(&rid, StatusCode::BAD_REQUEST, &e),
            },
        };
        self.command(&rid, &call, &merchant, key).await
    }

    /// A request the API itself refuses (its path or body cannot make a
    /// command): still authenticated first, so an unauthenticated caller
    /// learns nothing from it.
    pub async fn refuse(&self, headers: &HeaderMap, e: ApiError) -> Response {
        let rid = request_id();
        match self.authenticate(headers, &rid).await {
            Gate::Proceed(_) => error(&rid, StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST), &e),
            Gate::Answered(r) => r,
        }
    }
}

/// A path no route serves.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    unknown_route(&format!("{method} {}", uri.path()))
}

pub fn unknown_route(what: &str) -> Response {
    let e = ApiError::new(ErrorCode::UnknownCommand, format!("no such route: {what}"));
    error(&request_id(), StatusCode::NOT_FOUND, &e)
}

/// Mutations carry an `Idempotency-Key` (Moment requires it): a retry with
/// the same key is answered with the first answer, never applied twice.
fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(k)) if !k.trim().is_empty() => Ok(k),
        Some(_) => {
            Err(ApiError::param(ErrorCode::IdempotencyKeyInvalid, "Idempotency-Key", "the Idempotency-Key header is empty or not text"))
        }
        None => Err(ApiError::param(ErrorCode::IdempotencyKeyMissing, "Idempotency-Key", "send an Idempotency-Key header with every POST")),
    }
}
