//! Plumbing every Payment Sessions service shares: configuration, the broker
//! (topology, confirmed publishing, the consume loop), the database (pool,
//! migrations, dedupe, outbox), telemetry and health.

pub mod broker;
pub mod config;
pub mod consumer;
pub mod db;
pub mod deadletters;
pub mod dedupe;
pub mod health;
pub mod members;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod sealing;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod web;

pub use config::{Config, ConfigError, Env};
pub use consumer::{Admission, Called, Handled, Handler, HandlerError, Prepared};
pub use message::{Incoming, Outbound};
