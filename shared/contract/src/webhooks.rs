//! Webhook endpoints and Standard Webhooks signatures (DESIGN §6).

use crate::error::{ApiError, ErrorCode};
use crate::events::EventType;
use crate::fields::Obj;
use crate::ids::{EventId, WebhookEndpointId};
use crate::lifecycle::wire_enum;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

wire_enum!(EndpointStatus { Enabled => "enabled", Disabled => "disabled" });

/// The `webhook_endpoint` object. `secret` is shown on create and rotation only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    /// Always `"webhook_endpoint"`.
    pub object: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub status: EndpointStatus,
    #[serde(with = "crate::timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `webhook_endpoint.create`: `{url, enabled_events}`. The URL's shape is checked
/// here; where it points is the dispatcher's check (it resolves the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEndpoint {
    pub url: url::Url,
    /// Event types, or `["*"]` for all.
    pub enabled_events: Vec<String>,
}

impl CreateEndpoint {
    pub fn parse(body: &Value) -> Result<CreateEndpoint, ApiError> {
        let o = Obj::new(body, "")?;
        o.only(&["url", "enabled_events"])?;
        let raw = o.req_str("url", 2048)?;
        let url =
            url::Url::parse(raw).map_err(|e| ApiError::param(ErrorCode::UrlInvalid, "url", format!("url is not an absolute URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(ApiError::param(ErrorCode::UrlInvalid, "url", "url must be an http(s) URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ApiError::param(ErrorCode::UrlInvalid, "url", "url must not carry credentials"));
        }
        let events = o.require("enabled_events")?.as_array().ok_or_else(|| o.wrong_type("enabled_events", "an array of event types"))?;
        if events.is_empty() || events.len() > 64 {
            return Err(ApiError::param(
                ErrorCode::EnabledEventsInvalid,
                "enabled_events",
                "enabled_events needs 1 to 64 event types, or [\"*\"]",
            ));
        }
        let mut enabled = vec![];
        for e in events {
            match e.as_str() {
                Some("*") => enabled.push("*".to_owned()),
                Some(t) if EventType::parse(t).is_some() => enabled.push(t.to_owned()),
                _ => {
                    return Err(ApiError::param(ErrorCode::EnabledEventsInvalid, "enabled_events", format!("{e} is not an event type")));
                }
            }
        }
        enabled.sort();
        enabled.dedup();
        Ok(CreateEndpoint { url, enabled_events: enabled })
    }
}

/// `webhook_endpoint.delete` and `webhook_endpoint.rotate_secret`: `{webhook_endpoint_id}`.
pub fn parse_endpoint_ref(body: &Value) -> Result<WebhookEndpointId, ApiError> {
    let o = Obj::new(body, "")?;
    o.only(&["webhook_endpoint_id"])?;
    WebhookEndpointId::parse(o.req_str("webhook_endpoint_id", 64)?).map_err(|e| e.with_param("webhook_endpoint_id"))
}

/// `webhook_event.redeliver`: `{event_id, webhook_endpoint_id?}`.
pub fn parse_redeliver(body: &Value) -> Result<(EventId, Option<WebhookEndpointId>), ApiError> {
    let o = Obj::new(body, "")?;
    o.only(&["event_id", "webhook_endpoint_id"])?;
    let event = EventId::parse(o.req_str("event_id", 64)?).map_err(|e| e.with_param("event_id"))?;
    let endpoint = o
        .str("webhook_endpoint_id", 64)?
        .map(|s| WebhookEndpointId::parse(s).map_err(|e| e.with_param("webhook_endpoint_id")))
        .transpose()?;
    Ok((event, endpoint))
}

/// A new `whsec_` secret from 32 random bytes the caller supplies.
pub fn secret_from_bytes(bytes: &[u8; 32]) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn key(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_")?).ok()
}

/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated
/// (two during a rotation).
pub fn signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().filter_map(|s| sign(s, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// For receivers: does any signature in the header match `secret`? Compared in
/// constant time; the caller also checks the timestamp is recent.
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(expected) = sign(secret, msg_id, timestamp, body) else { return false };
    header
        .split_whitespace()
        .any(|sig| sig.len() == expected.len() && sig.bytes().zip(expected.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The Standard Webhooks specification's own test vector.
    #[test]
    fn matches_the_specification_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verification_takes_any_of_several_signatures() {
        let (old, new) = (secret_from_bytes(&[1; 32]), secret_from_bytes(&[2; 32]));
        let header = signature_header(&[&new, &old], "evt_1", 100, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, "evt_1", 100, b"{}", &header));
        assert!(verify(&new, "evt_1", 100, b"{}", &header));
        assert!(!verify(&new, "evt_1", 101, b"{}", &header));
        assert!(!verify(&new, "evt_1", 100, b"{ }", &header));
        assert!(!verify("whsec_not base64", "evt_1", 100, b"{}", &header));
    }

    #[test]
    fn endpoint_bodies() {
        let ok = CreateEndpoint::parse(
            &json!({"url": "https://shop.example/hooks", "enabled_events": ["payment_session.completed", "mandate.revoked"]}),
        )
        .unwrap();
        assert_eq!(ok.enabled_events, ["mandate.revoked", "payment_session.completed"]);
        let code = |v| CreateEndpoint::parse(&v).unwrap_err().code;
        assert_eq!(code(json!({"url": "ftp://x.example", "enabled_events": ["*"]})), ErrorCode::UrlInvalid);
        assert_eq!(code(json!({"url": "https://u:p@x.example", "enabled_events": ["*"]})), ErrorCode::UrlInvalid);
        assert_eq!(code(json!({"url": "https://x.example", "enabled_events": []})), ErrorCode::EnabledEventsInvalid);
        assert_eq!(code(json!({"url": "https://x.example", "enabled_events": ["payment.exploded"]})), ErrorCode::EnabledEventsInvalid);
        assert_eq!(code(json!({"url": "https://x.example"})), ErrorCode::ParameterMissing);
        assert_eq!(parse_redeliver(&json!({"event_id": "nope"})).unwrap_err().code, ErrorCode::IdInvalid);
    }
}
