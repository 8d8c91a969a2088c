//! Every event: kept byte for byte, and one delivery per subscribed endpoint.

use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::routing::header;
use ps_runtime::{Admission, Handled, Handler, HandlerError, Incoming};

pub struct IngestHandler;

#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

fn reject(why: String) -> Handled {
    tracing::error!(reason = %why, "event not deliverable");
    Handled::dead_lettered("invalid_event", why)
}

impl Handler for IngestHandler {
    /// Events come from the fleet's own services, which the consumer checked
    /// (DESIGN §10). Each is stored once by its own id, and ingesting sends
    /// nothing: no dedupe record is needed beside it.
    fn admit<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async { Ok(Admission::Idempotent) })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let Some(merchant) = msg.header(header::MERCHANT_ID) else {
                return Ok(reject("event without a merchant-id header".into()));
            };
            // Only the id and type are read; the body is kept as it came.
            let (id, kind) = match serde_json::from_slice::<Head<'_>>(&msg.body) {
                Ok(Head { id: Some(id), kind: Some(kind) }) => (id, kind),
                Ok(_) => return Ok(reject("event without id or type".into())),
                Err(e) => return Ok(reject(format!("event is not JSON: {e}"))),
            };
            // Stored once by its id, and one delivery per subscribed endpoint, in one statement.
            let counts = tx
                .query_one(
                    &tx.prepare_cached(
                        "WITH stored AS (
                             INSERT INTO webhook_events (id, merchant_id, type, payload) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (id) DO NOTHING RETURNING id
                         ), planned AS (
                             INSERT INTO webhook_deliveries (event_id, endpoint_id, status)
                             SELECT stored.id, p.id, 'pending' FROM stored, webhook_endpoints p
                             WHERE p.merchant_id = $2 AND p.status = 'enabled' AND p.enabled_events && ARRAY[$3, '*']
                             RETURNING 1
                         )
                         SELECT (SELECT count(*) FROM stored), (SELECT count(*) FROM planned)",
                    )
                    .await?,
                    &[&id.as_ref(), &merchant, &kind.as_ref(), &msg.body],
                )
                .await?;
            let (stored, deliveries): (i64, i64) = (counts.get(0), counts.get(1));
            if stored == 1 {
                crate::metrics::EVENTS.with_label_values(&[kind.as_ref()]).inc();
                tracing::debug!(event = %id, deliveries, "event stored");
            }
            Ok(Handled::default())
        })
    }
}
