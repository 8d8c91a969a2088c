//! The fleet's integration suite: real binaries' code, real RabbitMQ, real PostgreSQL.

mod api;
mod api_keys;
mod authentication;
mod batches;
mod browser;
mod checkout;
mod contract;
mod deploy;
mod docs;
mod embedding;
mod faults;
mod hot_paths;
mod intake;
mod moment;
mod observability;
mod operator;
mod payments;
mod reads;
mod refunds;
mod resilience;
mod scheduler;
mod security;
mod stripe;
mod tls;
mod trust;
mod webhooks;
