//! `payment_session.create`: validate at the edge, claim the idempotency key,
//! persist the session, answer, and announce it — all in the message's transaction.

use crate::series;
use crate::store;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::create::{CreateSession, CustomerRef, DEFAULT_EXPIRES_IN};
use ps_contract::events::EventType;
use ps_contract::idempotency::{request_fingerprint, IdempotencyKey};
use ps_contract::ids::{MerchantId, SessionId};
use ps_contract::lifecycle::SessionState;
use ps_contract::routing::{command, header};
use ps_contract::session::{LegacyPaymentStatus, Mode, PaymentSession};
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{Admission, Handled, Handler, HandlerError, Incoming, Outbound};
use ps_store::attempts;
use ps_store::idempotency::{self, Claim};
use ps_store::sessions::{self, SessionExtras};
use ps_store::Checked;
use rand::RngCore;
use serde_json::Value;

pub struct CreateHandler {
    /// Where `session_url`s point: the hosted checkout.
    pub checkout_base_url: String,
    pub mode: Mode,
}

/// The envelope after admission: the merchant (whose grant the admission
/// checked) and the idempotency key a create must carry.
struct Envelope {
    merchant: MerchantId,
    key: IdempotencyKey,
}

fn envelope(msg: &Incoming) -> Result<Envelope, ApiError> {
    let merchant = msg
        .header(header::MERCHANT_ID)
        .ok_or_else(|| ApiError::param(ErrorCode::MerchantIdMissing, header::MERCHANT_ID, "the merchant-id header is required"))?;
    let merchant = MerchantId::parse(&merchant).map_err(|e| e.with_param(header::MERCHANT_ID))?;
    let key = msg.header(header::IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::param(ErrorCode::IdempotencyKeyMissing, header::IDEMPOTENCY_KEY, "the idempotency-key header is required")
    })?;
    let key = IdempotencyKey::parse(&key).map_err(|e| e.with_param(header::IDEMPOTENCY_KEY))?;
    Ok(Envelope { merchant, key })
}

/// The body as JSON, or why it is not.
fn parse_json(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))
}

/// 192 random bits: the bearer token that makes a `session_url` unguessable.
fn checkout_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Handler for CreateHandler {
    /// The merchant grant, before anything is recorded or replayed (DESIGN §10).
    fn admit<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async move {
            Ok(match ps_store::commands::admit(tx, msg).await? {
                Admission::Refused(h) => {
                    crate::metrics::REJECTED.with_label_values(&[ErrorCode::MerchantNotAuthorized.as_str()]).inc();
                    Admission::Refused(h)
                }
                admitted => admitted,
            })
        })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let env = match envelope(msg) {
                Ok(env) => env,
                Err(e) => return Ok(refused(msg, &e)),
            };
            let body = match parse_json(&msg.body) {
                Ok(v) => v,
                Err(why) => return Ok(Handled::refuse_unparseable(msg, &ApiError::new(ErrorCode::InvalidJson, why))),
            };
            let fingerprint = request_fingerprint(command::SESSION_CREATE, &body);
            match idempotency::claim(tx, &env.merchant, &env.key, command::SESSION_CREATE, &fingerprint).await? {
                Claim::Refused(e) => return Ok(refused(msg, &e)),
                Claim::Replay(reply) => {
                    tracing::info!(merchant = %env.merchant, "idempotent replay");
                    return ps_store::commands::replay(msg, &env.merchant, &env.key, reply, None);
                }
                Claim::New => {}
            }
            // Parsed once the key is claimed: a refusal is kept for the key like any answer.
            let request = match CreateSession::parse(&body) {
                Ok(r) => r,
                Err(e) => return refuse_keeping(tx, msg, &env, &e).await,
            };
            match self.create(tx, &env.merchant, &request, Utc::now()).await? {
                Checked::Passed((session, internal)) => {
                    let reply = serde_json::to_value(&session)?;
                    idempotency::complete(tx, &env.merchant, &env.key, &reply).await?;
                    let event = ps_store::events::event(EventType::PaymentSessionCreated, &env.merchant, session.created_at, &session)?;
                    crate::metrics::CREATED.with_label_values(&[session.session_type.as_str()]).inc();
                    tracing::info!(session_id = %session.id, merchant = %env.merchant, session_type = %session.session_type, "session created");
                    Ok(Handled::default().send(msg.reply(&reply, false)).send(event).send(internal))
                }
                Checked::Refused(e) => refuse_keeping(tx, msg, &env, &e).await,
            }
        })
    }
}

