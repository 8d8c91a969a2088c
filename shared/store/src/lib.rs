//! Storage shared by the services that write payment sessions, and the events
//! they emit about them.

pub mod api_keys;
pub mod attempts;
pub mod checkout_settings;
pub mod commands;
pub mod events;
pub mod grants;
pub mod idempotency;
pub mod mandates;
pub mod saved_cards;
pub mod sessions;

/// What checking a request against the records found: it passes, with what
/// was found, or the request is refused with the merchant's error. Failures of
/// the store itself travel beside it, as `Err(HandlerError)`.
#[derive(Debug)]
pub enum Checked<T> {
    Passed(T),
    Refused(ps_contract::ApiError),
}
