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

    /// A call made straight to localstripe, as a test's own set-up.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> serde_json::Value {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url)).bearer_auth(SECRET_KEY).form(form).send().await.unwrap();
        assert!(r.status().is_success(), "localstripe refused {path}: {}", r.status());
        r.json().await.unwrap()
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
    /// When the proxy received it.
    pub at: std::time::Instant,
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
    /// Forwarded and committed at once, answered this much later: Stripe's
    /// event overtakes the answer.
    AnswerAfter(Duration),
}

/// Whether a fault's pattern names a request: the same segments, `*` any one.
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    faults: Arc<Mutex<VecDeque<(Method, String, Fault)>>>,
    release: Arc<tokio::sync::Notify>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// The proxy in front of localstripe: the gateway's `STRIPE_API_BASE`.
pub struct StripeProxy {
    pub url: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    faults: Arc<Mutex<VecDeque<(Method, String, Fault)>>>,
    release: Arc<tokio::sync::Notify>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
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
            in_flight: Arc::default(),
        };
        let (recorded, faults, release, in_flight) =
            (state.recorded.clone(), state.faults.clone(), state.release.clone(), state.in_flight.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        StripeProxy { url, recorded, faults, release, in_flight }
    }

    /// Lets the responses `LoseResponse` holds back go (as 504s).
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Every request so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// The next `method` request whose path matches `pattern` (segments, `*`
    /// for any one: `/v1/payment_intents/*/confirm`) meets `fault`.
    pub fn inject(&self, method: Method, pattern: &str, fault: Fault) {
        self.inject_n(method, pattern, fault, 1);
    }

    /// The next `n` such requests meet `fault`.
    pub fn inject_n(&self, method: Method, pattern: &str, fault: Fault, n: usize) {
        let mut faults = self.faults.lock().unwrap();
        for _ in 0..n {
            faults.push_back((method.clone(), pattern.to_owned(), fault.clone()));
        }
    }

    /// Requests on their way to localstripe (a delayed one included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many injected faults no request has met yet.
    pub fn faults_pending(&self) -> usize {
        self.faults.lock().unwrap().len()
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
        at: std::time::Instant::now(),
    });
    let fault = {
        let mut faults = s.faults.lock().unwrap();
        let at = faults.iter().position(|(m, p, _)| *m == method && matches(p, &path));
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
    // Stripe finishes what it received whether or not the caller still
    // waits: the forward runs on its own, past a caller that gave up.
    let delay = match fault {
        Some(Fault::Delay(d)) => Some(d),
        _ => None,
    };
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
    let in_flight = s.in_flight.clone();
    in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let forwarded = tokio::spawn(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let answer = async {
            let upstream = req.send().await.map_err(|e| e.to_string())?;
            let status = upstream.status().as_u16();
            Ok::<_, String>((status, upstream.text().await.unwrap_or_default()))
        }
        .await;
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        answer
    });
    let (status, text) = match forwarded.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return (StatusCode::BAD_GATEWAY, e).into_response(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    match fault {
        // The gateway gives up waiting: the answer is lost, what Stripe did stands.
        Some(Fault::LoseResponse) => {
            s.release.notified().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Fault::AnswerAfter(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), [("content-type", "application/json")], text).into_response()
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
        StripeFleet::start_with(env, gateway, &[]).await
    }

    /// As `start`, lifecycle with `lifecycle`'s settings too.
    pub async fn start_with(env: &mut crate::TestEnv, gateway: &[(&'static str, &str)], lifecycle: &[(&'static str, &str)]) -> StripeFleet {
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
        let mut lifecycle_vars = vec![("SETTLEMENT_RETRY_AFTER_SECS", "2")];
        lifecycle_vars.extend_from_slice(lifecycle);
        env.start_lifecycle(&lifecycle_vars).await;
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

/// Between localstripe and the gateway's event endpoint: every event passed
/// on as signed, `copies` times (the first at once, the others a little
/// later), as Stripe's at-least-once delivery may.
pub struct EventsRelay {
    pub url: String,
    copies: Arc<std::sync::atomic::AtomicUsize>,
    relayed: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Clone)]
struct RelayState {
    target: String,
    http: reqwest::Client,
    copies: Arc<std::sync::atomic::AtomicUsize>,
    relayed: Arc<std::sync::atomic::AtomicUsize>,
}

impl EventsRelay {
    /// Relays to `target` (the gateway's `/v1/processors/stripe/events`).
    pub async fn start(target: &str) -> EventsRelay {
        let state =
            RelayState { target: target.to_owned(), http: reqwest::Client::new(), copies: Arc::new(1.into()), relayed: Arc::default() };
        let (copies, relayed) = (state.copies.clone(), state.relayed.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(relay).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        EventsRelay { url, copies, relayed }
    }

    /// Each event from now on arrives `n` times.
    pub fn deliver_each(&self, n: usize) {
        self.copies.store(n.max(1), std::sync::atomic::Ordering::SeqCst);
    }

    /// Events passed on so far, copies included.
    pub fn relayed(&self) -> usize {
        self.relayed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn relay(State(s): State<RelayState>, headers: HeaderMap, body: Bytes) -> Response {
    let send = {
        let s = s.clone();
        move |body: Bytes, headers: HeaderMap| async move {
            let mut req = s.http.post(&s.target).body(body);
            for name in ["stripe-signature", "content-type"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v);
                }
            }
            let r = req.send().await;
            s.relayed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.map(|r| r.status().as_u16()).unwrap_or(502)
        }
    };
    for copy in 1..s.copies.load(std::sync::atomic::Ordering::SeqCst) {
        let (send, body, headers) = (send.clone(), body.clone(), headers.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700 * copy as u64)).await;
            send(body, headers).await
        });
    }
    StatusCode::from_u16(send(body, headers).await).unwrap_or(StatusCode::BAD_GATEWAY).into_response()
}

