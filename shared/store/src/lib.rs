//! Storage shared by the services that write payment sessions, and the events
//! they emit about them.

pub mod commands;
pub mod events;
pub mod fence;
pub mod grants;
pub mod idempotency;
pub mod mandates;
pub mod sessions;
