//! The checkout's HTTP routes: the page at `session_url` and its form.

use crate::i18n::Lang;
use crate::pages;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use chrono::Utc;
use deadpool_postgres::Pool;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ps_contract::ids::{AttemptId, PaymentMethodId};
use ps_contract::internal::{ActionKind, AuthenticateRequest, AuthorizeRequest, CustomerCancel, NextAction, SaveUsage};
use ps_contract::lifecycle::{transition, PaymentOutcome, SessionType, Status, Transition};
use ps_contract::routing::{exchange, header as h, internal};
use ps_contract::session::{saved_card_usage, SavePaymentMethod};
use ps_runtime::outbox::Outbox;
use ps_runtime::Outbound;
use ps_store::attempts;
use ps_store::sessions::{self, StoredSession};
use rand::RngCore;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub outbox: Outbox,
    pub vault_url: String,
    pub vault_token: ps_runtime::config::Secret,
    pub http: reqwest::Client,
    /// Card submissions per client.
    pub limiter: Arc<ClientLimiter>,
    /// Page loads per client.
    pub views: Arc<ClientLimiter>,
    /// Served over https: the CSRF cookie is `Secure` and `__Host-`.
    pub https: bool,
    /// With `PROCESSOR=stripe`: what the page needs to run Stripe.js.
    pub stripe: Option<Arc<StripeBrowser>>,
}

/// Stripe.js at the checkout: where it loads from, the key it opens with, and
/// the origins the page's CSP must allow for it (exactly those).
#[derive(Debug, Clone)]
pub struct StripeBrowser {
    pub js_url: String,
    pub publishable_key: String,
    /// `script-src`, `frame-src` and `connect-src` beyond the page itself.
    pub script_src: String,
    pub frame_src: String,
    pub connect_src: String,
}

impl StripeBrowser {
    /// Stripe's own Stripe.js needs its script and frame host, its 3-D Secure
    /// frames and its API (Stripe's documented CSP); any other (localstripe's,
    /// in tests) serves all three from its own origin.
    pub fn new(js_url: String, publishable_key: String) -> Result<StripeBrowser, String> {
        let url = url::Url::parse(&js_url).map_err(|e| format!("{js_url:?} is not a URL: {e}"))?;
        let origin = url.origin().ascii_serialization();
        let (script_src, frame_src, connect_src) = if url.host_str() == Some("js.stripe.com") {
            (origin.clone(), format!("{origin} https://hooks.stripe.com"), "https://api.stripe.com".to_owned())
        } else {
            (origin.clone(), origin.clone(), origin)
        };
        Ok(StripeBrowser { js_url, publishable_key, script_src, frame_src, connect_src })
    }
}

/// At most N requests a minute per client, whatever session they aim at: a
/// card tester cycles through sessions as readily as through cards, and a
/// token guesser through session ids.
pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    client_ip_header: Option<String>,
}

impl ClientLimiter {
    pub fn new(per_minute: u32, client_ip_header: Option<String>) -> ClientLimiter {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"));
        ClientLimiter { limiter: RateLimiter::keyed(quota), client_ip_header }
    }

    /// The client a request comes from: the trusted proxy's header, else the peer.
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.client_ip_header
            .as_deref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|ip| ip.trim().parse().ok())
            .unwrap_or(peer.ip())
    }

    /// Forgets clients whose quota has refilled, so the table stays as small as the traffic.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }

    /// `Err(wait)` when the client is over its quota.
    fn check(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Duration> {
        self.limiter.check_key(&self.client(peer, headers)).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[derive(Deserialize)]
pub struct TokenQuery {
    t: Option<String>,
}

/// No `Debug`: this holds a card number.
#[derive(Deserialize)]
pub struct PayForm {
    csrf: String,
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    cvc: String,
    save_card: Option<String>,
    /// A saved card the page offered, instead of a card entered now.
    payment_method_id: Option<String>,
}

/// What an attempt charges: a card entered now (its vault token), or one the
/// customer saved for their own later checkouts.
enum Card<'a> {
    Entered(&'a str),
    Saved(&'a str),
}

const CSRF_COOKIE: &str = "ps_csrf";
const SECURE_CSRF_COOKIE: &str = "__Host-ps_csrf";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pay/{id}", get(show).post(pay))
        .route("/pay/{id}/challenge", axum::routing::post(challenged))
        .route("/pay/{id}/cancel", axum::routing::post(cancelled))
        .route("/logo/{digest}", get(logo))
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_span))
        .with_state(state)
}

