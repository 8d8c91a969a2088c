//! `schedule.trigger`: a billing scheduler's batch of up to 10,000 charges,
//! each a `next_in_series` session, sent at a configured rate. The reply lists
//! every charge by index once each has its session or its own error; the
//! `schedule_trigger.completed` event sums them up once every session has ended.
//! The tables `schedule_triggers` and `schedule_trigger_items` are this module's.

use crate::ended::{lock_session, stored_end, Ended};
use crate::Ctx;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use ps_contract::create::{ChargeTarget, CreateSession};
use ps_contract::events::EventType;
use ps_contract::idempotency::IdempotencyKey;
use ps_contract::ids::{MerchantId, TriggerId};
use ps_contract::routing::{command, exchange, header};
use ps_contract::schedule::parse_trigger;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::outbox::Outbox;
use ps_runtime::{Handled, HandlerError, Incoming, Outbound};
use ps_store::commands::{self, Answer, Opening};
use ps_store::events::event;
use ps_store::idempotency;
use serde_json::{json, Value};
use std::collections::HashSet;

/// What a duplicate is keyed on: the mandate (or saved method) charged.
fn target(req: &CreateSession) -> Option<String> {
    match req.charge_target.as_ref()? {
        ChargeTarget::Mandate(m) => Some(m.to_string()),
        ChargeTarget::PaymentMethod { payment_method_id, .. } => Some(payment_method_id.to_string()),
    }
}

fn duplicate(reference: &str) -> ApiError {
    ApiError::param(
        ErrorCode::DuplicateCharge,
        "external_reference",
        format!("a charge with external_reference {reference:?} under this mandate was already made in the last 24 hours"),
    )
}

/// Charged, or being charged, under `target` with this reference in the last 24 h.
async fn seen_before(tx: &Transaction<'_>, merchant: &MerchantId, target: &str, reference: &str) -> Result<bool, HandlerError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM schedule_trigger_items WHERE merchant_id = $1 AND target = $2 AND external_reference = $3
                 AND status <> 'refused' AND created_at > now() - interval '24 hours'
             UNION ALL
             SELECT 1 FROM payment_sessions WHERE merchant_id = $1 AND (mandate_id = $2 OR payment_method_id = $2)
                 AND external_reference = $3 AND created_at > now() - interval '24 hours'
             LIMIT 1",
            &[&merchant.as_str(), &target, &reference],
        )
        .await?;
    Ok(row.is_some())
}

