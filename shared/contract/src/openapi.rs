//! The HTTP API (DESIGN §12) as an OpenAPI 3.1 document, from the same types
//! as the JSON Schemas and the AsyncAPI document: each route names the command
//! it sends and the documents its body, query and reply are.

use crate::schema::components;
use crate::ErrorCode;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

/// A route of `payments-api`.
pub struct HttpRoute {
    pub method: &'static str,
    /// With `{id}` (and `{action}`-free: each action is its own route here).
    pub path: &'static str,
    /// The command it sends.
    pub command: &'static str,
    /// The body's document; `None`: no body.
    pub body: Option<&'static str>,
    /// A list's filters: the document whose fields are query parameters.
    pub query: Option<&'static str>,
    /// The document a success answers with.
    pub reply: &'static str,
    pub summary: &'static str,
}

impl HttpRoute {
    /// A mutation: needs an `Idempotency-Key`.
    pub fn mutates(&self) -> bool {
        self.method != "GET"
    }
}

macro_rules! route {
    ($m:literal $p:literal => $c:literal, body $b:expr, query $q:expr, reply $r:literal, $s:literal) => {
        HttpRoute { method: $m, path: $p, command: $c, body: $b, query: $q, reply: $r, summary: $s }
    };
}

/// Every route the API serves; `services/api` serves exactly these (its tests check).
pub const HTTP_ROUTES: &[HttpRoute] = &[
    route!("POST" "/collect/payment_sessions" => "payment_session.create", body Some("payment_session.create"), query None, reply "payment_session", "Create a payment session"),
    route!("GET" "/collect/payment_sessions" => "payment_session.list", body None, query Some("payment_session.list"), reply "payment_session.list_reply", "List payment sessions, newest first"),
    route!("GET" "/collect/payment_sessions/{id}" => "payment_session.retrieve", body None, query None, reply "payment_session", "Retrieve a payment session"),
    route!("POST" "/collect/payment_sessions/{id}/cancel" => "payment_session.cancel", body Some("http.empty"), query None, reply "payment_session", "Cancel an active payment session"),
    route!("GET" "/collect/payments/{id}" => "payment_session.retrieve", body None, query None, reply "payment", "Retrieve a payment (pay_…)"),
    route!("POST" "/collect/payments/{id}/captures" => "payment.capture", body Some("http.capture"), query None, reply "payment", "Capture a manual-capture payment's authorisation, in full or in part"),
    route!("POST" "/collect/payments/{id}/voids" => "payment.void", body Some("http.empty"), query None, reply "payment", "Release a manual-capture payment's authorisation"),
    route!("POST" "/collect/refunds" => "refund.create", body Some("http.refund"), query None, reply "refund", "Refund a paid payment, in full or in part"),
    route!("GET" "/collect/refunds/{id}" => "refund.retrieve", body None, query None, reply "refund", "Retrieve a refund"),
    route!("GET" "/collect/mandates" => "mandate.list", body None, query Some("mandate.list"), reply "mandate.list_reply", "List mandates"),
    route!("GET" "/collect/mandates/{id}" => "mandate.retrieve", body None, query None, reply "mandate", "Retrieve a mandate"),
    route!("POST" "/collect/mandates/{id}/revoke" => "mandate.revoke", body Some("http.empty"), query None, reply "mandate", "Revoke a mandate"),
    route!("GET" "/collect/schedules" => "schedule.list", body None, query Some("schedule.list"), reply "schedule.list_reply", "List schedules"),
    route!("POST" "/collect/schedules/trigger" => "schedule.trigger", body Some("schedule.trigger"), query None, reply "schedule_trigger", "Charge a batch of next_in_series payments"),
    route!("GET" "/collect/schedules/{id}" => "schedule.retrieve", body None, query None, reply "schedule", "Retrieve a schedule"),
    route!("POST" "/collect/schedules/{id}/pause" => "schedule.pause", body Some("http.empty"), query None, reply "schedule", "Pause a schedule"),
    route!("POST" "/collect/schedules/{id}/resume" => "schedule.resume", body Some("http.empty"), query None, reply "schedule", "Resume a paused schedule"),
    route!("POST" "/collect/schedules/{id}/cancel" => "schedule.cancel", body Some("http.empty"), query None, reply "schedule", "Cancel a schedule"),
    route!("POST" "/webhook_endpoints" => "webhook_endpoint.create", body Some("webhook_endpoint.create"), query None, reply "webhook_endpoint", "Register a webhook endpoint (its signing secret is shown once)"),
    route!("DELETE" "/webhook_endpoints/{id}" => "webhook_endpoint.delete", body None, query None, reply "webhook_endpoint.deleted", "Delete a webhook endpoint"),
    route!("POST" "/webhook_endpoints/{id}/rotate_secret" => "webhook_endpoint.rotate_secret", body Some("http.empty"), query None, reply "webhook_endpoint", "A new signing secret; the old one signs for 24 h more"),
    route!("POST" "/webhook_endpoints/{id}/enable" => "webhook_endpoint.enable", body Some("http.empty"), query None, reply "webhook_endpoint", "Turn a webhook endpoint back on"),
    route!("POST" "/webhook_endpoints/{id}/disable" => "webhook_endpoint.disable", body Some("http.empty"), query None, reply "webhook_endpoint", "Turn a webhook endpoint off"),
    route!("POST" "/webhook_events/{id}/redeliver" => "webhook_event.redeliver", body Some("http.redeliver"), query None, reply "webhook_redelivery", "Send an event again"),
];