/// A server span per request (OpenTelemetry's HTTP conventions: the route, not
/// the path, and never the query, which carries the checkout token). First the
/// per-client limits (page loads, card submissions), before anything is read;
/// then, if the token opens the session, the span joins the trace the session
/// was created in: the authorize it queues, the gateway's call and everything
/// after join the upstream's trace.
async fn http_span(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    // The one route; anything else is answered 404 by the router.
    let route = match req.uri().path().strip_prefix("/pay/") {
        Some(rest) if rest.ends_with("/challenge") => "/pay/{id}/challenge",
        Some(_) => "/pay/{id}",
        None if req.uri().path().starts_with("/logo/") => "/logo/{digest}",
        None => "unmatched",
    };
    let method = req.method().as_str().to_owned();
    let name = format!("{method} {route}");
    let span = tracing::info_span!(
        "http",
        otel.name = name.as_str(),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let limited = if req.method() == axum::http::Method::POST {
        state.limiter.check(peer, req.headers()).map_err(|wait| {
            tracing::warn!("card submissions over the per-client limit; refused");
            too_many(wait, &speaks(req.headers()), "title-too-many-attempts", "too-many-attempts")
        })
    } else {
        state.views.check(peer, req.headers()).map_err(|wait| {
            tracing::warn!("page loads over the per-client limit; refused");
            too_many(wait, &speaks(req.headers()), "title-too-many-requests", "too-many-requests")
        })
    };
    if let Err(refused) = limited {
        span.record("http.response.status_code", refused.status().as_u16());
        return refused;
    }
    if let Some(traceparent) = session_trace(&state, req.uri()).await {
        ps_runtime::telemetry::continue_from(&span, &traceparent);
    }
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

/// The trace a session was created in (its kept traceparent), once the
/// request's token has opened it; nothing for a token that could not be one.
async fn session_trace(state: &AppState, uri: &axum::http::Uri) -> Option<String> {
    let id = uri.path().strip_prefix("/pay/")?.split('/').next()?;
    let token = uri.query()?.split('&').find_map(|kv| kv.strip_prefix("t="))?;
    if !token_shaped(token) || ps_contract::ids::SessionId::parse(id).is_err() {
        return None;
    }
    let c = state.pool.get().await.ok()?;
    let row = c.query_opt("SELECT checkout_token, traceparent FROM payment_sessions WHERE id = $1", &[&id]).await.ok()??;
    let (kept, traceparent): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    kept.is_some_and(|k| same(&k, token)).then_some(traceparent)?
}

/// A checkout token as intake makes them: 24 random bytes, base64url. Anything
/// else cannot open a session, so it is refused before the database is asked.
fn token_shaped(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Too many requests from this client: 429 with when to come back.
fn too_many(wait: Duration, t: &Lang, title: &str, text: &str) -> Response {
    let mut r = html(StatusCode::TOO_MANY_REQUESTS, pages::message(t, title, text));
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Equal-time comparison, so response timing says nothing about a token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Nothing but the page itself: no script, no frame, no connection elsewhere.
/// Images from https only: a merchant's logo (its URL checked https at the
/// edge, or the one it uploaded, from this host).
const STRICT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String) -> Response {
    html_with_csp(status, body, STRICT_CSP)
}

fn html_with_csp(status: StatusCode, body: String, csp: &str) -> Response {
    let mut r = (status, body).into_response();
    let hs = r.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The URL carries a bearer token: keep it out of caches and other sites' referrers.
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    hs.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    hs.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        hs.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

fn not_found(t: &Lang) -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found(t))
}

fn accept_language(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())
}

/// The customer's language before a session says otherwise: their browser's.
fn speaks(headers: &HeaderMap) -> Lang {
    Lang::negotiate(None, accept_language(headers))
}

/// A page that only says something went wrong (message ids), with its status.
fn trouble(status: StatusCode, t: &Lang, title: &str, text: &str) -> Response {
    html(status, pages::message(t, title, text))
}

/// The session if `token` opens it, and the language its pages speak (the
/// session's `locale`, then the customer's `Accept-Language`); anything else
/// is a plain 404. A session past its `expires_at` is shown expired, whether
/// or not lifecycle's sweep has reached it yet (unless a payment is in
/// flight: that one finishes).
async fn authorised(state: &AppState, id: &str, token: Option<&str>, headers: &HeaderMap) -> Result<(StoredSession, Lang), Response> {
    let t = speaks(headers);
    let Some(token) = token.filter(|t| token_shaped(t)) else { return Err(not_found(&t)) };
    if ps_contract::ids::SessionId::parse(id).is_err() {
        return Err(not_found(&t));
    }
    let unavailable = || trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-load");
    let client = state.pool.get().await.map_err(|_| unavailable())?;
    match sessions::get(&client, id).await {
        Ok(Some(mut s)) if s.checkout_token.as_deref().is_some_and(|t| same(t, token)) => {
            let st = &mut s.session;
            if st.status == Status::Active
                && st.payment_outcome != PaymentOutcome::Pending
                && st.expires_at.is_some_and(|at| at <= Utc::now())
            {
                st.status = Status::Expired;
            }
            // The session's own look over the merchant's settings, field by field.
            let settings = ps_store::checkout_settings::get(&client, &s.merchant_id).await.map_err(|e| {
                tracing::error!(error = %e, "cannot load checkout settings");
                unavailable()
            })?;
            s.branding = Some(s.branding.take().unwrap_or_default().over(&settings.branding));
            s.embed_origins = settings.embed_origins;
            // A returning customer is offered the cards they saved for their own checkouts.
            if let (Status::Active, SessionType::OneTime, Some(customer)) =
                (s.session.status, s.session.session_type, &s.session.customer_id)
            {
                s.saved_cards = ps_store::saved_cards::for_customer(&client, &s.merchant_id, customer).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot load saved cards");
                    unavailable()
                })?;
            }
            let t = Lang::negotiate(s.locale.as_deref(), accept_language(headers));
            Ok((s, t))
        }
        Ok(_) => Err(not_found(&t)),
        Err(e) => {
            tracing::error!(error = %e, "cannot load session");
            Err(unavailable())
        }
    }
}

