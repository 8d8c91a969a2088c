//! `charge-scheduler`: scheduled mandates and `schedule.trigger` batches become
//! `next_in_series` sessions, each cycle charged exactly once however many
//! replicas run and whenever they crash; declines are retried (dunning).

pub mod clock;
mod commands;
mod ended;
mod metrics;
mod outcomes;
mod runs;
mod schedules;
mod triggers;

use chrono::NaiveTime;
use clock::Clock;
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::routing::command;
use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::topology::{self, Names};
use ps_runtime::{Admission, Config, Handled, Handler, HandlerError, Incoming};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "charge-scheduler";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about: "The charge scheduler: charges mandates on their schedule through intake, exactly once per cycle, with dunning retries.",
    vars: &[
        ("SCHEDULER_CHARGE_TIME", "UTC time of day (HH:MM) at which due schedules are charged"),
        ("SCHEDULER_RETRY_PLAN_SECS", "delays before each retry of a retryable decline, comma-separated seconds"),
        ("SCHEDULER_BATCH", "due schedules claimed per round"),
        ("SCHEDULER_POLL_MS", "how often the clock looks for due schedules"),
        ("SCHEDULER_TRIGGER_RATE", "schedule.trigger charges started per second at most"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9105;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub common: Config,
    /// The UTC time of day charges fall due.
    pub charge_time: NaiveTime,
    /// Due schedules claimed per transaction.
    pub batch: i64,
    /// How often the clock is looked at when nothing wakes the scheduler.
    pub poll: Duration,
    /// Trigger charges sent per second, across a replica's batches.
    pub trigger_rate: u32,
    /// Waits before each retry of a charge declined for a retryable reason.
    pub retry_plan: Vec<Duration>,
}

impl SchedulerConfig {
    pub fn from_env(env: &Env) -> Result<SchedulerConfig, ConfigError> {
        let charge_time = env.string("SCHEDULER_CHARGE_TIME", "06:00");
        let charge_time = NaiveTime::parse_from_str(&charge_time, "%H:%M")
            .map_err(|_| ConfigError { var: "SCHEDULER_CHARGE_TIME", problem: format!("{charge_time:?} is not a UTC time as HH:MM") })?;
        let plan = env.string("SCHEDULER_RETRY_PLAN_SECS", "86400,259200,432000");
        let retry_plan = plan
            .split(',')
            .map(|p| p.trim().parse::<u64>().ok().filter(|s| (1..=90 * 86_400).contains(s)).map(Duration::from_secs))
            .collect::<Option<Vec<_>>>()
            .filter(|p| p.len() <= 20)
            .ok_or_else(|| ConfigError {
                var: "SCHEDULER_RETRY_PLAN_SECS",
                problem: format!("{plan:?} is not a list of at most 20 waits in seconds (1 s to 90 days), e.g. 86400,259200,432000"),
            })?;
        Ok(SchedulerConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            charge_time,
            batch: env.ranged("SCHEDULER_BATCH", 500, 1, 10_000)? as i64,
            poll: Duration::from_millis(env.ranged("SCHEDULER_POLL_MS", 1_000, 10, 60_000)?),
            trigger_rate: env.ranged("SCHEDULER_TRIGGER_RATE", 200, 1, 100_000)? as u32,
            retry_plan,
        })
    }
}

/// What every part of the scheduler shares.
pub(crate) struct Ctx {
    pub clock: Arc<dyn Clock>,
    pub charge_time: NaiveTime,
    pub retry_plan: Vec<Duration>,
    /// Where intake answers the commands the scheduler sends.
    pub replies_queue: String,
    /// Woken when there may be work for the clock loop (a trigger arrived, a retry was planned).
    pub wake: Arc<Notify>,
}

struct SchedulerHandler(Arc<Ctx>);

impl Handler for SchedulerHandler {
    /// Events come from lifecycle, which the consumer checked (DESIGN §10);
    /// a command needs its merchant's grant.
    fn admit<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async move {
            match msg.routing_key.as_str() {
                "payment_session.completed" | "mandate.revoked" => Ok(Admission::Apply),
                _ => ps_store::commands::admit(tx, msg).await,
            }
        })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            match msg.routing_key.as_str() {
                "payment_session.completed" => outcomes::completed(tx, &self.0, msg).await,
                "mandate.revoked" => outcomes::mandate_revoked(tx, &self.0, msg).await,
                command::SCHEDULE_TRIGGER => triggers::accept(tx, &self.0, msg).await,
                _ => commands::handle(tx, &self.0, msg).await,
            }
        })
    }
}

struct RepliesHandler(Arc<Ctx>);

impl Handler for RepliesHandler {
    /// Intake's replies: the consumer took them only from intake's broker user
    /// (DESIGN §10), and each is checked against the run it answers.
    fn admit<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async { Ok(Admission::Apply) })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move { outcomes::reply(tx, &self.0, msg).await })
    }
}

pub struct RunningScheduler {
    pub service: Running,
    /// Wake the clock loop (after a test moves its clock).
    pub wake: Arc<Notify>,
}

pub async fn start(config: SchedulerConfig, clock: Arc<dyn Clock>, stop: CancellationToken) -> Result<RunningScheduler, StartError> {
    let names = Names::new(config.common.name_prefix.clone());
    let wake = Arc::new(Notify::new());
    let ctx = Arc::new(Ctx {
        clock,
        charge_time: config.charge_time,
        retry_plan: config.retry_plan.clone(),
        replies_queue: names.queue(&topology::SCHEDULER_REPLIES),
        wake: wake.clone(),
    });
    let consumes = vec![
        Consumes { queue: topology::SCHEDULER, handler: Arc::new(SchedulerHandler(ctx.clone())), after_commit: Some(wake.clone()) },
        Consumes { queue: topology::SCHEDULER_REPLIES, handler: Arc::new(RepliesHandler(ctx.clone())), after_commit: Some(wake.clone()) },
    ];
    let running = service::start(SERVICE, config.common, consumes, stop.clone()).await?;
    let runner = runs::Runner {
        pool: running.pool.clone(),
        outbox: running.outbox.clone(),
        ctx,
        batch: config.batch,
        poll: config.poll,
        trigger_rate: config.trigger_rate,
    };
    let looping = tokio::spawn(runner.run(stop));
    Ok(RunningScheduler { service: running.with_task(looping), wake })
}
