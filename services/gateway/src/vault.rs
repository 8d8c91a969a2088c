//! The sandbox vault: takes a card number once, keeps it, hands out a token.
//! Only token, brand, last4 and expiry ever leave it.

use crate::card;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use chrono::Datelike;
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use ps_contract::internal::CardSummary;
use ps_runtime::config::Secret;
use ps_runtime::sealing::{At, Keyring, SealError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardInput {
    pub number: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub cvc: String,
}

/// No `Debug` on purpose: a card number must not reach a log by accident.
impl CardInput {
    fn check(&self, today: chrono::NaiveDate) -> Result<String, (&'static str, &'static str)> {
        let pan = card::normalise(&self.number);
        if !card::valid_number(&pan) {
            return Err(("incorrect_number", "The card number is not a valid card number."));
        }
        if !(1..=12).contains(&self.exp_month) || self.exp_year < 2000 || self.exp_year > 2100 {
            return Err(("invalid_expiry", "The expiry date is not valid."));
        }
        if (self.exp_year, self.exp_month) < (today.year(), today.month()) {
            return Err(("expired_card", "The card has expired."));
        }
        if !(3..=4).contains(&self.cvc.len()) || !self.cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(("invalid_cvc", "The security code must be 3 or 4 digits."));
        }
        Ok(pan)
    }
}

#[derive(Serialize, Deserialize)]
pub struct Tokenized {
    pub token: String,
    pub card: CardSummary,
}

#[derive(Clone)]
struct VaultState {
    pool: Pool,
    token: Secret,
    keys: Keyring,
    /// Hears of each card while its security code is in memory (Stripe makes its PaymentMethod).
    processor: std::sync::Arc<dyn crate::processor::Processor>,
}

/// Equal-time comparison, so timing says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller presented the vault's bearer token, or the answer that says it did not.
fn authenticated(state: &VaultState, headers: &HeaderMap) -> Result<(), (StatusCode, Json<serde_json::Value>)> {
    let presented = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|t| same(t.as_bytes(), state.token.expose().as_bytes())) {
        return Ok(());
    }
    tracing::warn!("vault request refused: missing or wrong bearer token");
    Err((StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}))))
}

/// `DELETE /v1/cards/{token}`: the checkout vaulted a card that no attempt
/// took (the session was already paying or had ended): its number goes now.
/// Only a card nothing refers to may be released this way, so the vault's
/// token alone cannot make a saved card or an attempt's card disappear.
async fn release(
    State(state): State<VaultState>,
    headers: HeaderMap,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    if let Err(refused) = authenticated(&state, &headers) {
        return refused;
    }
    let released = async {
        let c = state.pool.get().await.map_err(|e| e.to_string())?;
        c.execute(
            "UPDATE vault_cards v SET pan_sealed = NULL, forgotten_at = now()
             WHERE token = $1 AND pan_sealed IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM payment_attempts a WHERE a.card_token = v.token)
               AND NOT EXISTS (SELECT 1 FROM payment_methods m WHERE m.vault_token = v.token)",
            &[&token],
        )
        .await
        .map_err(|e| e.to_string())
    }
    .await;
    match released {
        Ok(n) => {
            tracing::info!(released = n, "card no attempt took: number deleted");
            (StatusCode::OK, Json(json!({"released": n == 1})))
        }
        Err(e) => {
            tracing::error!(error = %e, "vault unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "vault_unavailable", "message": "try again"}})))
        }
    }
}

/// Numbers of cards vaulted more than `after` ago that no attempt and no saved
/// method refers to (a checkout that crashed between vaulting and starting
/// its attempt): deleted, as if their attempt had ended (PCI DSS 3: keep no
/// number there is no use for). Returns how many.
pub async fn forget_orphans(pool: &Pool, after: std::time::Duration) -> Result<u64, tokio_postgres::Error> {
    let c = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "orphaned cards not swept: database unavailable");
            return Ok(0);
        }
    };
    c.execute(
        "UPDATE vault_cards v SET pan_sealed = NULL, forgotten_at = now()
         WHERE pan_sealed IS NOT NULL AND created_at < now() - $1::float8 * interval '1 second'
           AND NOT EXISTS (SELECT 1 FROM payment_attempts a WHERE a.card_token = v.token)
           AND NOT EXISTS (SELECT 1 FROM payment_methods m WHERE m.vault_token = v.token)",
        &[&after.as_secs_f64()],
    )
    .await
}

