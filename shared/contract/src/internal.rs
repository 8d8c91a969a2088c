//! Messages between services on `payment_sessions.internal`. Upstream never sees these.

use crate::ids::{AttemptId, MandateId, MerchantId, PaymentMethodId, RefundId, SessionId};
use crate::lifecycle::wire_enum;
use crate::money::Currency;
use crate::session::CaptureMethod;
use serde::{Deserialize, Serialize};

/// `gateway.authorize`: charge (or verify) a card for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthorizeRequest {
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    pub amount: i64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    /// A saved method, for merchant-initiated charges.
    pub payment_method_id: Option<PaymentMethodId>,
    /// A card just entered at checkout, as the vault's token. Never a card number.
    #[serde(default)]
    pub card_token: Option<String>,
    pub mandate_id: Option<MandateId>,
    /// False for a `next_in_series`: the processor is told the customer is absent.
    pub customer_present: bool,
    /// Sent to the processor; derived from the attempt so a redelivery cannot charge twice.
    pub processor_idempotency_key: String,
    /// The card is saved if this succeeds. Otherwise the vault forgets its
    /// number once the attempt has its answer.
    #[serde(default)]
    pub keep_card: bool,
}

impl AuthorizeRequest {
    pub fn idempotency_key_for(attempt: &AttemptId) -> String {
        format!("authorize:{attempt}")
    }
}

/// `gateway.capture` (of a reserved authorisation) and `gateway.void`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SettleRequest {
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    /// For a capture: at most the authorised amount.
    pub amount: i64,
    pub currency: Currency,
    pub processor_idempotency_key: String,
}

impl SettleRequest {
    /// `request` numbers the settlements asked of one attempt, so a capture the
    /// processor refused can be asked for again under a new key.
    pub fn idempotency_key_for(operation: Operation, attempt: &AttemptId, request: u32) -> String {
        format!("{}:{attempt}:{request}", operation.as_str())
    }
}

/// `gateway.resolve`: lifecycle has stopped waiting for an authorize's answer
/// and asks what the processor did under the attempt's key. The processor is
/// asked, never told to act: an attempt it has no record of is reported failed,
/// and from the moment lifecycle gave up, no authorize for it is executed.
pub type ResolveRequest = SettleRequest;

/// `gateway.refund`: give back part or all of what an attempt was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RefundRequest {
    pub refund_id: RefundId,
    /// The attempt whose payment is refunded.
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    pub amount: i64,
    pub currency: Currency,
    pub processor_idempotency_key: String,
}

impl RefundRequest {
    /// One key per refund for its whole life: asked again after a timeout, the
    /// processor answers what it did rather than refunding twice.
    pub fn idempotency_key_for(refund: &RefundId) -> String {
        format!("refund:{refund}")
    }
}

wire_enum!(Operation { Authorize => "authorize", Capture => "capture", Void => "void", Refund => "refund" });
wire_enum!(Outcome { Succeeded => "succeeded", Failed => "failed" });

/// What the card looks like outside the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
}

/// `gateway.result`: what the processor said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GatewayResult {
    pub operation: Operation,
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    pub outcome: Outcome,
    pub amount: i64,
    pub currency: Currency,
    /// `card_declined`, `expired_card`, `incorrect_cvc`, `processing_error`.
    pub error_code: Option<String>,
    /// The issuer's reason, e.g. `insufficient_funds`.
    pub decline_code: Option<String>,
    pub message: Option<String>,
    pub card: Option<CardSummary>,
    /// The vault token of the card, so lifecycle can save it as a payment method.
    pub card_token: Option<String>,
    pub processor_reference: Option<String>,
    /// The processor key of the call this answers.
    pub processor_idempotency_key: String,
    /// A refund's result: which one.
    #[serde(default)]
    pub refund_id: Option<RefundId>,
}

impl GatewayResult {
    /// Deterministic per processor call, so a result published twice is applied once.
    pub fn message_id(&self) -> String {
        format!("result:{}", self.processor_idempotency_key)
    }
}
