//! What becomes of the charges the scheduler asked for: intake's replies (on
//! the scheduler's own durable reply queue) and `payment_session.completed`.
//! A reply and a completion may come in either order: both take an advisory
//! lock on the session, and the later of the two finds what the earlier left.

use crate::ended::{lock_session, stored_end, Ended};
use crate::schedules::{self, Row};
use crate::{triggers, Ctx};
use chrono::{DateTime, DurationRound, NaiveDate, NaiveTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::create::SubscriptionOptions;
use ps_contract::events::EventType;
use ps_contract::ids::{MerchantId, ScheduleId};
use ps_contract::lifecycle::{PaymentOutcome, SessionType};
use ps_contract::mandate::{MandateAmount, MandateType, Recurrence};
use ps_contract::routing::header;
use ps_contract::schedule::{due_date, first_cycle_from, retryable_decline, ScheduleStatus};
use ps_contract::session::PaymentSession;
use ps_runtime::{Handled, HandlerError, Incoming, Outbound};
use serde_json::Value;

fn malformed(why: String) -> Handled {
    tracing::error!(reason = %why, "scheduler cannot use this message");
    Handled::dead_lettered("invalid_message", why)
}

#[tracing::instrument(name = "scheduler.session_completed", skip_all)]
pub async fn completed(tx: &Transaction<'_>, ctx: &Ctx, msg: &Incoming) -> Result<Handled, HandlerError> {
    let event: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => return Ok(malformed(format!("event is not JSON: {e}"))),
    };
    let session: PaymentSession = match serde_json::from_value(event["data"].clone()) {
        Ok(s) => s,
        Err(e) => return Ok(malformed(format!("event data is not a payment_session: {e}"))),
    };
    let Some(merchant) = msg.header(header::MERCHANT_ID).and_then(|m| MerchantId::parse(&m).ok()) else {
        return Ok(malformed("event without a valid merchant-id".into()));
    };
    lock_session(tx, session.id.as_str()).await?;
    let now = ctx.clock.now();
    let out = match session.session_type {
        SessionType::FirstInSeries => create(tx, ctx, &merchant, &session, now).await?,
        SessionType::NextInSeries => {
            let decline = session.last_payment_error.as_ref().and_then(|e| e.decline_code.clone());
            match Ended::of(session.status, session.payment_outcome, decline) {
                Some(end) => ended(tx, ctx, session.id.as_str(), &end, now).await?,
                None => vec![],
            }
        }
        SessionType::OneTime => vec![],
    };
    Ok(Handled { outbox: out, dead_letter: None })
}

/// A next_in_series the scheduler asked for has ended: its schedule or trigger moves on.
pub(crate) async fn ended(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    session: &str,
    end: &Ended,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    match schedules::origin_of_session(tx, session).await? {
        Some(schedules::Origin::Run(schedule, cycle, retry)) => run_ended(tx, ctx, &schedule, cycle, retry, Some(end), None, now).await,
        Some(schedules::Origin::Trigger(trigger)) => triggers::item_ended(tx, &trigger, session, end, now).await,
        None => Ok(vec![]),
    }
}

/// What a schedule is made from: subscription_options, or a scheduled mandate's terms.
struct Plan {
    recurrence: Recurrence,
    amount: Option<i64>,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    max: Option<u32>,
    time: Option<NaiveTime>,
}

