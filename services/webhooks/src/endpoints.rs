//! `webhook_endpoint.create` / `.delete` / `.rotate_secret` / `.enable` /
//! `.disable`, `webhook_event.redeliver`.

use crate::guard::Guard;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::ids::{MerchantId, WebhookEndpointId};
use ps_contract::routing::command;
use ps_contract::webhooks::{self, CreateEndpoint, EndpointStatus, WebhookEndpoint};
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::sealing::{At, Keyring};
use ps_runtime::{Admission, Handled, Handler, HandlerError, Incoming};
use ps_store::commands::{self, Answer, Opening};
use rand::RngCore;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct EndpointHandler {
    pub guard: Arc<Guard>,
    /// Local mode (`make run`): plain http is allowed.
    pub allow_http: bool,
    /// Woken when a redelivery is queued.
    pub dispatcher: Arc<tokio::sync::Notify>,
    /// Seals signing secrets at rest, and the replies that carry one.
    pub keys: Keyring,
    /// Endpoints one merchant may have (not deleted) at most.
    pub max_per_merchant: i64,
}

impl Handler for EndpointHandler {
    fn admit<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(commands::admit(tx, msg))
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let opened = match commands::open(tx, msg, Some(&self.keys)).await? {
                Opening::Proceed(o) => o,
                Opening::Answered(answered) => return Ok(answered),
            };
            let (m, body, now) = (&opened.merchant, &opened.body, Utc::now());
            let answer = match msg.routing_key.as_str() {
                command::WEBHOOK_ENDPOINT_CREATE => self.create(tx, m, body, now).await?,
                command::WEBHOOK_ENDPOINT_DELETE => delete(tx, m, body).await?,
                command::WEBHOOK_ENDPOINT_ROTATE_SECRET => rotate(tx, m, body, now, &self.keys).await?,
                command::WEBHOOK_ENDPOINT_ENABLE => {
                    let a = enable(tx, m, body).await?;
                    self.dispatcher.notify_one();
                    a
                }
                command::WEBHOOK_ENDPOINT_DISABLE => disable(tx, m, body, now).await?,
                command::WEBHOOK_EVENT_REDELIVER => {
                    let a = redeliver(tx, m, body).await?;
                    self.dispatcher.notify_one();
                    a
                }
                other => Answer::Refused(ApiError::new(ErrorCode::UnknownCommand, format!("webhook-dispatch does not handle {other:?}"))),
            };
            match msg.routing_key.as_str() {
                // These answer with the signing secret: it rests sealed, as in its column.
                command::WEBHOOK_ENDPOINT_CREATE | command::WEBHOOK_ENDPOINT_ROTATE_SECRET => {
                    commands::close_sealed(tx, msg, &opened, answer, &self.keys).await
                }
                _ => commands::close(tx, msg, &opened, answer).await,
            }
        })
    }
}

fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    webhooks::secret_from_bytes(&b)
}

fn to_json(e: &WebhookEndpoint) -> Result<Value, serde_json::Error> {
    serde_json::to_value(e)
}

fn not_found(id: &WebhookEndpointId) -> ApiError {
    ApiError::param(ErrorCode::WebhookEndpointNotFound, "webhook_endpoint_id", format!("no such webhook endpoint: {id}"))
}

impl EndpointHandler {
    async fn create(&self, tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
        let req = match CreateEndpoint::parse(body) {
            Ok(r) => r,
            Err(e) => return Ok(Answer::Refused(e)),
        };
        if req.url.scheme() != "https" && !self.allow_http {
            return Ok(Answer::Refused(ApiError::param(ErrorCode::UrlInvalid, "url", "webhook URLs must use https")));
        }
        // No DNS here: the transaction must not wait on a resolver, and the
        // answer must not say what a name resolves to. Deliveries resolve
        // through the guard, which refuses special addresses (DNS rebinding included).
        if let Err(why) = self.guard.check_literal(req.url.host_str().unwrap_or_default()) {
            return Ok(Answer::Refused(ApiError::param(ErrorCode::WebhookUrlNotAllowed, "url", why)));
        }
        // Counted under a lock on the merchant, so concurrent creates cannot pass the cap together.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('ps-endpoints:' || $1))", &[&merchant.as_str()]).await?;
        let existing: i64 = tx
            .query_one("SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1 AND status <> 'deleted'", &[&merchant.as_str()])
            .await?
            .get(0);
        if existing >= self.max_per_merchant {
            return Ok(Answer::Refused(ApiError::new(
                ErrorCode::WebhookEndpointLimitReached,
                format!("a merchant may have {} webhook endpoints; delete one first", self.max_per_merchant),
            )));
        }
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::generate(),
            object: "webhook_endpoint".into(),
            url: req.url.to_string(),
            enabled_events: req.enabled_events,
            secret: Some(new_secret()),
            status: EndpointStatus::Enabled,
            created_at: now,
        };
        tx.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, enabled_events, secret, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'enabled', $6, $6)",
            &[
                &endpoint.id.as_str(),
                &merchant.as_str(),
                &endpoint.url,
                &endpoint.enabled_events,
                &endpoint.secret.as_deref().map(|s| self.keys.seal_str(&At::webhook_secret(endpoint.id.as_str()), s)),
                &now,
            ],
        )
        .await?;
        tracing::info!(endpoint = %endpoint.id, merchant = %merchant, "webhook endpoint created");
        Ok(Answer::Done(to_json(&endpoint)?, vec![]))
    }
}

