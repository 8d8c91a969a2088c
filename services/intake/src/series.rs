//! The `next_in_series` path: find the mandate, apply every rule, start the payment.

use crate::store;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::create::{ChargeTarget, CreateSession};
use ps_contract::ids::{AttemptId, MerchantId};
use ps_contract::internal::AuthorizeRequest;
use ps_contract::lifecycle::{transition, SessionState, Transition};
use ps_contract::mandate::{validate_charge, Charge};
use ps_contract::routing::{exchange, header, internal};
use ps_contract::session::PaymentSession;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{HandlerError, Outbound};

/// On success the session is `pending` and the result is (attempt id, processor
/// key, the `gateway.authorize` message).
pub async fn start_charge(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    target: &ChargeTarget,
    req: &CreateSession,
    session: &mut PaymentSession,
    now: DateTime<Utc>,
) -> Result<Result<(String, String, Outbound), ApiError>, HandlerError> {
    let (mandate, method, named_customer) = match target {
        ChargeTarget::Mandate(id) => {
            let Some(m) = store::mandate(tx, merchant, id).await? else {
                return Ok(Err(ApiError::param(ErrorCode::MandateNotFound, "mandate_id", format!("no such mandate: {id}"))));
            };
            let method = store::payment_method(tx, merchant, &m.payment_method_id).await?;
            (Some(m), method, None)
        }
        ChargeTarget::PaymentMethod { customer_id, payment_method_id } => {
            let Some(method) = store::payment_method(tx, merchant, payment_method_id).await? else {
                return Ok(Err(ApiError::param(
                    ErrorCode::PaymentMethodNotFound,
                    "payment_method_id",
                    format!("no such payment method: {payment_method_id}"),
                )));
            };
            let m = store::mandate_for_method(tx, merchant, payment_method_id).await?;
            if m.is_none() || !method.off_session {
                // Saved by a one_time session (or never mandated): customer-present use only.
                return Ok(Err(ApiError::param(
                    ErrorCode::PaymentMethodHasNoMandate,
                    "payment_method_id",
                    format!(
                        "{payment_method_id} has no mandate for merchant-initiated payments; it can only be used with the customer present"
                    ),
                )));
            }
            if &method.customer_id != customer_id {
                return Ok(Err(ApiError::param(
                    ErrorCode::MandateCustomerMismatch,
                    "customer_id",
                    format!("{payment_method_id} belongs to another customer"),
                )));
            }
            (m, Some(method), Some(customer_id))
        }
    };
    let Some(method) = method else {
        return Err(HandlerError::Permanent("mandate refers to a missing payment method".into()));
    };
    let usage = match &mandate {
        Some(m) => store::mandate_usage(tx, &m.id).await?,
        None => Default::default(),
    };
    let charge =
        Charge { merchant_id: merchant, customer_id: named_customer, amount: req.amount, currency: req.currency, today: store::today(now) };
    if let Err(e) = validate_charge(mandate.as_ref(), usage, method.expiry, &charge) {
        return Ok(Err(e));
    }
    let mandate = mandate.expect("validate_charge refuses a missing mandate");

    let state = transition(session.session_type, SessionState::INITIAL, Transition::StartAttempt)
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
    session.status = state.status;
    session.payment_outcome = state.outcome;
    session.customer_id = Some(mandate.customer_id.clone());
    session.payment_method_id = Some(method.id.clone());
    session.mandate_id = Some(mandate.id.clone());

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
    };
    let body = serde_json::to_value(&request).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let msg = Outbound::json(exchange::INTERNAL, internal::GATEWAY_AUTHORIZE, &body)
        .with_message_id(attempt.as_str())
        .with_header(header::MERCHANT_ID, merchant.as_str());
    Ok(Ok((attempt.to_string(), key, msg)))
}