/// A first_in_series that sets up a schedule (subscription_options, or a
/// scheduled mandate) has completed: the schedule starts.
#[tracing::instrument(name = "scheduler.create_schedule", skip_all, fields(session = %s.id))]
async fn create(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    merchant: &MerchantId,
    s: &PaymentSession,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    let succeeded = matches!(s.payment_outcome, PaymentOutcome::Paid | PaymentOutcome::PaymentMethodVerified | PaymentOutcome::Reserved);
    let (Some(mandate_id), Some(customer), Some(method), true) = (&s.mandate_id, &s.customer_id, &s.payment_method_id, succeeded) else {
        return Ok(vec![]);
    };
    let stored = tx.query_opt("SELECT subscription_options FROM payment_sessions WHERE id = $1", &[&s.id.as_str()]).await?;
    let subscription: Option<SubscriptionOptions> = stored
        .and_then(|r| r.get::<_, Option<Value>>(0))
        .map(|v| serde_json::from_value(v).map_err(|e| HandlerError::Permanent(format!("stored subscription_options: {e}"))))
        .transpose()?;
    let Some((_, terms)) = schedules::mandate_terms(tx, mandate_id).await? else {
        return Err(HandlerError::Permanent(format!("completed session names unknown mandate {mandate_id}")));
    };
    let plan = match (&subscription, terms.mandate_type, terms.recurrence) {
        (Some(sub), _, _) => Some(Plan {
            recurrence: sub.recurrence,
            amount: sub.amount.map(|a| a.minor()),
            start: sub.start_date,
            end: sub.end_date,
            max: sub.max_occurrences,
            time: sub.scheduled_time,
        }),
        (None, MandateType::Scheduled, Some(r)) => Some(Plan {
            recurrence: r,
            amount: match terms.amount {
                Some(MandateAmount::Exact(a)) => Some(a.minor()),
                _ => None,
            },
            start: terms.validity_period.and_then(|v| v.start_date),
            end: terms.validity_period.and_then(|v| v.end_date),
            max: None,
            time: None,
        }),
        _ => None,
    };
    let Some(plan) = plan else { return Ok(vec![]) };
    let (recurrence, start) = (plan.recurrence, plan.start);
    let amount = plan.amount.unwrap_or(s.amount);
    if amount <= 0 {
        tracing::warn!(session = %s.id, "a schedule needs an amount: the verification set none; no schedule made");
        return Ok(vec![]);
    }
    let max_occurrences = match (plan.max, terms.max_occurrences) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let anchor = start.unwrap_or(now.date_naive());
    // Without a start date the sign-up payment stands for this period; the first scheduled charge is the next one.
    let first = if start.is_some() { first_cycle_from(recurrence, anchor, anchor) } else { 1 };
    let mut row = Row {
        id: ScheduleId::generate(),
        merchant_id: merchant.clone(),
        mandate_id: mandate_id.clone(),
        customer_id: customer.clone(),
        payment_method_id: method.clone(),
        source_session_id: s.id.clone(),
        status: ScheduleStatus::Active,
        amount,
        currency: s.currency,
        recurrence,
        anchor,
        next_cycle: first,
        next_charge_at: None,
        in_flight: false,
        occurrences: 0,
        amount_charged: 0,
        max_occurrences,
        charge_time: plan.time,
        end_date: plan.end,
        retries: 0,
        retries_total: 0,
        stop_reason: None,
        created_at: now,
        updated_at: now,
    };
    row.next_charge_at = Some(row.due_at(ctx, first));
    if plan.end.is_some_and(|end| due_date(recurrence, anchor, first) > end) {
        tracing::info!(session = %s.id, "no charge of the subscription falls in its active period; no schedule made");
        return Ok(vec![]);
    }
    if !schedules::insert(tx, &row).await? {
        return Ok(vec![]);
    }
    tracing::info!(schedule = %row.id, session = %s.id, next = ?row.next_charge_at, "schedule created");
    Ok(vec![row.event(EventType::ScheduleCreated, now)?])
}