async fn lock(tx: &Transaction<'_>, merchant: &MerchantId, id: &WebhookEndpointId) -> Result<Option<WebhookEndpoint>, HandlerError> {
    let row = tx
        .query_opt(
            "SELECT url, enabled_events, status, created_at FROM webhook_endpoints
             WHERE id = $1 AND merchant_id = $2 AND status <> 'deleted' FOR UPDATE",
            &[&id.as_str(), &merchant.as_str()],
        )
        .await?;
    Ok(row.map(|r| WebhookEndpoint {
        id: id.clone(),
        object: "webhook_endpoint".into(),
        url: r.get(0),
        enabled_events: r.get(1),
        secret: None,
        status: EndpointStatus::parse(r.get(2)).unwrap_or(EndpointStatus::Disabled),
        created_at: r.get(3),
    }))
}

async fn delete(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let id = match webhooks::parse_endpoint_ref(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    if lock(tx, merchant, &id).await?.is_none() {
        return Ok(Answer::Refused(not_found(&id)));
    }
    tx.execute("UPDATE webhook_endpoints SET status = 'deleted', updated_at = now() WHERE id = $1", &[&id.as_str()]).await?;
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted', finished_at = now()
         WHERE endpoint_id = $1 AND status = 'pending'",
        &[&id.as_str()],
    )
    .await?;
    Ok(Answer::Done(json!({"id": id, "object": "webhook_endpoint", "deleted": true}), vec![]))
}

/// A new secret; the old one keeps signing beside it for 24 hours.
async fn rotate(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    body: &Value,
    now: DateTime<Utc>,
    keys: &Keyring,
) -> Result<Answer, HandlerError> {
    let id = match webhooks::parse_endpoint_ref(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut endpoint) = lock(tx, merchant, &id).await? else { return Ok(Answer::Refused(not_found(&id))) };
    let secret = new_secret();
    tx.execute(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $2::timestamptz + interval '24 hours',
             secret = $3, updated_at = $2 WHERE id = $1",
        &[&id.as_str(), &now, &keys.seal_str(&At::webhook_secret(id.as_str()), &secret)],
    )
    .await?;
    endpoint.secret = Some(secret);
    Ok(Answer::Done(to_json(&endpoint)?, vec![]))
}

/// Turns a disabled endpoint back on with a clean record: deliveries failed
/// while it was off stay failed (redeliver them by event if wanted).
async fn enable(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let id = match webhooks::parse_endpoint_ref(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut endpoint) = lock(tx, merchant, &id).await? else { return Ok(Answer::Refused(not_found(&id))) };
    if endpoint.status == EndpointStatus::Disabled {
        tx.execute(
            "UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL, failing_since = NULL, updated_at = now() WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        endpoint.status = EndpointStatus::Enabled;
        tracing::info!(endpoint = %id, merchant = %merchant, "webhook endpoint enabled by command");
    }
    Ok(Answer::Done(to_json(&endpoint)?, vec![]))
}

/// Turns an endpoint off as the dispatcher does after days of failures: its
/// pending deliveries fail, and `webhook_endpoint.disabled` says so.
async fn disable(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
    let id = match webhooks::parse_endpoint_ref(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut endpoint) = lock(tx, merchant, &id).await? else { return Ok(Answer::Refused(not_found(&id))) };
    if endpoint.status == EndpointStatus::Disabled {
        return Ok(Answer::Done(to_json(&endpoint)?, vec![]));
    }
    tx.execute(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'disabled by command', updated_at = now() WHERE id = $1",
        &[&id.as_str()],
    )
    .await?;
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled', finished_at = now(), lease_until = NULL
         WHERE endpoint_id = $1 AND status = 'pending'",
        &[&id.as_str()],
    )
    .await?;
    endpoint.status = EndpointStatus::Disabled;
    tracing::info!(endpoint = %id, merchant = %merchant, "webhook endpoint disabled by command");
    let event = ps_store::events::event(ps_contract::events::EventType::WebhookEndpointDisabled, merchant, now, &endpoint)?;
    Ok(Answer::Done(to_json(&endpoint)?, vec![event]))
}

async fn redeliver(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let (event, endpoint) = match webhooks::parse_redeliver(body) {
        Ok(x) => x,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let found =
        tx.query_opt("SELECT type FROM webhook_events WHERE id = $1 AND merchant_id = $2", &[&event.as_str(), &merchant.as_str()]).await?;
    let Some(row) = found else {
        return Ok(Answer::Refused(ApiError::param(ErrorCode::EventNotFound, "event_id", format!("no such event: {event}"))));
    };
    let kind: String = row.get(0);
    let targets: Vec<String> = match &endpoint {
        Some(id) => match lock(tx, merchant, id).await? {
            Some(e) if e.status == EndpointStatus::Enabled => vec![id.to_string()],
            _ => return Ok(Answer::Refused(not_found(id))),
        },
        None => tx
            .query(
                "SELECT id FROM webhook_endpoints WHERE merchant_id = $1 AND status = 'enabled' AND enabled_events && ARRAY[$2, '*']",
                &[&merchant.as_str(), &kind],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    for t in &targets {
        tx.execute("INSERT INTO webhook_deliveries (event_id, endpoint_id, status) VALUES ($1, $2, 'pending')", &[&event.as_str(), t])
            .await?;
    }
    Ok(Answer::Done(json!({"object": "webhook_redelivery", "event_id": event, "webhook_endpoint_ids": targets}), vec![]))
}
