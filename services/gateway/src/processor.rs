//! What the gateway needs from a card processor: one trait, the sandbox and
//! Stripe behind it (DESIGN §11).

use futures::future::BoxFuture;
use ps_contract::internal::{CardSummary, NextAction, Operation, Outcome};
use ps_contract::money::Currency;

/// What a saved card is for, when an authorization saves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFor {
    /// Merchant-initiated charges later (a `first_in_series`: the mandate).
    OffSession,
    /// The customer's own later checkouts (a `one_time` that saves the card).
    OnSession,
}

pub struct ProcessorRequest<'a> {
    /// The processor's idempotency key: the same key never moves money twice.
    pub key: &'a str,
    pub operation: Operation,
    /// Authorize: the vault token of the card.
    pub card_token: Option<&'a str>,
    /// Capture, void and refund: the key of the authorisation they settle.
    pub authorization_key: Option<&'a str>,
    pub amount: i64,
    pub currency: Currency,
    pub customer_present: bool,
    pub capture: bool,
    /// Authorize: the card is kept for later use (the processor is told so,
    /// as it requires for charges without the customer).
    pub save: Option<SaveFor>,
    /// Capture: it closes the authorisation (false: the rest stays open for
    /// more captures, where the processor allows it).
    pub final_capture: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorResponse {
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub decline_code: Option<String>,
    pub reference: String,
    pub card: Option<CardSummary>,
    /// With `RequiresAction`: what the customer's browser must do.
    pub next_action: Option<NextAction>,
    /// A capture's: the processor kept the rest of the authorisation open.
    pub authorization_open: bool,
}

impl ProcessorResponse {
    pub fn succeeded(reference: impl Into<String>) -> ProcessorResponse {
        ProcessorResponse {
            outcome: Outcome::Succeeded,
            error_code: None,
            decline_code: None,
            reference: reference.into(),
            card: None,
            next_action: None,
            authorization_open: false,
        }
    }

    pub fn requires_action(reference: impl Into<String>, action: NextAction) -> ProcessorResponse {
        ProcessorResponse {
            outcome: Outcome::RequiresAction,
            error_code: None,
            decline_code: None,
            reference: reference.into(),
            card: None,
            next_action: Some(action),
            authorization_open: false,
        }
    }

    pub fn failed(error_code: &str, decline_code: &str, reference: impl Into<String>) -> ProcessorResponse {
        ProcessorResponse {
            outcome: Outcome::Failed,
            error_code: Some(error_code.to_owned()),
            decline_code: Some(decline_code.to_owned()),
            reference: reference.into(),
            card: None,
            next_action: None,
            authorization_open: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The processor could not be reached or answered in a way that says
    /// nothing about the call (a 5xx, a broken connection): ask again later.
    #[error("processor unavailable: {0}")]
    Unavailable(String),
    /// The processor asks us to slow down (HTTP 429), for at least this long.
    #[error("processor rate limit: retry after {0:?}")]
    RateLimited(std::time::Duration),
    /// A request the processor refused as malformed: a bug, never retried.
    #[error("processor refused the request: {0}")]
    Refused(String),
    /// Taken, and still in progress at the processor (a refund its bank has
    /// not finished): the processor's event, or the next sweep, answers it.
    #[error("still in progress at the processor: {0}")]
    Pending(String),
}

impl ProcessorError {
    pub fn unavailable(e: impl std::fmt::Display) -> ProcessorError {
        ProcessorError::Unavailable(e.to_string())
    }
}

/// Card data as it enters the vault: held in memory only, never stored as is
/// (the number is sealed, the security code dropped once the processor has it).
pub struct CardData<'a> {
    pub number: &'a str,
    pub exp_month: u32,
    pub exp_year: i32,
    pub cvc: &'a str,
}

/// What a processor made of a card at vaulting time.
pub enum Tokenized {
    /// The processor's own reference for the card (Stripe's PaymentMethod),
    /// and its funding as the processor reports it.
    Method { id: String, funding: Option<String> },
    /// The processor needs nothing until it is charged (the sandbox).
    Nothing,
    /// The processor refused the card: the customer can fix it.
    Refused { code: String, message: String },
}

pub trait Processor: Send + Sync + 'static {
    fn execute<'a>(&'a self, req: ProcessorRequest<'a>) -> BoxFuture<'a, Result<ProcessorResponse, ProcessorError>>;

    /// What happened to the call with this key, if the processor has it: how an
    /// unknown outcome (a timeout) is resolved without charging again. Asks,
    /// never acts.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>>;

    /// An authorization whose outcome is unknown is being closed (lifecycle
    /// gave up waiting): what happened, once nothing more can. `None`: nothing
    /// was or will be charged. Where a call still in flight could yet move
    /// money (a confirmation Stripe has not received), the processor is told
    /// to refuse it first.
    fn close_unknown<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        self.lookup(key)
    }

    /// The customer finished (`completed`) or gave up the challenge of the
    /// authorization under `key`: what the processor now says of it.
    /// `None` while it still waits for the customer.
    fn authenticate<'a>(&'a self, key: &'a str, completed: bool) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>>;

    /// A card arriving at the vault, while its security code is still in memory.
    fn tokenize<'a>(&'a self, card: CardData<'a>, vault_token: &'a str) -> BoxFuture<'a, Result<Tokenized, ProcessorError>>;
}
