//! A stand-in Stripe for the connector's tests: localstripe (a fake but
//! stateful Stripe server from PyPI, GPL-3.0, installed by
//! `scripts/ensure-localstripe.sh` into its own virtualenv and run as a
//! separate process, never linked), behind a proxy of ours that
//!
//! - records every request the gateway makes (method, path, `Idempotency-Key`,
//!   `Stripe-Version`, form parameters), which is how the tests prove what the
//!   connector sends where localstripe ignores it (idempotency keys) or would
//!   refuse it (below);
//! - takes out the parameters real Stripe documents but localstripe refuses
//!   (`setup_future_usage` on a PaymentIntent, `off_session` on a
//!   confirmation), after recording them: the connector sends Stripe's API,
//!   never one bent to the fake;
//! - injects the faults of the fault suite: a response lost after Stripe
//!   committed, a 5xx after success, a timeout, a 429 with `Retry-After`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The Stripe keys the tests run with (localstripe takes any `sk_`/`pk_`).
pub const SECRET_KEY: &str = "sk_test_localstripe_0123456789";
pub const PUBLISHABLE_KEY: &str = "pk_test_localstripe_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_localstripe_test_0123456789";

/// Parameters real Stripe takes and localstripe refuses, by request.
fn unknown_to_localstripe(method: &Method, path: &str, param: &str) -> bool {
    method == Method::POST
        && ((path == "/v1/payment_intents" && param == "setup_future_usage")
            || (path.starts_with("/v1/payment_intents/") && path.ends_with("/confirm") && param == "off_session"))
}

/// A localstripe process on a port of its own, stopped when dropped.
pub struct LocalStripe {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        LocalStripe::start_on(crate::free_port()).await
    }

    pub async fn start_on(port: u16) -> LocalStripe {
        let exe = format!("{}/../target/localstripe/bin/localstripe", env!("CARGO_MANIFEST_DIR"));
        assert!(std::path::Path::new(&exe).exists(), "{exe} is missing: run scripts/ensure-localstripe.sh (make test does)");
        let child = std::process::Command::new(&exe)
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
        let url = format!("http://localhost:{port}");
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "localstripe did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        LocalStripe { child, url, port }
    }

    /// Where the checkout loads localstripe's stand-in Stripe.js from.
    pub fn js_url(&self) -> String {
        format!("{}/js.stripe.com/v3/", self.url)
    }

    /// Sends Stripe's events for the intents and disputes to `url`, signed with `WEBHOOK_SECRET`.
    pub async fn send_events_to(&self, url: &str) {
        let form = [("url", url), ("secret", WEBHOOK_SECRET)];
        let r = reqwest::Client::new().post(format!("{}/_config/webhooks/fleet", self.url)).form(&form).send().await.unwrap();
        assert!(r.status().is_success(), "localstripe refused the webhook configuration: {}", r.status());
    }

    /// An object as localstripe holds it (`/v1/payment_intents/pi_…`).
    pub async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new().get(format!("{}{path}", self.url)).bearer_auth(SECRET_KEY).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the gateway made it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub params: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What the proxy does to a matching request, once.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forwarded, committed by Stripe, and its response held back until
    /// `release` (then a 504): for the gateway, a lost response.
    LoseResponse,
    /// Forwarded and committed, then answered with a 500.
    ServerErrorAfter,
    /// Held longer than the gateway waits, then forwarded: Stripe commits late.
    Delay(Duration),
    /// Not forwarded: a 429 asking to come back after this many seconds.
    TooMany(u64),
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    faults: Arc<Mutex<VecDeque<(Method, String, Fault)>>>,
    release: Arc<tokio::sync::Notify>,
}

/// The proxy in front of localstripe: the gateway's `STRIPE_API_BASE`.
pub struct StripeProxy {
    pub url: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    faults: Arc<Mutex<VecDeque<(Method, String, Fault)>>>,
    release: Arc<tokio::sync::Notify>,
}

impl StripeProxy {
    pub async fn start(upstream: &LocalStripe) -> StripeProxy {
        StripeProxy::start_on(upstream, "127.0.0.1:0").await
    }

