//! Messages between services on `payment_sessions.internal`. Upstream never sees these.

use crate::ids::{AttemptId, MandateId, MerchantId, PaymentMethodId, SessionId};
use crate::money::Currency;
use crate::session::CaptureMethod;
use serde::{Deserialize, Serialize};

/// `gateway.authorize`: charge (or verify) a payment method for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    pub amount: i64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    /// A saved method for merchant-initiated charges; a checkout sends a vault token instead.
    pub payment_method_id: Option<PaymentMethodId>,
    pub mandate_id: Option<MandateId>,
    /// False for a `next_in_series`: the processor is told the customer is absent.
    pub customer_present: bool,
    /// Sent to the processor; derived from the attempt so a redelivery cannot charge twice.
    pub processor_idempotency_key: String,
}

impl AuthorizeRequest {
    pub fn idempotency_key_for(attempt: &AttemptId) -> String {
        format!("authorize:{attempt}")
    }
}
