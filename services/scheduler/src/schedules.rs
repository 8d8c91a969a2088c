//! The `schedules` and `schedule_runs` tables: the only module that writes them.

use crate::Ctx;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use ps_contract::events::EventType;
use ps_contract::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId, ScheduleId, SessionId};
use ps_contract::mandate::{MandateTerms, Recurrence};
use ps_contract::money::Currency;
use ps_contract::routing::command;
use ps_contract::schedule::{due_date, Schedule, ScheduleStatus};
use ps_runtime::{HandlerError, Outbound};
use ps_store::events::event;
use serde_json::json;

/// A stored schedule.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: ScheduleId,
    pub merchant_id: MerchantId,
    pub mandate_id: MandateId,
    pub customer_id: CustomerId,
    pub payment_method_id: PaymentMethodId,
    pub source_session_id: SessionId,
    pub status: ScheduleStatus,
    pub amount: i64,
    pub currency: Currency,
    pub recurrence: Recurrence,
    pub anchor: NaiveDate,
    pub next_cycle: u32,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub in_flight: bool,
    pub occurrences: u32,
    pub amount_charged: i64,
    pub max_occurrences: Option<u32>,
    /// The subscription's own time of day; else the scheduler's.
    pub charge_time: Option<NaiveTime>,
    /// The subscription's own last day; the mandate's end applies too.
    pub end_date: Option<NaiveDate>,
    pub retries: u32,
    pub retries_total: u32,
    pub stop_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, merchant_id, mandate_id, customer_id, payment_method_id, source_session_id, status, amount, currency,
    recurrence, anchor, next_cycle, next_charge_at, in_flight, occurrences, amount_charged, max_occurrences, retries, retries_total,
    stop_reason, created_at, updated_at, charge_time, end_date";

fn corrupt(what: &str) -> HandlerError {
    HandlerError::Permanent(format!("corrupt stored schedule: {what}"))
}

fn from_row(r: &tokio_postgres::Row) -> Result<Row, HandlerError> {
    let id = |i: usize| -> &str { r.get(i) };
    Ok(Row {
        id: ScheduleId::parse(id(0)).map_err(|_| corrupt("id"))?,
        merchant_id: MerchantId::parse(id(1)).map_err(|_| corrupt("merchant"))?,
        mandate_id: MandateId::parse(id(2)).map_err(|_| corrupt("mandate"))?,
        customer_id: CustomerId::parse(id(3)).map_err(|_| corrupt("customer"))?,
        payment_method_id: PaymentMethodId::parse(id(4)).map_err(|_| corrupt("payment method"))?,
        source_session_id: SessionId::parse(id(5)).map_err(|_| corrupt("session"))?,
        status: ScheduleStatus::parse(r.get(6)).ok_or_else(|| corrupt("status"))?,
        amount: r.get(7),
        currency: Currency::parse(r.get(8)).map_err(|_| corrupt("currency"))?,
        recurrence: serde_json::from_value(r.get(9)).map_err(|_| corrupt("recurrence"))?,
        anchor: r.get(10),
        next_cycle: r.get::<_, i32>(11) as u32,
        next_charge_at: r.get(12),
        in_flight: r.get(13),
        occurrences: r.get::<_, i32>(14) as u32,
        amount_charged: r.get(15),
        max_occurrences: r.get::<_, Option<i32>>(16).map(|n| n as u32),
        retries: r.get::<_, i32>(17) as u32,
        retries_total: r.get::<_, i32>(18) as u32,
        stop_reason: r.get(19),
        created_at: r.get(20),
        updated_at: r.get(21),
        charge_time: r.get(22),
        end_date: r.get(23),
    })
}