fn action(id: &str, token: &str) -> String {
    format!("/pay/{id}?t={token}")
}

/// The CSRF cookie's name: over https a `__Host-` cookie, which only this host
/// may set and only over TLS (no subdomain or plain-http page can plant one).
fn csrf_cookie(https: bool) -> &'static str {
    if https {
        SECURE_CSRF_COOKIE
    } else {
        CSRF_COOKIE
    }
}

/// Renders the page, with a fresh CSRF token in both a cookie and the form.
fn page(state: &AppState, s: &StoredSession, t: &Lang, token: &str, error: Option<&str>) -> Response {
    let (csrf, nonce) = (random_token(), random_token());
    let id = s.session.id.as_str();
    let body = pages::session_page(s, t, &action(id, token), &format!("/pay/{id}/cancel?t={token}"), &csrf, &nonce, error);
    with_csrf_cookie(state, s, html_with_csp(StatusCode::OK, body, &watching_csp(&nonce)), &csrf)
}

/// A page that may watch for its session's next state: its own script (by
/// nonce) asks this page again, and nothing else.
fn watching_csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; script-src 'nonce-{nonce}'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A challenge the attempt waits on: the sandbox's page, or Stripe.js's, its
/// script allowed by nonce and its origins exactly.
fn challenge(state: &AppState, s: &StoredSession, t: &Lang, token: &str, waiting: &NextAction) -> Response {
    let csrf = random_token();
    let id = s.session.id.as_str();
    let nonce = random_token();
    let browser =
        state.stripe.as_deref().map(|b| pages::BrowserProcessor { js_url: &b.js_url, publishable_key: &b.publishable_key, nonce: &nonce });
    let body = pages::challenge_page(s, t, &format!("/pay/{id}/challenge?t={token}"), &csrf, waiting, browser.as_ref());
    let csp = match (&state.stripe, waiting.kind) {
        (Some(b), ActionKind::StripePayment | ActionKind::StripeSetup) => format!(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; script-src 'nonce-{nonce}' {}; frame-src {}; connect-src {}; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            b.script_src, b.frame_src, b.connect_src
        ),
        _ => STRICT_CSP.to_owned(),
    };
    with_csrf_cookie(state, s, html_with_csp(StatusCode::OK, body, &csp), &csrf)
}