    pub async fn start_on(upstream: &LocalStripe, addr: &str) -> StripeProxy {
        let state = ProxyState {
            upstream: upstream.url.clone(),
            http: reqwest::Client::new(),
            recorded: Arc::default(),
            faults: Arc::default(),
            release: Arc::default(),
        };
        let (recorded, faults, release) = (state.recorded.clone(), state.faults.clone(), state.release.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        StripeProxy { url, recorded, faults, release }
    }

    /// Lets the responses `LoseResponse` holds back go (as 504s).
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Every request so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// The next `method` request whose path starts with `path` meets `fault`.
    pub fn inject(&self, method: Method, path: &str, fault: Fault) {
        self.faults.lock().unwrap().push_back((method, path.to_owned(), fault));
    }
}

async fn forward(State(s): State<ProxyState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    s.recorded.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        idempotency_key: header("idempotency-key"),
        stripe_version: header("stripe-version"),
        params: params.clone(),
    });
    let fault = {
        let mut faults = s.faults.lock().unwrap();
        let at = faults.iter().position(|(m, p, _)| *m == method && path.starts_with(p.as_str()));
        at.and_then(|i| faults.remove(i)).map(|(_, _, f)| f)
    };
    if let Some(Fault::TooMany(secs)) = fault {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
            .into_response();
    }
    if let Some(Fault::Delay(d)) = fault {
        tokio::time::sleep(d).await;
    }
    let kept: Vec<(String, String)> = params.into_iter().filter(|(k, _)| !unknown_to_localstripe(&method, &path, k)).collect();
    let target = format!("{}{}", s.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = s.http.request(method.clone(), target);
    if let Some(auth) = header("authorization") {
        req = req.header("authorization", auth);
    }
    if method == Method::POST {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_urlencoded::Serializer::new(String::new()).extend_pairs(&kept).finish());
    }
    let upstream = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status().as_u16();
    let text = upstream.text().await.unwrap_or_default();
    match fault {
        // The gateway gives up waiting: the answer is lost, what Stripe did stands.
        Some(Fault::LoseResponse) => {
            s.release.notified().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Fault::ServerErrorAfter) => {
            (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":{"type":"api_error","message":"An unknown error occurred"}}"#).into_response()
        }
        _ => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), [("content-type", "application/json")], text).into_response()
        }
    }
}

/// The fleet on Stripe: localstripe behind the proxy, the gateway calling it
/// (`PROCESSOR=stripe`) and taking its events, the checkout running its
/// Stripe.js, lifecycle and intake.
pub struct StripeFleet {
    pub stripe: LocalStripe,
    pub proxy: StripeProxy,
    pub checkout: String,
}

impl StripeFleet {
    pub async fn start(env: &mut crate::TestEnv, gateway: &[(&'static str, &str)]) -> StripeFleet {
        let stripe = LocalStripe::start().await;
        let proxy = StripeProxy::start(&stripe).await;
        let mut vars = vec![
            ("PROCESSOR", "stripe"),
            ("STRIPE_SECRET_KEY", SECRET_KEY),
            ("STRIPE_API_BASE", proxy.url.as_str()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("PROCESSOR_EVENTS_ADDR", "127.0.0.1:0"),
        ];
        vars.extend_from_slice(gateway);
        env.start_gateway(&vars).await;
        let events = env.processor_events.expect("the gateway takes Stripe's events");
        stripe.send_events_to(&format!("http://{events}/v1/processors/stripe/events")).await;
        env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "2")]).await;
        let js = stripe.js_url();
        let checkout = env
            .start_checkout_with(&[("PROCESSOR", "stripe"), ("STRIPE_JS_URL", js.as_str()), ("STRIPE_PUBLISHABLE_KEY", PUBLISHABLE_KEY)])
            .await;
        env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
        StripeFleet { stripe, proxy, checkout }
    }

    /// The intents localstripe holds, oldest first.
    pub async fn intents(&self) -> Vec<serde_json::Value> {
        let list = self.stripe.get("/v1/payment_intents?limit=100").await;
        let mut data = list["data"].as_array().cloned().unwrap_or_default();
        data.sort_by_key(|pi| pi["created"].as_i64());
        data
    }
}
