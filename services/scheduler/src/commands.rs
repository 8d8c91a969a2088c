//! `schedule.retrieve` / `.list` (answered by reply only) and `schedule.pause` /
//! `.resume` / `.cancel` (idempotent writes, each announced by its event).

use crate::schedules::{self, Row};
use crate::Ctx;
use deadpool_postgres::Transaction;
use ps_contract::events::EventType;
use ps_contract::ids::{MandateId, MerchantId, ScheduleId};
use ps_contract::routing::command;
use ps_contract::schedule::ScheduleStatus;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{Handled, HandlerError, Incoming};
use ps_store::commands::{self, Answer, Opening};
use serde_json::{json, Value};

#[tracing::instrument(name = "scheduler.command", skip_all, fields(command = %msg.routing_key))]
pub async fn handle(tx: &Transaction<'_>, ctx: &Ctx, msg: &Incoming) -> Result<Handled, HandlerError> {
    let opened = match commands::open(tx, msg, None).await? {
        Opening::Proceed(o) => o,
        Opening::Answered(answered) => return Ok(answered),
    };
    let (m, body) = (&opened.merchant, &opened.body);
    let answer = match msg.routing_key.as_str() {
        command::SCHEDULE_RETRIEVE => retrieve(tx, m, body).await?,
        command::SCHEDULE_LIST => list(tx, m, body).await?,
        command::SCHEDULE_PAUSE => change(tx, ctx, m, body, Change::Pause).await?,
        command::SCHEDULE_RESUME => change(tx, ctx, m, body, Change::Resume).await?,
        command::SCHEDULE_CANCEL => change(tx, ctx, m, body, Change::Cancel).await?,
        other => Answer::Refused(ApiError::new(ErrorCode::UnknownCommand, format!("the scheduler does not handle {other:?}"))),
    };
    commands::close(tx, msg, &opened, answer).await
}

fn not_found(id: &str) -> ApiError {
    ApiError::param(ErrorCode::ScheduleNotFound, "schedule_id", format!("no such schedule: {id}"))
}

/// `{schedule_id}`, and nothing else.
fn schedule_id(body: &Value) -> Result<ScheduleId, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::new(ErrorCode::BodyNotObject, "the body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "schedule_id") {
        return Err(ApiError::param(ErrorCode::ParameterUnknown, k.clone(), format!("unknown field {k}")));
    }
    match obj.get("schedule_id") {
        None | Some(Value::Null) => Err(ApiError::param(ErrorCode::ParameterMissing, "schedule_id", "schedule_id is required")),
        Some(Value::String(s)) => ScheduleId::parse(s).map_err(|e| e.with_param("schedule_id")),
        Some(_) => Err(ApiError::param(ErrorCode::ParameterInvalidType, "schedule_id", "schedule_id must be a string")),
    }
}

fn object(s: &Row) -> Result<Value, HandlerError> {
    serde_json::to_value(s.object()).map_err(|e| HandlerError::Permanent(format!("schedule does not serialise: {e}")))
}

async fn retrieve(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let id = match schedule_id(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    match schedules::get(tx, id.as_str(), merchant).await? {
        Some(s) => Ok(Answer::Done(object(&s)?, vec![])),
        None => Ok(Answer::Refused(not_found(id.as_str()))),
    }
}

async fn list(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let Some(obj) = body.as_object() else {
        return Ok(Answer::Refused(ApiError::new(ErrorCode::BodyNotObject, "the body must be a JSON object")));
    };
    if let Some(k) = obj.keys().find(|k| !["mandate_id", "status", "limit", "starting_after"].contains(&k.as_str())) {
        return Ok(Answer::Refused(ApiError::param(ErrorCode::ParameterUnknown, k.clone(), format!("unknown field {k}"))));
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    if let Some(m) = text("mandate_id") {
        if let Err(e) = MandateId::parse(m) {
            return Ok(Answer::Refused(e.with_param("mandate_id")));
        }
    }
    if let Some(s) = text("status") {
        if ScheduleStatus::parse(s).is_none() {
            return Ok(Answer::Refused(ApiError::param(
                ErrorCode::ParameterInvalidValue,
                "status",
                "status must be active, paused, completed, cancelled or stopped",
            )));
        }
    }
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => 20,
        Some(v) => match v.as_i64().filter(|n| (1..=100).contains(n)) {
            Some(n) => n,
            None => {
                return Ok(Answer::Refused(ApiError::param(
                    ErrorCode::ParameterInvalidValue,
                    "limit",
                    "limit must be an integer from 1 to 100",
                )))
            }
        },
    };
    let rows = schedules::list(tx, merchant, text("mandate_id"), text("status"), text("starting_after"), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    let data = rows.iter().take(limit as usize).map(object).collect::<Result<Vec<_>, _>>()?;
    Ok(Answer::Done(json!({"object": "list", "data": data, "has_more": has_more}), vec![]))
}

#[derive(Clone, Copy)]
enum Change {
    Pause,
    Resume,
    Cancel,
}

async fn change(tx: &Transaction<'_>, ctx: &Ctx, merchant: &MerchantId, body: &Value, change: Change) -> Result<Answer, HandlerError> {
    let id = match schedule_id(body) {
        Ok(id) => id,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut s) = schedules::lock(tx, id.as_str(), Some(merchant)).await? else { return Ok(Answer::Refused(not_found(id.as_str()))) };
    let now = ctx.clock.now();
    let (to, kind) = match (change, s.status) {
        (Change::Pause, ScheduleStatus::Active) => (ScheduleStatus::Paused, EventType::SchedulePaused),
        (Change::Resume, ScheduleStatus::Paused) => (ScheduleStatus::Active, EventType::ScheduleResumed),
        (Change::Cancel, ScheduleStatus::Active | ScheduleStatus::Paused) => (ScheduleStatus::Cancelled, EventType::ScheduleCancelled),
        (_, status) => {
            return Ok(Answer::Refused(ApiError::param(
                ErrorCode::ScheduleNotActive,
                "schedule_id",
                format!(
                    "the schedule is {status}: it cannot be {}",
                    match change {
                        Change::Pause => "paused",
                        Change::Resume => "resumed",
                        Change::Cancel => "cancelled",
                    }
                ),
            )))
        }
    };
    if to == ScheduleStatus::Cancelled {
        // A charge already asked for stands; nothing after it is made.
        s.end(ScheduleStatus::Cancelled, None, now);
    } else {
        s.status = to;
        s.updated_at = now;
    }
    schedules::save(tx, &s).await?;
    if to == ScheduleStatus::Active {
        ctx.wake.notify_one();
    }
    tracing::info!(schedule = %s.id, status = %s.status, "schedule changed");
    Ok(Answer::Done(object(&s)?, vec![s.event(kind, now)?]))
}