/// Sets the page's CSRF cookie, and lets the session's page be framed by the
/// merchant's registered origins where it is embedded (and by nobody else).
/// Framed on another site, the cookie must be sent cross-site: `SameSite=None`
/// and partitioned to that site (CHIPS), which browsers allow over https only.
fn with_csrf_cookie(state: &AppState, s: &StoredSession, mut r: Response, csrf: &str) -> Response {
    let id = s.session.id.as_str();
    let framed = s.presentation_mode.embedded() && !s.embed_origins.is_empty();
    let cookie = match (state.https, framed) {
        (true, true) => format!("{SECURE_CSRF_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"),
        (true, false) => format!("{SECURE_CSRF_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        (false, _) => format!("{CSRF_COOKIE}={csrf}; Path=/pay/{id}; HttpOnly; SameSite=Strict"),
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    if framed {
        let hs = r.headers_mut();
        hs.remove(header::X_FRAME_OPTIONS);
        let csp = hs.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let allowed = csp.replace("frame-ancestors 'none'", &format!("frame-ancestors {}", s.embed_origins.join(" ")));
        if let Ok(v) = HeaderValue::from_str(&allowed) {
            hs.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    r
}

async fn show(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<TokenQuery>, headers: HeaderMap) -> Response {
    let token = q.t.as_deref().unwrap_or_default();
    match authorised(&state, &id, q.t.as_deref(), &headers).await {
        Ok((s, t)) if s.session.payment_outcome == PaymentOutcome::Pending => match waiting_challenge(&state, &id).await {
            // Answered: the processor's word is awaited; the customer may still give up and use another card.
            Ok(Some((_, _, true))) => {
                let (csrf, nonce) = (random_token(), random_token());
                let body = pages::challenge_answered(&s, &t, &format!("/pay/{id}/challenge?t={token}"), &csrf, &nonce);
                with_csrf_cookie(&state, &s, html_with_csp(StatusCode::OK, body, &watching_csp(&nonce)), &csrf)
            }
            Ok(Some((_, action, false))) => challenge(&state, &s, &t, token, &action),
            Ok(None) => page(&state, &s, &t, token, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the session's attempt");
                trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-load")
            }
        },
        Ok((s, t)) => page(&state, &s, &t, token, None),
        Err(r) => r,
    }
}

/// A logo a merchant uploaded, by its SHA-256: public (it is on every one of
/// its pages) and never changed, so cached for good. Served as the type its
/// bytes were checked to be, and as nothing else: no sniffing, no script, no
/// use by other sites.
async fn logo(State(state): State<AppState>, Path(digest): Path<String>, headers: HeaderMap) -> Response {
    let t = speaks(&headers);
    if digest.len() != 64 || !digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return not_found(&t);
    }
    let found = match state.pool.get().await {
        Ok(c) => ps_store::checkout_settings::logo(&c, &digest).await,
        Err(e) => Err(e.into()),
    };
    match found {
        Ok(Some((content_type, bytes))) => {
            let mut r = bytes.into_response();
            let hs = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                hs.insert(header::CONTENT_TYPE, v);
            }
            hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
            hs.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            hs.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
            hs.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
            r
        }
        Ok(None) => not_found(&t),
        Err(e) => {
            tracing::error!(error = %e, "cannot load a logo");
            trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-load")
        }
    }
}

/// The session's attempt that waits for the customer's challenge, if one
/// does, and whether the customer has answered it already.
async fn waiting_challenge(state: &AppState, id: &str) -> Result<Option<(String, NextAction, bool)>, ps_runtime::HandlerError> {
    let c = state.pool.get().await?;
    let row = c
        .query_opt(
            "SELECT a.id, a.next_action, c.attempt_id IS NOT NULL FROM payment_attempts a
             LEFT JOIN checkout_challenges c ON c.attempt_id = a.id
             WHERE a.session_id = $1 AND a.status = 'requires_action'",
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let action = match row.get::<_, Option<serde_json::Value>>(1) {
        Some(v) => serde_json::from_value(v)?,
        None => NextAction { kind: ActionKind::SandboxChallenge, client_secret: None },
    };
    Ok(Some((row.get(0), action, row.get(2))))
}

#[derive(Deserialize)]
pub struct ChallengeForm {
    csrf: String,
    /// `complete` or `fail`.
    result: String,
}

/// The customer finished the challenge (or gave up on it): the gateway asks the
/// processor what came of it, and the page shows that once it knows.
async fn challenged(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Form(form): Form<ChallengeForm>,
) -> Response {
    let token = q.t.clone().unwrap_or_default();
    let (s, t) = match authorised(&state, &id, q.t.as_deref(), &headers).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if let Some(refused) = forged(&state, &headers, &t, &form.csrf, &id, "challenge", "form-expired") {
        return refused;
    }
    let completed = match form.result.as_str() {
        "complete" => true,
        "fail" => false,
        _ => return trouble(StatusCode::BAD_REQUEST, &t, "title-please-try-again", "form-not-ours"),
    };
    match end_challenge(&state, &s, completed).await {
        Ok(()) => Redirect::to(&action(&id, &token)).into_response(),
        Err(e) => {
            tracing::error!(session = %id, error = %e, "could not pass the challenge on");
            trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-pass-answer")
        }
    }
}

/// A form whose CSRF field does not match its cookie (double submit): the
/// 403 page to answer it with, telling the customer `expired` (a message id).
fn forged(state: &AppState, headers: &HeaderMap, t: &Lang, field: &str, id: &str, form: &str, expired: &str) -> Option<Response> {
    if cookie(headers, csrf_cookie(state.https)).is_some_and(|c| same(&c, field)) {
        return None;
    }
    tracing::warn!(session = %id, form, "form refused: CSRF token missing or wrong");
    Some(trouble(StatusCode::FORBIDDEN, t, "title-please-try-again", expired))
}

#[derive(Deserialize)]
struct CancelForm {
    csrf: String,
}

/// "Cancel and return": the session is marked and lifecycle asked to cancel
/// it (it announces the cancel as any other); the page then says so and
/// leads back to the merchant. A payment that started first goes on.
async fn cancelled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Form(form): Form<CancelForm>,
) -> Response {
    let token = q.t.clone().unwrap_or_default();
    let t = match authorised(&state, &id, q.t.as_deref(), &headers).await {
        Ok((_, t)) => t,
        Err(r) => return r,
    };
    if let Some(refused) = forged(&state, &headers, &t, &form.csrf, &id, "cancel", "form-expired") {
        return refused;
    }
    match ask_to_cancel(&state, &id).await {
        Ok(()) => Redirect::to(&action(&id, &token)).into_response(),
        Err(e) => {
            tracing::error!(session = %id, error = %e, "could not pass the customer's cancel on");
            trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-cancel")
        }
    }
}

/// One transaction: the session locked, checked still cancellable (active, no
/// payment under way), marked, and lifecycle asked (through the outbox).
async fn ask_to_cancel(state: &AppState, id: &str) -> Result<(), ps_runtime::HandlerError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(s) = sessions::lock(&tx, id, None).await? else { return Ok(()) };
    if s.cancel_requested || transition(s.session.session_type, s.state(), Transition::Cancel).is_err() {
        return Ok(());
    }
    sessions::request_cancel(&tx, id).await?;
    let req = CustomerCancel { session_id: s.session.id.clone(), merchant_id: s.merchant_id.clone() };
    let msg = Outbound::to_json(exchange::INTERNAL, internal::CHECKOUT_CANCEL, &req)?
        .with_message_id(format!("checkout-cancel:{id}"))
        .with_header(h::MERCHANT_ID, s.merchant_id.as_str());
    state.outbox.enqueue(&tx, &[msg]).await?;
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(session = id, "the customer cancelled at the checkout; lifecycle is asked to cancel the session");
    Ok(())
}

/// One transaction: the session locked, its waiting attempt found, and the
/// gateway asked (through the outbox) what came of the challenge. Nothing if
/// no attempt waits any more (an answer arrived meanwhile).
async fn end_challenge(state: &AppState, s: &StoredSession, completed: bool) -> Result<(), ps_runtime::HandlerError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let id = s.session.id.as_str();
    let Some(locked) = sessions::lock(&tx, id, None).await? else { return Ok(()) };
    let Some(row) = tx
        .query_opt(
            "SELECT id, processor_idempotency_key FROM payment_attempts WHERE session_id = $1 AND status = 'requires_action'",
            &[&id],
        )
        .await?
    else {
        return Ok(());
    };
    let attempt = AttemptId::parse(row.get(0)).map_err(|e| ps_runtime::HandlerError::Permanent(e.to_string()))?;
    let req = AuthenticateRequest {
        attempt_id: attempt.clone(),
        session_id: locked.session.id.clone(),
        merchant_id: locked.merchant_id.clone(),
        completed,
        processor_idempotency_key: row.get(1),
    };
    // Each answer its own message: a customer may finish, fail and try again.
    let msg = Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_AUTHENTICATE, &req)?
        .with_message_id(format!("authenticate:{attempt}:{}", uuid::Uuid::now_v7()))
        .with_header(h::MERCHANT_ID, locked.merchant_id.as_str());
    state.outbox.enqueue(&tx, &[msg]).await?;
    tx.execute(
        "INSERT INTO checkout_challenges (attempt_id, completed) VALUES ($1, $2)
         ON CONFLICT (attempt_id) DO UPDATE SET completed = EXCLUDED.completed, answered_at = now()",
        &[&attempt.as_str(), &completed],
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(session = id, attempt = %attempt, completed, "challenge ended; the processor is asked what came of it");
    Ok(())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `MM/YY`, `MM / YY` or `MM/YYYY`.
fn parse_expiry(s: &str) -> Option<(u32, i32)> {
    let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let (m, y) = cleaned.split_once('/')?;
    let month: u32 = m.parse().ok()?;
    let year: i32 = match y.len() {
        2 => 2000 + y.parse::<i32>().ok()?,
        4 => y.parse().ok()?,
        _ => return None,
    };
    Some((month, year))
}

#[derive(Deserialize)]
struct VaultReply {
    token: Option<String>,
    error: Option<VaultError>,
}

#[derive(Deserialize)]
struct VaultError {
    /// `incorrect_number`, `invalid_expiry`, … : what the customer is told, in their language.
    code: String,
}

async fn pay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    Form(form): Form<PayForm>,
) -> Response {
    let token = q.t.clone().unwrap_or_default();
    let (s, t) = match authorised(&state, &id, q.t.as_deref(), &headers).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if let Some(refused) = forged(&state, &headers, &t, &form.csrf, &id, "checkout", "form-expired-card") {
        return refused;
    }
    let back = Redirect::to(&action(&id, &token)).into_response();
    if transition(s.session.session_type, s.state(), Transition::StartAttempt).is_err() {
        return back; // already paying, paid or ended: the page says which
    }
    // A saved card: only one the page offered this customer (theirs, on-session, not expired).
    if let Some(pm) = form.payment_method_id.as_deref() {
        if !s.saved_cards.iter().any(|c| c.id == pm) {
            tracing::warn!(session = %id, "a saved card the page did not offer; refused");
            return page(&state, &s, &t, &token, Some("saved-card-refused"));
        }
        return match start_attempt(&state, &id, Card::Saved(pm), false).await {
            Ok(_) => back,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "could not start the attempt");
                trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-start")
            }
        };
    }
    let Some((exp_month, exp_year)) = parse_expiry(&form.expiry) else {
        return page(&state, &s, &t, &token, Some("expiry-must-look"));
    };

    // The card goes to the vault and nowhere else; from here on only its token.
    let vaulted = state
        .http
        .post(format!("{}/v1/cards", state.vault_url.trim_end_matches('/')))
        .bearer_auth(state.vault_token.expose())
        .json(&serde_json::json!({"number": form.card_number, "exp_month": exp_month, "exp_year": exp_year, "cvc": form.cvc}))
        .send()
        .await;
    let card_token = match vaulted {
        Ok(r) => match (r.status().as_u16(), r.json::<VaultReply>().await) {
            (201, Ok(VaultReply { token: Some(t), .. })) => t,
            // The card's own faults (number, expiry, CVC): the customer can fix them.
            (422, Ok(VaultReply { error: Some(e), .. })) => return page(&state, &s, &t, &token, Some(pages::card_problem(&e.code))),
            (status, _) => {
                tracing::error!(status, "the vault refused the checkout's request");
                return trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-process-card");
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "vault unreachable");
            return trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-process-card");
        }
    };
    let save_card = form.save_card.is_some() && s.save_payment_method == SavePaymentMethod::Prompt;
    match start_attempt(&state, &id, Card::Entered(&card_token), save_card).await {
        Ok(Started::Yes) => back,
        Ok(Started::No) => {
            // Another submit got there first, or the session ended meanwhile: this card has no use.
            release_card(&state, &card_token).await;
            back
        }
        Err(e) => {
            release_card(&state, &card_token).await;
            tracing::error!(session = %id, error = %e, "could not start the attempt");
            trouble(StatusCode::SERVICE_UNAVAILABLE, &t, "title-try-again", "cannot-start")
        }
    }
}

