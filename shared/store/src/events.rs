//! Events as outbox messages.

use chrono::{DateTime, Utc};
#[cfg(test)]
use ps_contract::events::Event;
use ps_contract::events::EventType;
use ps_contract::ids::{EventId, MerchantId};
use ps_contract::routing::{exchange, header};
use ps_contract::timestamp;
use ps_runtime::Outbound;
use serde::Serialize;

/// An event on `payment_sessions.events` whose data is `object`, written as
/// JSON once (the wire shape of [`ps_contract::events::Event`], borrowing the object).
pub fn event(
    event_type: EventType,
    merchant: &MerchantId,
    at: DateTime<Utc>,
    object: &impl Serialize,
) -> Result<Outbound, serde_json::Error> {
    #[derive(Serialize)]
    struct Borrowed<'a, T> {
        id: &'a EventId,
        #[serde(rename = "type")]
        event_type: EventType,
        #[serde(serialize_with = "timestamp::serialize")]
        created_at: DateTime<Utc>,
        data: &'a T,
    }
    let id = EventId::generate();
    let out = Outbound::to_json(exchange::EVENTS, event_type.as_str(), &Borrowed { id: &id, event_type, created_at: at, data: object })?;
    Ok(out.with_message_id(id.as_str()).with_header(header::MERCHANT_ID, merchant.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_written_in_the_contracts_shape() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:15:00Z").unwrap().with_timezone(&Utc);
        let merchant = MerchantId::parse("shop").unwrap();
        let out = event(EventType::RefundCreated, &merchant, at, &serde_json::json!({"id": "re_x"})).unwrap();
        let parsed: Event = serde_json::from_slice(&out.body).unwrap();
        assert_eq!((parsed.event_type, parsed.created_at, &parsed.data["id"]), (EventType::RefundCreated, at, &serde_json::json!("re_x")));
        assert_eq!(out.message_id.as_deref(), Some(parsed.id.as_str()));
        assert_eq!(out.routing_key, "refund.created");
    }
}