#[tracing::instrument(name = "scheduler.trigger_accept", skip_all)]
pub async fn accept(tx: &Transaction<'_>, ctx: &Ctx, msg: &Incoming) -> Result<Handled, HandlerError> {
    let opened = match commands::open(tx, msg, None).await? {
        Opening::Proceed(o) => o,
        Opening::Answered(answered) => return Ok(answered),
    };
    let Some(key) = opened.key.clone() else {
        let e =
            ApiError::param(ErrorCode::IdempotencyKeyMissing, header::IDEMPOTENCY_KEY, "schedule.trigger needs an idempotency-key header");
        return commands::close(tx, msg, &opened, Answer::Refused(e)).await;
    };
    let charges = match parse_trigger(&opened.body) {
        Ok(c) => c,
        Err(e) => return commands::close(tx, msg, &opened, Answer::Refused(e)).await,
    };
    let merchant = &opened.merchant;
    let now = ctx.clock.now();
    let id = TriggerId::generate();
    tx.execute(
        "INSERT INTO schedule_triggers (id, merchant_id, idempotency_key, reply_to, correlation_id, items, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&id.as_str(), &merchant.as_str(), &key.as_str(), &msg.reply_to, &msg.correlation_id, &(charges.len() as i32), &now],
    )
    .await?;
    let mut in_batch = HashSet::new();
    let mut queued = 0;
    for (idx, charge) in charges.into_iter().enumerate() {
        let checked = match charge {
            Err(e) => Err(e),
            Ok(req) => {
                let (t, reference) = (target(&req).unwrap_or_default(), req.external_reference.clone().unwrap_or_default());
                if !in_batch.insert((t.clone(), reference.clone())) || seen_before(tx, merchant, &t, &reference).await? {
                    Err(duplicate(&reference))
                } else {
                    Ok((req, t, reference))
                }
            }
        };
        let (status, t, reference, request, error) = match checked {
            Ok((req, t, reference)) => {
                queued += 1;
                ("queued", Some(t), Some(reference), Some(session_body(&req)), None)
            }
            Err(e) => ("refused", None, None, None, Some(json!(e))),
        };
        tx.execute(
            "INSERT INTO schedule_trigger_items (trigger_id, idx, merchant_id, target, external_reference, request, status, error, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&id.as_str(), &(idx as i32), &merchant.as_str(), &t, &reference, &request, &status, &error, &now],
        )
        .await?;
    }
    crate::metrics::TRIGGER_ITEMS.with_label_values(&["queued"]).inc_by(queued);
    tracing::info!(trigger = %id, merchant = %merchant, queued, "trigger accepted");
    if queued == 0 {
        // Nothing to wait for: answer now, and the batch has ended too.
        let mut out = finish_reply(tx, &id, merchant, Some(&key), msg.reply_to.as_deref(), msg.correlation_id.as_deref(), now).await?;
        out.extend(maybe_completed(tx, id.as_str(), now).await?);
        return Ok(Handled { outbox: out, dead_letter: None });
    }
    // Replayed before every charge has its session, the key answers that the batch is processing.
    idempotency::complete(tx, merchant, &key, &json!({"object": "schedule_trigger", "id": id, "status": "processing"})).await?;
    ctx.wake.notify_one();
    Ok(Handled::default())
}

/// The create body a charge becomes.
fn session_body(req: &CreateSession) -> Value {
    let mut body = json!({"type": "next_in_series", "amount": req.amount.minor(), "currency": req.currency.code(),
                          "external_reference": req.external_reference, "metadata": req.metadata});
    match req.charge_target.as_ref() {
        Some(ChargeTarget::Mandate(m)) => body["mandate_id"] = json!(m),
        Some(ChargeTarget::PaymentMethod { customer_id, payment_method_id }) => {
            body["customer_id"] = json!(customer_id);
            body["payment_method_id"] = json!(payment_method_id);
        }
        None => {}
    }
    body
}

/// Sends up to `limit` queued charges as commands, merchants taking turns:
/// each merchant's oldest first, and among merchants the one served longest
/// ago first. One merchant's 10,000-charge trigger does not hold every other
/// merchant's behind it, however small each round is.
pub async fn send_queued(pool: &Pool, outbox: &Outbox, ctx: &Ctx, limit: i64) -> Result<usize, HandlerError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "WITH turns AS (
                 SELECT trigger_id, idx, merchant_id,
                        row_number() OVER (PARTITION BY merchant_id ORDER BY created_at, trigger_id, idx) AS turn
                 FROM schedule_trigger_items WHERE status = 'queued'
             ), served AS (
                 SELECT m.merchant_id,
                        (SELECT max(x.sent_at) FROM schedule_trigger_items x WHERE x.merchant_id = m.merchant_id AND x.sent_at IS NOT NULL) AS last
                 FROM (SELECT DISTINCT merchant_id FROM turns) m
             )
             SELECT i.trigger_id, i.idx, i.merchant_id, i.request
             FROM schedule_trigger_items i JOIN turns t USING (trigger_id, idx) JOIN served s ON s.merchant_id = i.merchant_id
             WHERE i.status = 'queued' AND t.turn <= $1
             ORDER BY t.turn, s.last NULLS FIRST, i.created_at, i.trigger_id, i.idx LIMIT $1 FOR UPDATE OF i SKIP LOCKED",
            &[&limit],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let (trigger, idx, merchant, body): (&str, i32, &str, Value) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let key = format!("trigger:{trigger}:{idx}");
        let mut cmd = Outbound::json(exchange::COMMANDS, command::SESSION_CREATE, &body)
            .with_message_id(key.clone())
            .with_header(header::MERCHANT_ID, merchant)
            .with_header(header::IDEMPOTENCY_KEY, key);
        cmd.correlation_id = Some(format!("trg:{trigger}:{idx}"));
        cmd.reply_to = Some(ctx.replies_queue.clone());
        out.push(cmd);
        tx.execute(
            "UPDATE schedule_trigger_items SET status = 'sent', sent_at = now() WHERE trigger_id = $1 AND idx = $2",
            &[&trigger, &idx],
        )
        .await?;
    }
    outbox.enqueue(&tx, &out).await?;
    tx.commit().await?;
    if !rows.is_empty() {
        outbox.wake();
        crate::metrics::TRIGGER_ITEMS.with_label_values(&["sent"]).inc_by(rows.len() as u64);
    }
    Ok(rows.len())
}