/// Asks the vault to delete the number of a card no attempt took. If it
/// cannot be reached, its orphan sweep deletes it (VAULT_ORPHAN_AFTER_SECS).
async fn release_card(state: &AppState, card_token: &str) {
    let url = format!("{}/v1/cards/{card_token}", state.vault_url.trim_end_matches('/'));
    match state.http.delete(url).bearer_auth(state.vault_token.expose()).send().await {
        Ok(r) if r.status().is_success() => tracing::info!("card no attempt took: released"),
        Ok(r) => tracing::warn!(status = r.status().as_u16(), "the vault did not release an untaken card; its sweep will"),
        Err(e) => tracing::warn!(error = %e, "the vault did not release an untaken card; its sweep will"),
    }
}

/// Whether a submit started an attempt.
enum Started {
    Yes,
    /// The session was already paying, paid or ended.
    No,
}

/// One transaction: lock the session, move it to `pending`, record the attempt,
/// and queue the `gateway.authorize`. A second submit finds it pending and starts nothing.
async fn start_attempt(state: &AppState, id: &str, card: Card<'_>, save_card: bool) -> Result<Started, ps_runtime::HandlerError> {
    let (card_token, payment_method_id) = match card {
        Card::Entered(t) => (Some(t), None),
        Card::Saved(pm) => (None, Some(pm)),
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(mut s) = sessions::lock(&tx, id, None).await? else { return Ok(Started::No) };
    // A customer who chose to cancel (in this tab or another) pays nothing more.
    let closed = s.session.expires_at.is_some_and(|at| at <= Utc::now()) || s.cancel_requested;
    let Ok(to) = transition(s.session.session_type, s.state(), Transition::StartAttempt) else {
        return Ok(Started::No);
    };
    if closed {
        return Ok(Started::No);
    }
    let now = Utc::now();
    let attempt = AttemptId::generate();
    let key = AuthorizeRequest::idempotency_key_for(&attempt);
    let usage = saved_card_usage(s.session.session_type, s.save_payment_method, save_card).filter(|_| card_token.is_some());
    // A saved card outlives its attempt; one entered now only if it is saved.
    let keep_card = usage.is_some() || payment_method_id.is_some();
    let save_for = usage.map(|off_session| if off_session { SaveUsage::OffSession } else { SaveUsage::OnSession });
    attempts::start(
        &tx,
        &attempts::NewAttempt {
            id: &attempt,
            session_id: id,
            merchant_id: s.merchant_id.as_str(),
            amount: s.session.amount,
            currency: s.session.currency,
            processor_key: &key,
            source: attempts::Source::Checkout,
            capture_method: s.capture_method.as_str(),
            card_token,
            payment_method_id,
            save_card: save_card && card_token.is_some(),
            keep_card,
            save_for: save_for.map(|u| u.as_str()),
        },
    )
    .await?;
    s.set_state(to, now);
    sessions::save(&tx, &s).await?;
    let req = AuthorizeRequest {
        attempt_id: attempt.clone(),
        session_id: s.session.id.clone(),
        merchant_id: s.merchant_id.clone(),
        amount: s.session.amount,
        currency: s.session.currency,
        capture_method: s.capture_method,
        payment_method_id: payment_method_id
            .map(PaymentMethodId::parse)
            .transpose()
            .map_err(|e| ps_runtime::HandlerError::Permanent(e.to_string()))?,
        card_token: card_token.map(str::to_owned),
        mandate_id: None,
        customer_present: true,
        processor_idempotency_key: key,
        keep_card,
        save_for,
    };
    let msg = Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_AUTHORIZE, &req)?
        .with_message_id(attempt.as_str())
        .with_header(h::MERCHANT_ID, s.merchant_id.as_str());
    state.outbox.enqueue(&tx, &[msg]).await?;
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(session = id, attempt = %attempt, "checkout attempt started");
    Ok(Started::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats() {
        assert_eq!(parse_expiry("12/34"), Some((12, 2034)));
        assert_eq!(parse_expiry("01 / 2030"), Some((1, 2030)));
        assert_eq!(parse_expiry("1234"), None);
        assert_eq!(parse_expiry("12/345"), None);
    }

    #[test]
    fn constant_time_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