/// A refusal after the key was claimed: kept as the key's answer (Moment
/// replays errors too), then sent.
async fn refuse_keeping(tx: &Transaction<'_>, msg: &Incoming, env: &Envelope, e: &ApiError) -> Result<Handled, HandlerError> {
    idempotency::complete(tx, &env.merchant, &env.key, &e.to_reply()).await?;
    Ok(refused(msg, e))
}

fn refused(msg: &Incoming, e: &ApiError) -> Handled {
    crate::metrics::REJECTED.with_label_values(&[e.code.as_str()]).inc();
    tracing::info!(code = %e.code, param = e.param.as_deref().unwrap_or(""), "create refused");
    Handled::refuse(msg, e)
}

impl CreateHandler {
    /// Persists the session. For a `next_in_series`, also validates the mandate and
    /// starts the payment: the returned message is the `gateway.authorize`.
    async fn create(
        &self,
        tx: &Transaction<'_>,
        merchant: &MerchantId,
        req: &CreateSession,
        now: DateTime<Utc>,
    ) -> Result<Checked<(PaymentSession, Option<Outbound>)>, HandlerError> {
        let id = SessionId::generate();
        let mut session = PaymentSession {
            id: id.clone(),
            object: PaymentSession::OBJECT.to_owned(),
            session_type: req.session_type,
            status: SessionState::INITIAL.status,
            payment_outcome: SessionState::INITIAL.outcome,
            amount: req.amount.minor(),
            currency: req.currency,
            customer_id: None,
            payment_method_id: None,
            mandate_id: None,
            payment_id: None,
            payment: None,
            session_url: None,
            return_url: req.return_url.as_ref().map(|u| u.as_str().to_owned()),
            expires_at: None,
            last_payment_error: None,
            metadata: req.metadata.clone(),
            external_reference: req.external_reference.clone(),
            mode: self.mode,
            created_at: now,
            updated_at: now,
            payment_status: LegacyPaymentStatus::Unpaid,
            checkout_session_id: None,
        };
        session.derive_legacy_fields();

        let mut token = None;
        let mut authorize = None;
        match &req.charge_target {
            None => {
                session.customer_id = match &req.customer {
                    Some(CustomerRef::New(c)) => Some(store::insert_customer(tx, merchant, c).await?),
                    Some(CustomerRef::Existing(c)) if store::customer_exists(tx, merchant, c).await? => Some(c.clone()),
                    Some(CustomerRef::Existing(c)) => {
                        return Ok(Checked::Refused(ApiError::param(
                            ErrorCode::CustomerNotFound,
                            "customer_id",
                            format!("no such customer: {c}"),
                        )))
                    }
                    None => None,
                };
                let t = checkout_token();
                session.session_url = Some(format!("{}/pay/{}?t={t}", self.checkout_base_url.trim_end_matches('/'), id));
                session.expires_at = Some(now + Duration::seconds(req.expires_in.unwrap_or(DEFAULT_EXPIRES_IN)));
                token = Some(t);
            }
            Some(target) => match series::start_charge(tx, merchant, target, req, &mut session, now).await? {
                Checked::Passed(msg) => authorize = Some(msg),
                Checked::Refused(e) => return Ok(Checked::Refused(e)),
            },
        }

        let extras = SessionExtras {
            merchant,
            capture_method: req.capture_method.as_str(),
            save_payment_method: req.save_payment_method.as_str(),
            checkout_token: token.as_deref(),
            mandate_terms: req.mandate_terms.as_ref().map(serde_json::to_value).transpose()?,
            subscription_options: req.subscription_options.as_ref().map(serde_json::to_value).transpose()?,
            branding: req.branding.as_ref().map(serde_json::to_value).transpose()?,
            presentation_mode: req.presentation_mode.as_str(),
            locale: req.locale.as_ref().map(|l| l.as_str()),
        };
        sessions::create(tx, &session, &extras).await?;
        if let Some((attempt, key, _)) = &authorize {
            // A saved method's charge: the card stays in the vault whatever this charge does.
            let started = attempts::NewAttempt {
                id: attempt,
                session_id: session.id.as_str(),
                merchant_id: merchant.as_str(),
                amount: session.amount,
                currency: session.currency,
                processor_key: key,
                source: attempts::Source::Merchant,
                capture_method: req.capture_method.as_str(),
                card_token: None,
                payment_method_id: session.payment_method_id.as_ref().map(|p| p.as_str()),
                save_card: false,
                keep_card: true,
                save_for: None,
            };
            attempts::start(tx, &started).await?;
        }
        Ok(Checked::Passed((session, authorize.map(|(_, _, msg)| msg))))
    }
}