async fn tokenize(State(state): State<VaultState>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, Json<serde_json::Value>) {
    if let Err(refused) = authenticated(&state, &headers) {
        return refused;
    }
    // Parsed only after the caller is known; serde's message never echoes the card number.
    let input: CardInput = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": "invalid_request", "message": "expected number, exp_month, exp_year, cvc"}})),
            )
        }
    };
    let (pool, keys) = (state.pool, state.keys);
    let pan = match input.check(chrono::Utc::now().date_naive()) {
        Ok(pan) => pan,
        Err((code, message)) => return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": code, "message": message}}))),
    };
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("tok_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    // The processor hears of the card now, the only time its security code exists here.
    let card = crate::processor::CardData { number: &pan, exp_month: input.exp_month, exp_year: input.exp_year, cvc: &input.cvc };
    let (processor_method, funding) = match state.processor.tokenize(card, &token).await {
        Ok(crate::processor::Tokenized::Method { id, funding }) => (Some(id), funding),
        // The sandbox is the processor: its own test cards say what they are.
        Ok(crate::processor::Tokenized::Nothing) => (None, Some(card::sandbox_funding(&pan).to_owned())),
        Ok(crate::processor::Tokenized::Refused { code, message }) => {
            tracing::info!(code = %code, "the processor refused the card");
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": code, "message": message}})));
        }
        Err(e) => {
            tracing::error!(error = %e, "the processor could not take the card");
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "processor_unavailable", "message": "try again"}})));
        }
    };
    let summary = CardSummary {
        brand: card::brand(&pan).to_owned(),
        last4: pan[pan.len() - 4..].to_owned(),
        exp_month: input.exp_month,
        exp_year: input.exp_year,
        bin: Some(pan[..6].to_owned()),
        funding,
    };
    // The security code goes no further than this.
    drop(input);
    let stored = async {
        let c = pool.get().await.map_err(|e| e.to_string())?;
        c.execute(
            "INSERT INTO vault_cards (token, pan_sealed, brand, last4, exp_month, exp_year, processor_method, bin, funding)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &token,
                &keys.seal_str(&At::card_number(&token), &pan),
                &summary.brand,
                &summary.last4,
                &(summary.exp_month as i32),
                &summary.exp_year,
                &processor_method,
                &summary.bin,
                &summary.funding,
            ],
        )
        .await
        .map_err(|e| e.to_string())
    }
    .await;
    match stored {
        Ok(_) => match serde_json::to_value(Tokenized { token, card: summary.clone() }) {
            Ok(body) => {
                tracing::info!(brand = %summary.brand, last4 = %summary.last4, "card vaulted");
                (StatusCode::CREATED, Json(body))
            }
            Err(e) => {
                tracing::error!(error = %e, "card vaulted but its token cannot be written");
                (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"code": "internal_error", "message": "try again"}})))
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "vault unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "vault_unavailable", "message": "try again"}})))
        }
    }
}

/// The card behind a token, for the processor. The number stays in this process,
/// and is there only while the card may still be charged.
pub struct VaultedCard {
    pub pan: Option<Secret>,
    pub summary: CardSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("vault: a vaulted card's number does not open")]
    Sealed(#[source] SealError),
}

/// The columns of a card that may be shown, in the order `summary_at` reads them.
pub const SUMMARY: &str = "brand, last4, exp_month, exp_year, bin, funding";

/// A card as it may be shown, from a row holding [`SUMMARY`]'s columns from `at` on.
pub fn summary_at(r: &tokio_postgres::Row, at: usize) -> CardSummary {
    CardSummary {
        brand: r.get(at),
        last4: r.get(at + 1),
        exp_month: r.get::<_, i32>(at + 2) as u32,
        exp_year: r.get(at + 3),
        bin: r.get(at + 4),
        funding: r.get(at + 5),
    }
}

pub async fn card_for_token(client: &impl GenericClient, keys: &Keyring, token: &str) -> Result<Option<VaultedCard>, VaultError> {
    let sql = format!("SELECT pan_sealed, {SUMMARY} FROM vault_cards WHERE token = $1");
    let row = client.query_opt(&sql, &[&token]).await?;
    let Some(r) = row else { return Ok(None) };
    let pan = match r.get::<_, Option<&str>>(0) {
        Some(sealed) => Some(Secret::new(keys.open_str(&At::card_number(token), sealed).map_err(VaultError::Sealed)?)),
        None => None,
    };
    Ok(Some(VaultedCard { pan, summary: summary_at(&r, 1) }))
}

/// Deletes a card's number, keeping what may be shown (brand, last4, expiry):
/// for a card that was not saved, once its attempt has its answer.
pub async fn forget(client: &impl GenericClient, token: &str) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute("UPDATE vault_cards SET pan_sealed = NULL, forgotten_at = now() WHERE token = $1 AND pan_sealed IS NOT NULL", &[&token])
        .await?;
    Ok(n == 1)
}

/// Serves the vault: over TLS when given a server config, always behind the bearer token.
pub fn serve(
    listener: std::net::TcpListener,
    pool: Pool,
    keys: Keyring,
    token: Secret,
    processor: std::sync::Arc<dyn crate::processor::Processor>,
    tls: Option<rustls::ServerConfig>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/v1/cards", post(tokenize))
        .route("/v1/cards/{token}", axum::routing::delete(release))
        .with_state(VaultState { pool, token, keys, processor });
    ps_runtime::web::serve(listener, app, tls, stop, "vault")
}
