//! What the gateway needs from a card processor. The sandbox is one; a real
//! acquirer's client would be another.

use futures::future::BoxFuture;
use ps_contract::internal::{CardSummary, Operation, Outcome};
use ps_contract::money::Currency;

pub struct ProcessorRequest<'a> {
    /// The processor's idempotency key: the same key never moves money twice.
    pub key: &'a str,
    pub operation: Operation,
    /// Authorize: the vault token of the card.
    pub card_token: Option<&'a str>,
    /// Capture and void: the key of the authorisation they settle.
    pub authorization_key: Option<&'a str>,
    pub amount: i64,
    pub currency: Currency,
    pub customer_present: bool,
    pub capture: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorResponse {
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub decline_code: Option<String>,
    pub reference: String,
    pub card: Option<CardSummary>,
}

#[derive(Debug, thiserror::Error)]
#[error("processor unavailable: {0}")]
pub struct ProcessorError(pub String);

pub trait Processor: Send + Sync + 'static {
    fn execute<'a>(&'a self, req: ProcessorRequest<'a>) -> BoxFuture<'a, Result<ProcessorResponse, ProcessorError>>;

    /// What happened to the call with this key, if the processor has it: how an
    /// unknown outcome (a timeout) is resolved without charging again.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>>;
}
