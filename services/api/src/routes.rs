//! Each route turns an HTTP request into its command's body: ids from the path,
//! filters from the query string, the JSON body checked to be an object and
//! not to name the object the path names already.

use crate::app::{AppState, Call, Kind, Shape};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ps_contract::ids::PaymentId;
use ps_contract::routing::command;
use ps_contract::{ApiError, ErrorCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

type Q = Query<BTreeMap<String, String>>;

/// The request's body as a JSON object; an empty body is an empty object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::new(ErrorCode::BodyNotObject, "the body must be a JSON object")),
        Err(e) => Err(ApiError::new(ErrorCode::InvalidJson, format!("the body is not JSON: {e}"))),
    }
}

/// The body as a command takes it, with `fields` from the path added. A body
/// that already names one of them is refused: the path says which object.
fn with_path(body: &[u8], fields: &[(&str, &str)]) -> Result<Vec<u8>, ApiError> {
    let mut o = object(body)?;
    for (k, v) in fields {
        if o.contains_key(*k) {
            return Err(ApiError::param(ErrorCode::ParameterUnknown, *k, format!("{k} is named by the path, not the body")));
        }
        o.insert((*k).to_owned(), json!(v));
    }
    Ok(Value::Object(o).to_string().into_bytes())
}

fn path_only(fields: &[(&str, &str)]) -> Vec<u8> {
    with_path(b"", fields).expect("an empty body takes any field")
}

/// A list's filters from the query string: `limit` as a number when it is
/// one (anything else is the command's to refuse).
fn query_body(q: BTreeMap<String, String>) -> Vec<u8> {
    let body: Map<String, Value> = q
        .into_iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v.parse::<i64>()) {
                ("limit", Ok(n)) => json!(n),
                _ => json!(v),
            };
            (k, v)
        })
        .collect();
    Value::Object(body).to_string().into_bytes()
}

/// A `pay_…` id as its session's, or the error a bad one deserves.
fn payment(id: &str) -> Result<String, ApiError> {
    PaymentId::parse(id).map(|p| p.session().as_str().to_owned()).map_err(|e| e.with_param("id"))
}

impl AppState {
    async fn call_or_refuse(
        &self,
        headers: &HeaderMap,
        key: &'static str,
        kind: Kind,
        shape: Shape,
        body: Result<Vec<u8>, ApiError>,
    ) -> Response {
        match body {
            Ok(body) => self.serve(headers, Call { routing_key: key, kind, shape, body }).await,
            Err(e) => self.refuse(headers, e).await,
        }
    }
}