/// Intake answered one charge of a trigger.
#[tracing::instrument(name = "scheduler.trigger_answered", skip_all, fields(trigger = %trigger, idx = idx))]
pub async fn answered(
    tx: &Transaction<'_>,
    trigger: &str,
    idx: i32,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    // Session, then trigger: the order the completion path takes them too.
    if let Some(session) = body["id"].as_str() {
        lock_session(tx, session).await?;
    }
    lock(tx, trigger).await?;
    let updated = match (body["id"].as_str(), &body["error"]) {
        (Some(session), _) => {
            let end = stored_end(tx, session).await?;
            let (status, outcome) = match &end {
                Some(e) => ("ended", Some(e.outcome.as_str())),
                None => ("created", None),
            };
            tx.execute(
                "UPDATE schedule_trigger_items SET status = $3, payment_session_id = $4, outcome = $5
                 WHERE trigger_id = $1 AND idx = $2 AND status = 'sent'",
                &[&trigger, &idx, &status, &session, &outcome],
            )
            .await?
        }
        (None, error) if error.is_object() => {
            tx.execute(
                "UPDATE schedule_trigger_items SET status = 'refused', error = $3 WHERE trigger_id = $1 AND idx = $2 AND status = 'sent'",
                &[&trigger, &idx, error],
            )
            .await?
        }
        _ => return Err(HandlerError::Permanent(format!("reply for trigger {trigger}/{idx} is neither a session nor an error"))),
    };
    if updated == 0 {
        return Ok(vec![]);
    }
    let mut out = maybe_reply(tx, trigger, now).await?;
    out.extend(maybe_completed(tx, trigger, now).await?);
    Ok(out)
}

/// A session of a trigger has ended.
pub async fn item_ended(
    tx: &Transaction<'_>,
    trigger: &str,
    session: &str,
    end: &Ended,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    lock(tx, trigger).await?;
    let n = tx
        .execute(
            "UPDATE schedule_trigger_items SET status = 'ended', outcome = $2 WHERE payment_session_id = $1 AND status = 'created'",
            &[&session, &end.outcome.as_str()],
        )
        .await?;
    if n == 0 {
        return Ok(vec![]);
    }
    maybe_completed(tx, trigger, now).await
}

/// Takes the trigger's row lock before touching its items: the counts that
/// decide "all answered" and "all ended" are then read after every earlier
/// change to the batch has committed, so the last answer always sees itself last.
async fn lock(tx: &Transaction<'_>, trigger: &str) -> Result<(), HandlerError> {
    tx.execute("SELECT 1 FROM schedule_triggers WHERE id = $1 FOR UPDATE", &[&trigger]).await?;
    Ok(())
}

