//! Messages between services on `payment_sessions.internal`. Upstream never sees these.

use crate::ids::{AttemptId, MandateId, MerchantId, PaymentMethodId, RefundId, SessionId};
use crate::lifecycle::wire_enum;
use crate::money::Currency;
use crate::payment::CaptureMethod;
pub use crate::payment::CardSummary;
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
    /// A card entered at checkout and kept: for what later use (the processor
    /// must be told before it allows charges without the customer).
    #[serde(default)]
    pub save_for: Option<SaveUsage>,
}

wire_enum!(
    /// What a saved card will be used for.
    SaveUsage {
        /// Merchant-initiated charges under a mandate.
        OffSession => "off_session",
        /// The customer's own later checkouts.
        OnSession => "on_session",
    }
);

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
    /// For a capture: at most what is still open of the authorisation; for a
    /// void: all that is open.
    pub amount: i64,
    pub currency: Currency,
    pub processor_idempotency_key: String,
    /// A capture that takes all that is open (or that the merchant means as
    /// the last): the processor closes the authorisation with it. Not final,
    /// the rest stays open for more captures where the processor allows it
    /// (Stripe's multicapture). Absent (older messages): final.
    #[serde(default = "final_by_default")]
    pub final_capture: bool,
}

fn final_by_default() -> bool {
    true
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
wire_enum!(Outcome {
    Succeeded => "succeeded",
    Failed => "failed",
    /// The customer must authenticate (3-D Secure) before the processor answers.
    RequiresAction => "requires_action",
});

wire_enum!(
    /// An attempt's state, as `payment_attempts.status` holds it.
    AttemptStatus {
        Pending => "pending",
        /// Waiting for the customer to authenticate (3-D Secure) at the checkout.
        RequiresAction => "requires_action",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Lifecycle stopped waiting for an answer; the processor is asked what it did.
        Abandoned => "abandoned",
    }
);

impl AttemptStatus {
    /// Still waiting for the processor's final answer (or the customer's authentication).
    pub fn awaiting(self) -> bool {
        matches!(self, AttemptStatus::Pending | AttemptStatus::RequiresAction | AttemptStatus::Abandoned)
    }
}

wire_enum!(
    /// What the checkout shows for an attempt that needs the customer.
    ActionKind {
        /// The sandbox's own challenge page.
        SandboxChallenge => "sandbox_challenge",
        /// Stripe.js completes a PaymentIntent's next action with its client secret.
        StripePayment => "stripe_payment",
        /// Stripe.js completes a SetupIntent's next action (a zero-amount verification).
        StripeSetup => "stripe_setup",
    }
);

/// How the customer completes an attempt that requires action. The client
/// secret is the processor's: it lets the holder finish this one payment and
/// nothing else, so it goes to the customer's browser and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NextAction {
    pub kind: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// `gateway.authenticate`: the customer finished (or gave up) the challenge
/// of an attempt that required action, or lifecycle gave up on it when its
/// session expired. The processor says what came of it; the browser's word
/// is taken only by the sandbox, whose challenge is ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthenticateRequest {
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    /// The customer completed the challenge (false: failed, abandoned, expired).
    pub completed: bool,
    pub processor_idempotency_key: String,
}

/// `checkout.cancel`: the customer chose "cancel and return" on the checkout
/// that holds the session's token. Lifecycle cancels the session if it still
/// may be cancelled (active, no payment under way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CustomerCancel {
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
}

/// `gateway.dispute`: the processor told of a dispute on an attempt's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DisputeNotice {
    pub attempt_id: AttemptId,
    pub session_id: SessionId,
    pub merchant_id: MerchantId,
    /// The processor's id of the dispute (`dp_…` at Stripe).
    pub dispute_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub reason: String,
    pub status: String,
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
    /// With `requires_action`: how the customer completes it.
    #[serde(default)]
    pub next_action: Option<NextAction>,
    /// A capture's: the processor kept the rest of the authorisation open for
    /// more captures. False: what this capture did not take is released.
    #[serde(default)]
    pub authorization_open: bool,
}

impl GatewayResult {
    /// Deterministic per processor call and outcome, so a result published
    /// twice (answered, and told again by the processor's own event) is applied
    /// once, while a call that first required action can still be answered.
    pub fn message_id(&self) -> String {
        format!("result:{}:{}", self.processor_idempotency_key, self.outcome)
    }
}
