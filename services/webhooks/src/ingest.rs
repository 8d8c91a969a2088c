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
    /// (DESIGN §10); each is recorded once by its id.
    fn admit<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async { Ok(Admission::Apply) })
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
            let stored = tx
                .execute(
                    &tx.prepare_cached(
                        "INSERT INTO webhook_events (id, merchant_id, type, payload) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                    )
                    .await?,
                    &[&id.as_ref(), &merchant, &kind.as_ref(), &msg.body],
                )
                .await?;
            if stored == 1 {
                let n = tx
                    .execute(
                        &tx.prepare_cached(
                            "INSERT INTO webhook_deliveries (event_id, endpoint_id, status)
                         SELECT $1, id, 'pending' FROM webhook_endpoints
                         WHERE merchant_id = $2 AND status = 'enabled' AND enabled_events && ARRAY[$3, '*']",
                        )
                        .await?,
                        &[&id.as_ref(), &merchant, &kind.as_ref()],
                    )
                    .await?;
                crate::metrics::EVENTS.with_label_values(&[kind.as_ref()]).inc();
                tracing::debug!(event = %id, deliveries = n, "event stored");
            }
            Ok(Handled::default())
        })
    }
}
