//! Events as outbox messages.

use chrono::{DateTime, Utc};
use ps_contract::events::{Event, EventType};
use ps_contract::ids::MerchantId;
use ps_contract::routing::{exchange, header};
use ps_runtime::Outbound;
use serde::Serialize;

/// An event on `payment_sessions.events` whose data is `object`.
pub fn event(event_type: EventType, merchant: &MerchantId, at: DateTime<Utc>, object: &impl Serialize) -> Outbound {
    let event = Event::new(event_type, at, serde_json::to_value(object).unwrap_or_default());
    let body = serde_json::to_value(&event).unwrap_or_default();
    Outbound::json(exchange::EVENTS, event_type.as_str(), &body)
        .with_message_id(event.id.as_str())
        .with_header(header::MERCHANT_ID, merchant.as_str())
}
