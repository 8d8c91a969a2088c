//! The `next_in_series` path: find the mandate, apply every rule, start the payment.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::create::{ChargeTarget, CreateSession};
use ps_contract::ids::{AttemptId, MerchantId};
use ps_contract::internal::AuthorizeRequest;
use ps_contract::lifecycle::{transition, SessionState, Transition};
use ps_contract::payment::PaymentAmounts;
use ps_contract::routing::{exchange, header, internal};
use ps_contract::session::PaymentSession;
use ps_runtime::{HandlerError, Outbound};
use ps_store::mandates;
use ps_store::Checked;

/// On success the session is `pending` and the result is (attempt id, processor
/// key, the `gateway.authorize` message).
pub async fn start_charge(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    target: &ChargeTarget,
    req: &CreateSession,
    session: &mut PaymentSession,
    now: DateTime<Utc>,
) -> Result<Checked<(AttemptId, String, Outbound)>, HandlerError> {
    let (mandate, method) = match mandates::check_charge(tx, merchant, target, req.amount, req.currency, now).await? {
        Checked::Passed(found) => found,
        Checked::Refused(e) => return Ok(Checked::Refused(e)),
    };

    let state = transition(session.session_type, SessionState::INITIAL, Transition::StartAttempt)
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
    session.status = state.status;
    session.payment_outcome = state.outcome;
    session.customer_id = Some(mandate.customer_id.clone());
    session.payment_method_id = Some(method.id.clone());
    session.mandate_id = Some(mandate.id.clone());
    // Paying starts with the session: its payment exists from here, pending.
    session.payment = session.derive_payment(req.capture_method, PaymentAmounts::default(), Some(now), None);
    session.payment_id = session.payment.as_ref().map(|p| p.id.clone());
    session.derive_legacy_fields();

    let attempt = AttemptId::generate();
    let key = AuthorizeRequest::idempotency_key_for(&attempt);
    let request = AuthorizeRequest {
        attempt_id: attempt.clone(),
        session_id: session.id.clone(),
        merchant_id: merchant.clone(),
        amount: session.amount,
        currency: session.currency,
        capture_method: req.capture_method,
        payment_method_id: Some(method.id),
        card_token: None,
        mandate_id: Some(mandate.id),
        customer_present: false,
        processor_idempotency_key: key.clone(),
        // A saved method: it stays in the vault whatever this charge does.
        keep_card: true,
        save_for: None,
    };
    let msg = Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_AUTHORIZE, &request)?
        .with_message_id(attempt.as_str())
        .with_header(header::MERCHANT_ID, merchant.as_str());
    Ok(Checked::Passed((attempt, key, msg)))
}