pub async fn create_session(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> Response {
    s.call_or_refuse(&h, command::SESSION_CREATE, Kind::Mutation, Shape::AsIs, Ok(body.to_vec())).await
}

pub async fn list_sessions(State(s): State<AppState>, h: HeaderMap, Query(q): Q) -> Response {
    s.call_or_refuse(&h, command::SESSION_LIST, Kind::Read, Shape::AsIs, Ok(query_body(q))).await
}

pub async fn retrieve_session(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    s.call_or_refuse(&h, command::SESSION_RETRIEVE, Kind::Read, Shape::AsIs, Ok(path_only(&[("payment_session_id", &id)]))).await
}

pub async fn cancel_session(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let body = with_path(&body, &[("payment_session_id", &id)]);
    s.call_or_refuse(&h, command::SESSION_CANCEL, Kind::Mutation, Shape::AsIs, body).await
}

pub async fn retrieve_payment(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let body = payment(&id).map(|sid| path_only(&[("payment_session_id", &sid)]));
    s.call_or_refuse(&h, command::SESSION_RETRIEVE, Kind::Read, Shape::Payment(id), body).await
}

/// `{amount?}`: less than what is authorised captures part.
pub async fn capture_payment(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let body = payment(&id).and_then(|sid| with_path(&body, &[("payment_session_id", &sid)]));
    s.call_or_refuse(&h, command::PAYMENT_CAPTURE, Kind::Mutation, Shape::Payment(id), body).await
}

pub async fn void_payment(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let body = payment(&id).and_then(|sid| with_path(&body, &[("payment_session_id", &sid)]));
    s.call_or_refuse(&h, command::PAYMENT_VOID, Kind::Mutation, Shape::Payment(id), body).await
}

/// `{payment_id | payment_session_id, amount?, reason?, metadata?}`.
pub async fn create_refund(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> Response {
    let body = refund_body(&body);
    s.call_or_refuse(&h, command::REFUND_CREATE, Kind::Mutation, Shape::AsIs, body).await
}

/// A refund names its payment by `payment_id` (Moment's) or its session.
fn refund_body(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut o = object(body)?;
    if let Some(p) = o.remove("payment_id") {
        if o.contains_key("payment_session_id") {
            return Err(ApiError::param(ErrorCode::ParameterConflict, "payment_id", "give payment_id or payment_session_id, not both"));
        }
        let id = p.as_str().ok_or_else(|| ApiError::param(ErrorCode::ParameterInvalidType, "payment_id", "payment_id must be a string"))?;
        o.insert("payment_session_id".into(), json!(payment(id).map_err(|e| e.with_param("payment_id"))?));
    }
    Ok(Value::Object(o).to_string().into_bytes())
}

pub async fn retrieve_refund(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    s.call_or_refuse(&h, command::REFUND_RETRIEVE, Kind::Read, Shape::AsIs, Ok(path_only(&[("refund_id", &id)]))).await
}

pub async fn list_mandates(State(s): State<AppState>, h: HeaderMap, Query(q): Q) -> Response {
    s.call_or_refuse(&h, command::MANDATE_LIST, Kind::Read, Shape::AsIs, Ok(query_body(q))).await
}

pub async fn retrieve_mandate(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    s.call_or_refuse(&h, command::MANDATE_RETRIEVE, Kind::Read, Shape::AsIs, Ok(path_only(&[("mandate_id", &id)]))).await
}

pub async fn revoke_mandate(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let body = with_path(&body, &[("mandate_id", &id)]);
    s.call_or_refuse(&h, command::MANDATE_REVOKE, Kind::Mutation, Shape::AsIs, body).await
}

pub async fn list_schedules(State(s): State<AppState>, h: HeaderMap, Query(q): Q) -> Response {
    s.call_or_refuse(&h, command::SCHEDULE_LIST, Kind::Read, Shape::AsIs, Ok(query_body(q))).await
}

pub async fn retrieve_schedule(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    s.call_or_refuse(&h, command::SCHEDULE_RETRIEVE, Kind::Read, Shape::AsIs, Ok(path_only(&[("schedule_id", &id)]))).await
}

/// `pause`, `resume`, `cancel`.
pub async fn schedule_action(State(s): State<AppState>, h: HeaderMap, Path((id, action)): Path<(String, String)>, body: Bytes) -> Response {
    let key = match action.as_str() {
        "pause" => command::SCHEDULE_PAUSE,
        "resume" => command::SCHEDULE_RESUME,
        "cancel" => command::SCHEDULE_CANCEL,
        _ => return crate::app::unknown_route(&format!("POST /collect/schedules/{{id}}/{action}")),
    };
    s.call_or_refuse(&h, key, Kind::Mutation, Shape::AsIs, with_path(&body, &[("schedule_id", &id)])).await
}

/// `{charges: […]}`: a billing scheduler's batch.
pub async fn trigger_schedule(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> Response {
    s.call_or_refuse(&h, command::SCHEDULE_TRIGGER, Kind::Mutation, Shape::AsIs, Ok(body.to_vec())).await
}

pub async fn create_endpoint(State(s): State<AppState>, h: HeaderMap, body: Bytes) -> Response {
    s.call_or_refuse(&h, command::WEBHOOK_ENDPOINT_CREATE, Kind::Mutation, Shape::AsIs, Ok(body.to_vec())).await
}

pub async fn delete_endpoint(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let body = Ok(path_only(&[("webhook_endpoint_id", &id)]));
    s.call_or_refuse(&h, command::WEBHOOK_ENDPOINT_DELETE, Kind::Mutation, Shape::AsIs, body).await
}

/// `rotate_secret`, `enable`, `disable`.
pub async fn endpoint_action(State(s): State<AppState>, h: HeaderMap, Path((id, action)): Path<(String, String)>, body: Bytes) -> Response {
    let key = match action.as_str() {
        "rotate_secret" => command::WEBHOOK_ENDPOINT_ROTATE_SECRET,
        "enable" => command::WEBHOOK_ENDPOINT_ENABLE,
        "disable" => command::WEBHOOK_ENDPOINT_DISABLE,
        _ => return crate::app::unknown_route(&format!("POST /webhook_endpoints/{{id}}/{action}")),
    };
    s.call_or_refuse(&h, key, Kind::Mutation, Shape::AsIs, with_path(&body, &[("webhook_endpoint_id", &id)])).await
}

/// `{webhook_endpoint_id?}`: to one endpoint, or every endpoint that got it.
pub async fn redeliver_event(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    s.call_or_refuse(&h, command::WEBHOOK_EVENT_REDELIVER, Kind::Mutation, Shape::AsIs, with_path(&body, &[("event_id", &id)])).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_object_and_the_body_cannot() {
        let b = with_path(br#"{"amount": 5}"#, &[("payment_session_id", "ps_x")]).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), json!({"amount": 5, "payment_session_id": "ps_x"}));
        assert_eq!(with_path(b" ", &[("a", "b")]).unwrap(), br#"{"a":"b"}"#.to_vec());
        let e = with_path(br#"{"payment_session_id": "ps_other"}"#, &[("payment_session_id", "ps_x")]).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::ParameterUnknown, Some("payment_session_id")));
        assert_eq!(with_path(b"[1]", &[]).unwrap_err().code, ErrorCode::BodyNotObject);
        assert_eq!(with_path(b"{", &[]).unwrap_err().code, ErrorCode::InvalidJson);
    }

    #[test]
    fn a_refund_names_its_payment_either_way() {
        let b = refund_body(br#"{"payment_id": "pay_01JDV3V9QK2H7M4N6P8R0S1T2U", "amount": 5}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"payment_session_id": "ps_01JDV3V9QK2H7M4N6P8R0S1T2U", "amount": 5}));
        let e = refund_body(br#"{"payment_id": "pay_x"}"#).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::IdInvalid, Some("payment_id")));
        let both = br#"{"payment_id": "pay_01JDV3V9QK2H7M4N6P8R0S1T2U", "payment_session_id": "ps_01JDV3V9QK2H7M4N6P8R0S1T2U"}"#;
        assert_eq!(refund_body(both).unwrap_err().code, ErrorCode::ParameterConflict);
    }
}