/// Once no charge of the trigger waits for intake: the reply, to whoever sent it.
async fn maybe_reply(tx: &Transaction<'_>, trigger: &str, now: DateTime<Utc>) -> Result<Vec<Outbound>, HandlerError> {
    let t = tx
        .query_one(
            "SELECT merchant_id, idempotency_key, reply_to, correlation_id, replied_at IS NOT NULL,
                    (SELECT count(*) FROM schedule_trigger_items WHERE trigger_id = $1 AND status IN ('queued', 'sent'))
             FROM schedule_triggers WHERE id = $1 FOR UPDATE",
            &[&trigger],
        )
        .await?;
    if t.get::<_, bool>(4) || t.get::<_, i64>(5) > 0 {
        return Ok(vec![]);
    }
    let merchant = MerchantId::parse(t.get(0)).map_err(|_| HandlerError::Permanent("corrupt trigger merchant".into()))?;
    let key = t
        .get::<_, Option<&str>>(1)
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(|_| HandlerError::Permanent("corrupt trigger key".into()))?;
    let id = TriggerId::parse(trigger).map_err(|_| HandlerError::Permanent("corrupt trigger id".into()))?;
    finish_reply(tx, &id, &merchant, key.as_ref(), t.get(2), t.get(3), now).await
}

async fn finish_reply(
    tx: &Transaction<'_>,
    id: &TriggerId,
    merchant: &MerchantId,
    key: Option<&IdempotencyKey>,
    reply_to: Option<&str>,
    correlation_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    let items: Vec<Value> = tx
        .query("SELECT idx, payment_session_id, error FROM schedule_trigger_items WHERE trigger_id = $1 ORDER BY idx", &[&id.as_str()])
        .await?
        .iter()
        .map(|r| match r.get::<_, Option<&str>>(1) {
            Some(session) => json!({"index": r.get::<_, i32>(0), "payment_session_id": session}),
            None => json!({"index": r.get::<_, i32>(0), "error": r.get::<_, Option<Value>>(2)}),
        })
        .collect();
    let reply = json!({"object": "schedule_trigger", "id": id, "status": "answered", "items": items});
    tx.execute("UPDATE schedule_triggers SET replied_at = $2 WHERE id = $1", &[&id.as_str(), &now]).await?;
    if let Some(k) = key {
        idempotency::complete(tx, merchant, k, &reply).await?;
    }
    tracing::info!(trigger = %id, "every trigger charge answered");
    let Some(to) = reply_to else { return Ok(vec![]) };
    let mut out = Outbound::json("", to, &reply);
    out.kind = ps_runtime::message::OutboundKind::Reply;
    out.correlation_id = correlation_id.map(str::to_owned);
    out.message_id = Some(format!("{id}:reply"));
    Ok(vec![out])
}

/// Once every charge has ended (refused, or its session completed): `schedule_trigger.completed`.
async fn maybe_completed(tx: &Transaction<'_>, trigger: &str, now: DateTime<Utc>) -> Result<Vec<Outbound>, HandlerError> {
    let t = tx
        .query_one(
            "SELECT merchant_id, items, completed_at IS NOT NULL,
                    (SELECT count(*) FROM schedule_trigger_items WHERE trigger_id = $1 AND status NOT IN ('refused', 'ended'))
             FROM schedule_triggers WHERE id = $1 FOR UPDATE",
            &[&trigger],
        )
        .await?;
    if t.get::<_, bool>(2) || t.get::<_, i64>(3) > 0 {
        return Ok(vec![]);
    }
    let counts: serde_json::Map<String, Value> = tx
        .query(
            "SELECT CASE WHEN status = 'refused' THEN 'refused' ELSE coalesce(outcome, 'unknown') END, count(*)
             FROM schedule_trigger_items WHERE trigger_id = $1 GROUP BY 1",
            &[&trigger],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), json!(r.get::<_, i64>(1))))
        .collect();
    tx.execute("UPDATE schedule_triggers SET completed_at = $2 WHERE id = $1", &[&trigger, &now]).await?;
    let merchant = MerchantId::parse(t.get(0)).map_err(|_| HandlerError::Permanent("corrupt trigger merchant".into()))?;
    let summary = json!({"object": "schedule_trigger", "id": trigger, "items": t.get::<_, i32>(1), "outcomes": counts});
    tracing::info!(trigger, "every trigger charge has ended");
    Ok(vec![event(EventType::ScheduleTriggerCompleted, &merchant, now, &summary)?])
}