/// One line of what Stripe did, in the shape of the sandbox's ledger.
#[derive(Debug, Clone)]
pub struct LedgerLine {
    pub operation: &'static str,
    pub idempotency_key: String,
    pub outcome: &'static str,
}

impl LocalStripe {
    /// Every object of a list, following `starting_after`.
    pub async fn list_all(&self, path: &str) -> Vec<serde_json::Value> {
        let mut all: Vec<serde_json::Value> = vec![];
        loop {
            let after = all.last().and_then(|o| o["id"].as_str()).map(|id| format!("&starting_after={id}")).unwrap_or_default();
            let page = self.get(&format!("{path}?limit=100{after}")).await;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            let more = page["has_more"].as_bool().unwrap_or(false) && !data.is_empty();
            all.extend(data);
            if !more {
                return all;
            }
        }
    }

    /// Stripe's own record of the money, keyed by our keys (its metadata):
    /// a charge for each intent that took money (captured or held), a void
    /// for each refund that gave a late charge back.
    pub async fn ledger(&self) -> Vec<LedgerLine> {
        let mut lines = vec![];
        for pi in self.list_all("/v1/payment_intents").await {
            let (Some(key), Some(status)) = (pi["metadata"]["ps_key"].as_str(), pi["status"].as_str()) else { continue };
            let outcome = if matches!(status, "succeeded" | "requires_capture") { "succeeded" } else { "failed" };
            lines.push(LedgerLine { operation: "authorize", idempotency_key: key.to_owned(), outcome });
        }
        for re in self.list_all("/v1/refunds").await {
            let Some(key) = re["metadata"]["ps_key"].as_str() else { continue };
            let operation = if key.starts_with("void:") { "void" } else { "refund" };
            let outcome = if re["status"] == "succeeded" { "succeeded" } else { "failed" };
            lines.push(LedgerLine { operation, idempotency_key: key.to_owned(), outcome });
        }
        lines
    }

    /// A card saved at Stripe for charges without the customer: its
    /// PaymentMethod attached to a new Customer, as a first_in_series leaves it.
    pub async fn save_card(&self, number: &str) -> (String, String) {
        let card =
            [("type", "card"), ("card[number]", number), ("card[exp_month]", "12"), ("card[exp_year]", "2099"), ("card[cvc]", "123")];
        let pm = self.post("/v1/payment_methods", &card).await["id"].as_str().unwrap().to_owned();
        let cus = self.post("/v1/customers", &[]).await["id"].as_str().unwrap().to_owned();
        self.post(&format!("/v1/payment_methods/{pm}/attach"), &[("customer", cus.as_str())]).await;
        (pm, cus)
    }
}