/// A run has an answer: a session that ended (`end`), or intake's refusal (`refused`: its code).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "scheduler.run_ended", skip_all, fields(schedule = %schedule, cycle = cycle, retry = retry))]
pub(crate) async fn run_ended(
    tx: &Transaction<'_>,
    ctx: &Ctx,
    schedule: &str,
    cycle: u32,
    retry: u32,
    end: Option<&Ended>,
    refused: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Outbound>, HandlerError> {
    let outcome = match (end, refused) {
        (Some(e), _) if e.paid => "paid",
        (Some(_), _) => "unpaid",
        (None, _) => "refused",
    };
    let code = refused.map(str::to_owned).or_else(|| end.and_then(|e| e.decline_code.clone()));
    if !schedules::finish_run(tx, schedule, cycle, retry, outcome, code.as_deref()).await? {
        return Ok(vec![]);
    }
    crate::metrics::RUNS.with_label_values(&[outcome]).inc();
    let Some(mut s) = schedules::lock(tx, schedule, None).await? else {
        return Err(HandlerError::Permanent(format!("run of unknown schedule {schedule}")));
    };
    if s.status.is_terminal() || (s.next_cycle, s.retries) != (cycle, retry) {
        // Cancelled or stopped while the charge was in flight: its outcome is recorded, nothing follows.
        return Ok(vec![]);
    }
    s.in_flight = false;
    s.updated_at = now;
    let event = match (end, refused) {
        (Some(e), _) if e.paid => advance(tx, ctx, &mut s).await?,
        (Some(e), _) => {
            let code = e.decline_code.as_deref().unwrap_or("declined");
            if retryable_decline(code) && (s.retries as usize) < ctx.retry_plan.len() {
                let wait = ctx.retry_plan[s.retries as usize];
                s.retries += 1;
                s.retries_total += 1;
                // Whole seconds, as the API shows it.
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                s.next_charge_at = Some(at.duration_trunc(chrono::Duration::seconds(1)).unwrap_or(at));
                tracing::info!(schedule = %s.id, cycle, retry = s.retries, decline = code, next = ?s.next_charge_at, "declined; retry planned");
                None
            } else {
                s.end(ScheduleStatus::Stopped, Some(code), now);
                Some(EventType::ScheduleStopped)
            }
        }
        (None, code) => {
            s.end(ScheduleStatus::Stopped, code, now);
            Some(EventType::ScheduleStopped)
        }
    };
    schedules::save(tx, &s).await?;
    if event.is_some() {
        tracing::info!(schedule = %s.id, status = %s.status, reason = s.stop_reason.as_deref().unwrap_or(""), "schedule ended");
    }
    Ok(event.map(|k| s.event(k, now)).transpose()?.into_iter().collect())
}

/// A paid cycle: count it, then the next one, unless a cap or the mandate's end says it was the last.
async fn advance(tx: &Transaction<'_>, ctx: &Ctx, s: &mut Row) -> Result<Option<EventType>, HandlerError> {
    s.occurrences += 1;
    s.amount_charged += s.amount;
    s.retries = 0;
    s.next_cycle += 1;
    let next = s.due_at(ctx, s.next_cycle);
    let terms = schedules::mandate_terms(tx, &s.mandate_id).await?.map(|(_, t)| t);
    let total_reached = terms.as_ref().and_then(|t| t.total_amount).is_some_and(|cap| s.amount_charged + s.amount > cap.minor());
    let past = |end: Option<NaiveDate>| end.is_some_and(|end| next.date_naive() > end);
    let reason = if s.max_occurrences.is_some_and(|m| s.occurrences >= m) {
        Some("max_occurrences")
    } else if total_reached {
        Some("total_amount")
    } else if past(terms.as_ref().and_then(|t| t.validity_period).and_then(|v| v.end_date)) {
        Some("validity_period_end")
    } else if past(s.end_date) {
        Some("active_period_end")
    } else {
        None
    };
    match reason {
        Some(r) => {
            let now = s.updated_at;
            s.end(ScheduleStatus::Completed, Some(r), now);
            Ok(Some(EventType::ScheduleCompleted))
        }
        None => {
            s.next_charge_at = Some(next);
            Ok(None)
        }
    }
}

/// Intake's answer to a command the scheduler sent: the session it made, or why not.
#[tracing::instrument(name = "scheduler.intake_reply", skip_all, fields(correlation_id = msg.correlation_id.as_deref().unwrap_or("")))]
pub async fn reply(tx: &Transaction<'_>, ctx: &Ctx, msg: &Incoming) -> Result<Handled, HandlerError> {
    let Some(corr) = msg.correlation_id.as_deref() else { return Ok(malformed("a reply without correlation_id".into())) };
    let body: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => return Ok(malformed(format!("reply is not JSON: {e}"))),
    };
    let now = ctx.clock.now();
    let parts: Vec<&str> = corr.split(':').collect();
    let out = match parts.as_slice() {
        ["run", schedule, cycle, retry] => {
            let (Ok(cycle), Ok(retry)) = (cycle.parse::<u32>(), retry.parse::<u32>()) else {
                return Ok(malformed(format!("unusable correlation_id {corr:?}")));
            };
            match (body["id"].as_str(), body["error"]["code"].as_str()) {
                (Some(session), _) => {
                    lock_session(tx, session).await?;
                    if !schedules::link_run(tx, schedule, cycle, retry, session).await? {
                        vec![]
                    } else {
                        match stored_end(tx, session).await? {
                            Some(end) => run_ended(tx, ctx, schedule, cycle, retry, Some(&end), None, now).await?,
                            None => vec![],
                        }
                    }
                }
                (None, Some(code)) => run_ended(tx, ctx, schedule, cycle, retry, None, Some(code), now).await?,
                _ => return Ok(malformed(format!("reply to {corr} is neither a session nor an error"))),
            }
        }
        ["trg", trigger, idx] => {
            let Ok(idx) = idx.parse::<i32>() else { return Ok(malformed(format!("unusable correlation_id {corr:?}"))) };
            triggers::answered(tx, trigger, idx, &body, now).await?
        }
        _ => return Ok(malformed(format!("unusable correlation_id {corr:?}"))),
    };
    Ok(Handled { outbox: out, dead_letter: None })
}

/// A revoked mandate stops its schedules at once.
#[tracing::instrument(name = "scheduler.mandate_revoked", skip_all)]
pub async fn mandate_revoked(tx: &Transaction<'_>, ctx: &Ctx, msg: &Incoming) -> Result<Handled, HandlerError> {
    let event: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => return Ok(malformed(format!("event is not JSON: {e}"))),
    };
    let Some(mandate) = event["data"]["id"].as_str() else { return Ok(malformed("mandate.revoked without a mandate id".into())) };
    let now = ctx.clock.now();
    let mut out = vec![];
    for mut s in schedules::of_mandate(tx, mandate).await? {
        s.end(ScheduleStatus::Stopped, Some("mandate_revoked"), now);
        schedules::save(tx, &s).await?;
        tracing::info!(schedule = %s.id, mandate, "mandate revoked: schedule stopped");
        out.push(s.event(EventType::ScheduleStopped, now)?);
    }
    Ok(Handled { outbox: out, dead_letter: None })
}