impl Row {
    pub fn object(&self) -> Schedule {
        Schedule {
            id: self.id.clone(),
            object: "schedule".into(),
            status: self.status,
            mandate_id: self.mandate_id.clone(),
            customer_id: self.customer_id.clone(),
            payment_method_id: self.payment_method_id.clone(),
            payment_session_id: self.source_session_id.clone(),
            amount: self.amount,
            currency: self.currency,
            recurrence: self.recurrence,
            next_charge_at: if self.status.is_terminal() { None } else { self.next_charge_at },
            occurrences: self.occurrences,
            amount_charged: self.amount_charged,
            max_occurrences: self.max_occurrences,
            retries: self.retries,
            retries_total: self.retries_total,
            stop_reason: self.stop_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// An event about this schedule, as it now is.
    pub fn event(&self, kind: EventType, now: DateTime<Utc>) -> Result<Outbound, serde_json::Error> {
        event(kind, &self.merchant_id, now, &self.object())
    }

    /// When cycle `n` is due, at the configured time of day.
    pub fn due_at(&self, ctx: &Ctx, cycle: u32) -> DateTime<Utc> {
        due_date(self.recurrence, self.anchor, cycle).and_time(self.charge_time.unwrap_or(ctx.charge_time)).and_utc()
    }

    /// Ends it: `completed` (a cap or the mandate's end reached) or `stopped`/`cancelled`.
    pub fn end(&mut self, status: ScheduleStatus, reason: Option<&str>, now: DateTime<Utc>) {
        self.status = status;
        self.stop_reason = reason.map(str::to_owned);
        self.next_charge_at = None;
        self.in_flight = false;
        self.updated_at = now;
    }
}

pub async fn insert(tx: &Transaction<'_>, s: &Row) -> Result<bool, HandlerError> {
    let n = tx
        .execute(
            "INSERT INTO schedules (id, merchant_id, mandate_id, customer_id, payment_method_id, source_session_id, status, amount,
                 currency, recurrence, anchor, next_cycle, next_charge_at, max_occurrences, created_at, updated_at, charge_time, end_date)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17)
             ON CONFLICT (source_session_id) DO NOTHING",
            &[
                &s.id.as_str(),
                &s.merchant_id.as_str(),
                &s.mandate_id.as_str(),
                &s.customer_id.as_str(),
                &s.payment_method_id.as_str(),
                &s.source_session_id.as_str(),
                &s.status.as_str(),
                &s.amount,
                &s.currency.code(),
                &json!(s.recurrence),
                &s.anchor,
                &(s.next_cycle as i32),
                &s.next_charge_at,
                &s.max_occurrences.map(|n| n as i32),
                &s.created_at,
                &s.charge_time,
                &s.end_date,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Locks a schedule; with `merchant`, another merchant's is "not found".
pub async fn lock(tx: &Transaction<'_>, id: &str, merchant: Option<&MerchantId>) -> Result<Option<Row>, HandlerError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2) FOR UPDATE");
    let row = tx.query_opt(sql.as_str(), &[&id, &merchant.map(|m| m.as_str())]).await?;
    row.as_ref().map(from_row).transpose()
}

/// Reads one, without locking it (another merchant's is "not found").
pub async fn get(c: &impl GenericClient, id: &str, merchant: &MerchantId) -> Result<Option<Row>, HandlerError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE id = $1 AND merchant_id = $2");
    c.query_opt(sql.as_str(), &[&id, &merchant.as_str()]).await?.as_ref().map(from_row).transpose()
}

pub async fn of_mandate(tx: &Transaction<'_>, mandate: &str) -> Result<Vec<Row>, HandlerError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE mandate_id = $1 AND status IN ('active', 'paused') FOR UPDATE");
    tx.query(sql.as_str(), &[&mandate]).await?.iter().map(from_row).collect()
}

pub async fn save(tx: &Transaction<'_>, s: &Row) -> Result<(), HandlerError> {
    tx.execute(
        "UPDATE schedules SET status = $2, next_cycle = $3, next_charge_at = $4, in_flight = $5, occurrences = $6, amount_charged = $7,
             retries = $8, retries_total = $9, stop_reason = $10, updated_at = $11 WHERE id = $1",
        &[
            &s.id.as_str(),
            &s.status.as_str(),
            &(s.next_cycle as i32),
            &s.next_charge_at,
            &s.in_flight,
            &(s.occurrences as i32),
            &s.amount_charged,
            &(s.retries as i32),
            &(s.retries_total as i32),
            &s.stop_reason,
            &s.updated_at,
        ],
    )
    .await?;
    Ok(())
}

/// Up to `limit` schedules due by `now`, locked; replicas skip each other's.
pub async fn claim_due(tx: &Transaction<'_>, now: DateTime<Utc>, limit: i64) -> Result<Vec<Row>, HandlerError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE status = 'active' AND NOT in_flight AND next_charge_at <= $1
         ORDER BY next_charge_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    tx.query(sql.as_str(), &[&now, &limit]).await?.iter().map(from_row).collect()
}

/// A merchant's schedules, newest first, after the cursor `starting_after`.
pub async fn list(
    c: &impl GenericClient,
    merchant: &MerchantId,
    mandate: Option<&str>,
    status: Option<&str>,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Row>, HandlerError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE merchant_id = $1 AND ($2::text IS NULL OR mandate_id = $2)
           AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    );
    c.query(sql.as_str(), &[&merchant.as_str(), &mandate, &status, &starting_after, &limit]).await?.iter().map(from_row).collect()
}

/// The mandate's terms and whether it is still active.
pub async fn mandate_terms(tx: &Transaction<'_>, mandate: &MandateId) -> Result<Option<(String, MandateTerms)>, HandlerError> {
    let row = tx.query_opt("SELECT status, terms FROM mandates WHERE id = $1", &[&mandate.as_str()]).await?;
    row.map(|r| Ok((r.get(0), serde_json::from_value(r.get(1)).map_err(|_| corrupt("mandate terms"))?))).transpose()
}

/// The command that asks intake for a schedule's current charge. Its
/// idempotency key derives from (schedule, cycle, retry), so however often it
/// is sent (replicas, restarts, redeliveries) intake makes one session of it.
pub fn run_command(ctx: &Ctx, s: &Row) -> Outbound {
    let key = format!("schedule:{}:{}:{}", s.id, s.next_cycle, s.retries);
    let body = json!({"type": "next_in_series", "amount": s.amount, "currency": s.currency.code(), "mandate_id": s.mandate_id});
    let mut out = Outbound::command(command::SESSION_CREATE, s.merchant_id.as_str(), Some(&key), body.to_string().into_bytes())
        .with_message_id(key.clone());
    out.correlation_id = Some(format!("run:{}:{}:{}", s.id, s.next_cycle, s.retries));
    out.reply_to = Some(ctx.replies_queue.clone());
    out
}

/// Records the charges of these schedules (their current cycle and retry) and
/// marks them in flight: two statements for the whole batch.
pub async fn start_runs(tx: &Transaction<'_>, started: &[&Row], now: DateTime<Utc>) -> Result<(), HandlerError> {
    if started.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = started.iter().map(|s| s.id.as_str()).collect();
    let cycles: Vec<i32> = started.iter().map(|s| s.next_cycle as i32).collect();
    let retries: Vec<i32> = started.iter().map(|s| s.retries as i32).collect();
    tx.execute(
        "INSERT INTO schedule_runs (schedule_id, cycle, retry) SELECT * FROM unnest($1::text[], $2::int[], $3::int[]) ON CONFLICT DO NOTHING",
        &[&ids, &cycles, &retries],
    )
    .await?;
    tx.execute("UPDATE schedules SET in_flight = true, updated_at = $2 WHERE id = ANY($1)", &[&ids, &now]).await?;
    Ok(())
}

/// What asked for a session, if the scheduler did.
pub enum Origin {
    /// A schedule's run: (schedule id, cycle, retry), still waiting for its end.
    Run(String, u32, u32),
    /// An item of a trigger.
    Trigger(String),
}

/// Which run or trigger a session belongs to, in one statement: every
/// completed session of the merchant comes here, most of them neither's.
pub async fn origin_of_session(tx: &Transaction<'_>, session: &str) -> Result<Option<Origin>, HandlerError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT true, schedule_id, cycle, retry FROM schedule_runs WHERE payment_session_id = $1 AND outcome IS NULL
                 UNION ALL
                 SELECT false, trigger_id, 0, 0 FROM schedule_trigger_items WHERE payment_session_id = $1
                 LIMIT 1",
            )
            .await?,
            &[&session],
        )
        .await?;
    Ok(row.map(|r| match r.get::<_, bool>(0) {
        true => Origin::Run(r.get(1), r.get::<_, i32>(2) as u32, r.get::<_, i32>(3) as u32),
        false => Origin::Trigger(r.get(1)),
    }))
}

/// Links a run to the session intake made for it. False if it was linked already.
pub async fn link_run(tx: &Transaction<'_>, schedule: &str, cycle: u32, retry: u32, session: &str) -> Result<bool, HandlerError> {
    let n = tx
        .execute(
            "UPDATE schedule_runs SET payment_session_id = $4 WHERE schedule_id = $1 AND cycle = $2 AND retry = $3
               AND payment_session_id IS NULL AND outcome IS NULL",
            &[&schedule, &(cycle as i32), &(retry as i32), &session],
        )
        .await?;
    Ok(n == 1)
}

/// Records how a run ended. False if it had ended already (a duplicate).
pub async fn finish_run(
    tx: &Transaction<'_>,
    schedule: &str,
    cycle: u32,
    retry: u32,
    outcome: &str,
    code: Option<&str>,
) -> Result<bool, HandlerError> {
    let n = tx
        .execute(
            "UPDATE schedule_runs SET outcome = $4, error_code = $5, finished_at = now()
             WHERE schedule_id = $1 AND cycle = $2 AND retry = $3 AND outcome IS NULL",
            &[&schedule, &(cycle as i32), &(retry as i32), &outcome, &code],
        )
        .await?;
    Ok(n == 1)
}
