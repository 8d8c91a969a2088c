//! The Payment Sessions wire contract (DESIGN.md): message shapes, parse-once
//! domain values, stable error codes, the lifecycle and the mandate rules.
//!
//! Pure by design — no I/O, no async runtime — so upstream Rust publishers and
//! every service share one definition of what is valid.

pub mod branding;
pub mod commands;
pub mod create;
pub mod error;
pub mod events;
mod fields;
pub mod idempotency;
pub mod ids;
pub mod internal;
pub mod lifecycle;
pub mod mandate;
pub mod money;
mod options;
pub mod payment;
pub mod routing;
pub mod schedule;
pub mod secret;
pub mod session;
pub mod timestamp;
pub mod webhooks;

pub use error::{ApiError, ErrorCode, ErrorType};
#[cfg(feature = "schema")]
pub mod openapi;
#[cfg(feature = "schema")]
pub mod schema;