/// The statuses a route may answer besides 200, and what each means.
fn errors(r: &HttpRoute) -> Vec<(u16, &'static str)> {
    let mut e = vec![
        (400, "The request is malformed or a field is invalid (error.code, error.param say which)."),
        (401, "No valid API key (invalid_api_key)."),
        (404, "The object named does not exist for this merchant."),
        (429, "Too many requests for this key (rate_limited); retry after Retry-After."),
        (503, "The fleet is unavailable; retry with the same Idempotency-Key."),
        (504, "No answer in time; the request may have been applied: retry with the same Idempotency-Key."),
    ];
    if r.mutates() {
        e.push((409, "The object's state does not allow it, or the Idempotency-Key was used with another request."));
        e.push((422, "A well-formed request the rules refuse (a mandate's limits, a refund above what is left)."));
    }
    e.sort();
    e
}

/// The OpenAPI 3.1 document of `payments-api`.
pub fn openapi(version: &str) -> Value {
    let (bodies, shared) = components(SchemaSettings::draft2020_12);
    let body = |name: &str| bodies.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("no document {name}"));
    let mut schemas: Map<String, Value> = shared;
    // Every document a route names, by name, so operations refer to it.
    let mut named = |doc: &str| -> Value {
        let key = doc.replace('.', "_");
        schemas.entry(key.clone()).or_insert_with(|| body(doc));
        json!({"$ref": format!("#/components/schemas/{key}")})
    };
    let error = named("error_reply");
    let header = |description: &str, schema: Value| json!({"description": description, "schema": schema});
    let request_id = header("The request's id (req_…); also the command's message id, for support and tracing.", json!({"type": "string"}));
    let mut paths: Map<String, Value> = Map::new();
    for r in HTTP_ROUTES {
        let mut parameters = vec![];
        if r.path.contains("{id}") {
            parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        if let Some(q) = r.query {
            let doc = body(q);
            for (name, schema) in doc["properties"].as_object().into_iter().flatten() {
                parameters.push(json!({"name": name, "in": "query", "required": false, "schema": schema}));
            }
        }
        if r.mutates() {
            parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": true,
                "description": "Required on every POST and DELETE: a retry with the same key is answered with the first answer (its error too), never applied twice.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255}}));
        }
        let mut responses = Map::new();
        let mut ok_headers = json!({"Request-Id": request_id});
        if r.mutates() {
            ok_headers["Idempotent-Replayed"] = header(
                "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
                json!({"type": "string", "enum": ["true"]}),
            );
        }
        responses.insert(
            "200".into(),
            json!({"description": "The object.", "headers": ok_headers, "content": {"application/json": {"schema": named(r.reply)}}}),
        );
        for (status, description) in errors(r) {
            let mut resp = json!({"description": description, "headers": {"Request-Id": request_id}, "content": {"application/json": {"schema": error}}});
            if status == 429 {
                resp["headers"]["Retry-After"] = header("Seconds until this key may send again.", json!({"type": "integer"}));
            }
            if status == 401 {
                resp["headers"]["WWW-Authenticate"] = header("`Bearer`.", json!({"type": "string"}));
            }
            responses.insert(status.to_string(), resp);
        }
        let mut op = json!({
            "operationId": r.command.replace('.', "_") + if r.reply == "payment" { "_payment" } else { "" },
            "summary": r.summary,
            "description": format!("Sends the `{}` command and answers with its reply.", r.command),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(b) = r.body {
            op["requestBody"] = json!({"required": b != "http.empty", "content": {"application/json": {"schema": named(b)}}});
        }
        paths
            .entry(r.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object")
            .insert(r.method.to_ascii_lowercase(), op);
    }
    let codes: Vec<Value> = ErrorCode::ALL.iter().map(|c| json!(format!("{} → {}", c.as_str(), c.http_status()))).collect();
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Payment Sessions HTTP API",
            "version": version,
            "description": "Moment's Payment Sessions REST surface, served by payments-api over the fleet's commands (DESIGN §12). \
                Authenticate with `Authorization: Bearer sk_test_…` (or `sk_…` in live mode) from `psctl keys create`.",
            "x-error-statuses": codes,
        },
        "servers": [{"url": "http://127.0.0.1:8081", "description": "make run (put TLS in front: docs/security.md)"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A key from psctl keys create: sk_test_… or sk_…"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::DOCUMENTS;

    #[test]
    fn every_route_names_documents_that_exist_and_commands_that_do() {
        for r in HTTP_ROUTES {
            for d in r.body.iter().chain(r.query.iter()).chain(std::iter::once(&r.reply)) {
                assert!(DOCUMENTS.iter().any(|x| x.name == *d), "{} {} names no document {d}", r.method, r.path);
            }
            assert!(crate::schema::ROUTES.iter().any(|x| x.routing_key == r.command), "{} sends no command {}", r.path, r.command);
        }
        let doc = openapi("0");
        assert_eq!(doc["paths"]["/collect/payments/{id}/captures"]["post"]["parameters"][1]["name"], "Idempotency-Key");
    }
}
