//! `psctl`: what an operator does by hand — migrate, declare the topology, send
//! a command and read its reply, look into a dead-letter queue.

use clap::{Parser, Subcommand};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use ps_contract::routing::{exchange, header};
use ps_runtime::message::header_str;
use ps_runtime::topology::{self, Names};
use ps_runtime::{broker, db, Config, Env};
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "psctl", about = "Payment Sessions operator CLI. Reads AMQP_URL, DATABASE_URL and AMQP_NAME_PREFIX like the services.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum MerchantsCmd {
    /// Let broker user USER send commands for MERCHANT ('*': every merchant).
    Grant { user: String, merchant: String },
    /// Take that back; commands already applied stand.
    Revoke { user: String, merchant: String },
    /// Every grant: user, merchant, since.
    List,
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-seal every secret at rest under the first key of PS_SECRET_KEYS (and
    /// seal any an older version kept in clear). Then keys no longer listed first may be dropped.
    Rewrap,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the database schema up to date.
    Migrate,
    /// Declare every exchange and queue (idempotent).
    Declare,
    /// Publish a command and print the reply.
    Send {
        /// Routing key, e.g. payment_session.create
        routing_key: String,
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// JSON body file; standard input when absent.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Which broker users may act for which merchants (DESIGN §10).
    Merchants {
        #[command(subcommand)]
        action: MerchantsCmd,
    },
    /// Secrets at rest (DESIGN §10): webhook signing secrets, card numbers, replies that carry a secret.
    Secrets {
        #[command(subcommand)]
        action: SecretsCmd,
    },
    /// Charge schedules (newest first) with their next charge and counts; `--id` for one with its runs.
    Schedules {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Print a payment session as the API shows it, with its attempts.
    Session { id: String },
    /// Every delivery of an event to webhook endpoints, with each attempt.
    Deliveries { event_id: String },
    /// Webhook deliveries that exhausted their retries (the dead-letter view).
    WebhookDeadLetters {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a queue's dead letters back where they were first published, once
    /// their cause is fixed. Each gets a new message id (the old one is recorded
    /// as applied); idempotency keys still stop a second effect.
    DlqReplay {
        /// The queue's name without prefix, e.g. payment_sessions.intake
        queue: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show what is in a queue's dead-letter queue, with reasons. Messages stay there.
    Dlq {
        /// The queue's name without prefix, e.g. payment_sessions.intake
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    ps_runtime::tls::install_default_provider();
    let config = match Config::from_env(&Env::from_process(), 0) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("psctl: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psctl: {e}");
            ExitCode::FAILURE
        }
    }
}

mod secrets;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn run(cmd: Cmd, config: &Config) -> Result<()> {
    let names = Names::new(config.name_prefix.clone());
    match cmd {
        Cmd::Migrate => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let applied = db::migrate(&pool).await?;
            eprintln!("psctl: schema up to date ({} applied now)", applied.len());
        }
        Cmd::Declare => {
            let conn = broker::connect(&config.amqp_url, "psctl", &config.trust).await?;
            topology::declare(&conn.create_channel().await?, &names, config.delivery_limit).await?;
            eprintln!("psctl: topology declared");
        }
        Cmd::Send { routing_key, merchant, idempotency_key, file, timeout_secs } => {
            let mut body = Vec::new();
            match file {
                Some(path) => body = std::fs::read(path)?,
                None => {
                    std::io::stdin().read_to_end(&mut body)?;
                }
            }
            let conn = broker::connect(&config.amqp_url, "psctl", &config.trust).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let reply_q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            let mut replies = ch
                .basic_consume(
                    reply_q.name().clone(),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            let mut headers = FieldTable::default();
            headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString(LongString::from(merchant.as_str())));
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            headers.insert(header::IDEMPOTENCY_KEY.into(), AMQPValue::LongString(LongString::from(key.as_str())));
            let corr = uuid::Uuid::new_v4().to_string();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(uuid::Uuid::now_v7().to_string().as_str().into())
                .with_correlation_id(corr.as_str().into())
                .with_reply_to(reply_q.name().clone())
                .with_headers(headers);
            // The fleet trusts a merchant-id only from a user granted it; RabbitMQ vouches for user_id.
            let props = match broker::broker_user(&config.amqp_url) {
                Some(user) => props.with_user_id(user.as_str().into()),
                None => props,
            };
            let ex = names.exchange(exchange::COMMANDS);
            let confirm = ch
                .basic_publish(
                    ShortString::from(ex.as_str()),
                    ShortString::from(routing_key.as_str()),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    props,
                )
                .await?
                .await?;
            if !matches!(confirm, Confirmation::Ack(None)) {
                return Err(format!("the broker did not accept the command ({confirm:?}); is the topology declared?").into());
            }
            let reply = tokio::time::timeout(Duration::from_secs(timeout_secs), replies.next())
                .await
                .map_err(|_| format!("no reply within {timeout_secs}s; is the owning service running?"))?
                .ok_or("reply stream closed")??;
            if header_str(reply.properties.headers().as_ref(), header::IDEMPOTENT_REPLAYED).as_deref() == Some("true") {
                eprintln!("psctl: idempotent replay");
            }
            println!("{}", String::from_utf8_lossy(&reply.data));
        }
        Cmd::Merchants { action } => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let c = pool.get().await?;
            match action {
                MerchantsCmd::Grant { user, merchant } => {
                    if merchant != ps_store::grants::EVERY_MERCHANT {
                        ps_contract::ids::MerchantId::parse(&merchant).map_err(|e| e.message)?;
                    }
                    let new = ps_store::grants::grant(&c, &user, &merchant).await?;
                    eprintln!("psctl: {user} may act for {merchant}{}", if new { "" } else { " (already granted)" });
                }
                MerchantsCmd::Revoke { user, merchant } => {
                    if !ps_store::grants::revoke(&c, &user, &merchant).await? {
                        return Err(format!("{user} had no grant for {merchant}").into());
                    }
                    eprintln!("psctl: {user} may no longer act for {merchant}");
                }
                MerchantsCmd::List => {
                    println!("broker_user\tmerchant_id\tgranted_at");
                    for (user, merchant, at) in ps_store::grants::list(&c).await? {
                        println!("{user}\t{merchant}\t{}", at.to_rfc3339());
                    }
                }
            }
        }
        Cmd::Secrets { action: SecretsCmd::Rewrap } => {
            let keys = config.require_secret_keys()?;
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let mut c = pool.get().await?;
            for (what, n) in secrets::rewrap(&mut c, &keys).await? {
                println!("{what}\t{n} re-sealed");
            }
            eprintln!("psctl: every secret at rest is sealed under key {}", keys.active_id());
        }
        Cmd::Schedules { merchant, id, limit } => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT id, merchant_id, mandate_id, status, amount, currency, coalesce(next_charge_at::text, '-'), occurrences,
                            amount_charged, retries, retries_total, coalesce(stop_reason, '')
                     FROM schedules WHERE ($1::text IS NULL OR merchant_id = $1) AND ($2::text IS NULL OR id = $2)
                     ORDER BY id DESC LIMIT $3",
                    &[&merchant, &id, &limit],
                )
                .await?;
            println!("id\tmerchant\tmandate\tstatus\tamount\tnext_charge_at\toccurrences\tcharged\tretries\tretries_total\tstop_reason");
            for r in &rows {
                println!(
                    "{}\t{}\t{}\t{}\t{} {}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.get::<_, &str>(0),
                    r.get::<_, &str>(1),
                    r.get::<_, &str>(2),
                    r.get::<_, &str>(3),
                    r.get::<_, i64>(4),
                    r.get::<_, &str>(5),
                    r.get::<_, &str>(6),
                    r.get::<_, i32>(7),
                    r.get::<_, i64>(8),
                    r.get::<_, i32>(9),
                    r.get::<_, i32>(10),
                    r.get::<_, &str>(11)
                );
            }
            if let (Some(id), false) = (&id, rows.is_empty()) {
                println!("\ncycle\tretry\tpayment_session_id\toutcome\tcode");
                for r in c
                    .query(
                        "SELECT cycle, retry, coalesce(payment_session_id, '-'), coalesce(outcome, 'in flight'), coalesce(error_code, '')
                         FROM schedule_runs WHERE schedule_id = $1 ORDER BY cycle, retry",
                        &[id],
                    )
                    .await?
                {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.get::<_, i32>(0),
                        r.get::<_, i32>(1),
                        r.get::<_, &str>(2),
                        r.get::<_, &str>(3),
                        r.get::<_, &str>(4)
                    );
                }
            }
        }
        Cmd::Session { id } => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let c = pool.get().await?;
            let s = ps_store::sessions::get(&c, &id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no session {id}"))?;
            let attempts = c
                .query(
                    "SELECT coalesce(json_agg(json_build_object('id', id, 'status', status, 'source', source, 'error_code', error_code,
                         'decline_code', decline_code, 'settlement', settlement, 'created_at', created_at) ORDER BY created_at), '[]')
                     FROM payment_attempts WHERE session_id = $1",
                    &[&id],
                )
                .await?;
            let mut out = serde_json::to_value(&s.session)?;
            out["merchant_id"] = s.merchant_id.as_str().into();
            out["attempts"] = attempts[0].get::<_, serde_json::Value>(0);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Deliveries { event_id } => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at::text,
                            coalesce((SELECT json_agg(json_build_object('at', a.attempted_at, 'status', a.status_code, 'ms', a.latency_ms, 'error', a.error) ORDER BY a.id)
                                      FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]')
                     FROM webhook_deliveries d WHERE d.event_id = $1 ORDER BY d.id",
                    &[&event_id],
                )
                .await?;
            if rows.is_empty() {
                return Err(format!("no deliveries of {event_id}").into());
            }
            for r in rows {
                println!(
                    "{}\t{}\t{}\tattempts={}\tnext={}\t{}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, i32>(3),
                    r.get::<_, String>(4),
                    r.get::<_, serde_json::Value>(5)
                );
            }
        }
        Cmd::WebhookDeadLetters { merchant, limit } => {
            let pool = db::pool(&config.database_url, 1, &config.trust)?;
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT delivery_id, merchant_id, event_id, event_type, endpoint_id, url, attempts, last_status, last_error, finished_at::text
                     FROM webhook_dead_letters WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY finished_at DESC LIMIT $2",
                    &[&merchant, &limit],
                )
                .await?;
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\tattempts={}\tlast_status={}\t{}\t{}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, String>(5),
                    r.get::<_, i32>(6),
                    r.get::<_, Option<i32>>(7).map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    r.get::<_, Option<String>>(8).unwrap_or_default(),
                    r.get::<_, Option<String>>(9).unwrap_or_default(),
                );
            }
            eprintln!("psctl: redeliver one with: psctl send webhook_event.redeliver --merchant M  <<< '{{\"event_id\": \"evt_…\"}}'");
        }
        Cmd::DlqReplay { queue, limit } => {
            let spec = topology::QUEUES.iter().find(|q| q.name == queue).ok_or_else(|| format!("unknown queue {queue}"))?;
            let conn = broker::connect(&config.amqp_url, "psctl", &config.trust).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let dlq = names.dead_letter_queue(spec);
            let mut replayed = 0;
            while replayed < limit {
                let Some(m) = ch.basic_get(ShortString::from(dlq.as_str()), BasicGetOptions::default()).await? else { break };
                let d = &m.delivery;
                let Some((exchange, routing_key)) = origin(d.properties.headers().as_ref()) else {
                    d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                    return Err("a dead letter without its origin; left in place".into());
                };
                let mut headers = d.properties.headers().clone().unwrap_or_default();
                let old_id = d.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
                headers.insert("x-replayed-from".into(), AMQPValue::LongString(LongString::from(old_id.as_str())));
                let mut props = d
                    .properties
                    .clone()
                    .with_headers(headers)
                    .with_message_id(format!("{old_id}:replay:{}", uuid::Uuid::now_v7()).as_str().into());
                // Sent again as its first publisher, so the merchant check applies as it did. RabbitMQ
                // allows that only to the same user or one tagged `impersonator` (docs/security.md).
                if let Some(user) = header_str(d.properties.headers().as_ref(), header::ORIGINAL_USER_ID) {
                    props = props.with_user_id(user.as_str().into());
                }
                let confirm = ch
                    .basic_publish(
                        ShortString::from(exchange.as_str()),
                        ShortString::from(routing_key.as_str()),
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        &d.data,
                        props,
                    )
                    .await?
                    .await?;
                if !matches!(confirm, Confirmation::Ack(None)) {
                    d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                    return Err(format!("could not republish to {exchange}/{routing_key}; left in place").into());
                }
                d.acker.ack(Default::default()).await?;
                replayed += 1;
            }
            eprintln!("psctl: replayed {replayed} message(s) from {dlq}");
        }
        Cmd::Dlq { queue, limit } => {
            let spec = topology::QUEUES.iter().find(|q| q.name == queue).ok_or_else(|| {
                format!("unknown queue {queue}; one of: {}", topology::QUEUES.iter().map(|q| q.name).collect::<Vec<_>>().join(", "))
            })?;
            let conn = broker::connect(&config.amqp_url, "psctl", &config.trust).await?;
            let ch = conn.create_channel().await?;
            let dlq = names.dead_letter_queue(spec);
            let mut held = Vec::new();
            while held.len() < limit {
                let Some(m) = ch.basic_get(ShortString::from(dlq.as_str()), BasicGetOptions::default()).await? else { break };
                let h = m.delivery.properties.headers().clone();
                let get = |n| header_str(h.as_ref(), n).unwrap_or_else(|| "-".into());
                println!(
                    "{}\tcode={}\treason={}\trouting_key={}\n\t{}",
                    m.delivery.properties.message_id().as_ref().map(|s| s.as_str()).unwrap_or("-"),
                    get(header::DEAD_LETTER_CODE),
                    get(header::DEAD_LETTER_REASON),
                    get(header::ORIGINAL_ROUTING_KEY),
                    String::from_utf8_lossy(&m.delivery.data).chars().take(500).collect::<String>()
                );
                held.push(m);
            }
            // Returned on close: looking must not consume.
            for m in held {
                m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
            }
        }
    }
    Ok(())
}

/// Where a dead letter was first published: our own dead-lettering records it in
/// headers; RabbitMQ's (delivery limit) in `x-death`.
fn origin(headers: Option<&lapin::types::FieldTable>) -> Option<(String, String)> {
    if let (Some(e), Some(k)) = (header_str(headers, header::ORIGINAL_EXCHANGE), header_str(headers, header::ORIGINAL_ROUTING_KEY)) {
        return Some((e, k));
    }
    let death = headers?.inner().get("x-death")?;
    let AMQPValue::FieldArray(deaths) = death else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().last()? else { return None };
    let exchange = header_str(Some(first), "exchange")?;
    let AMQPValue::FieldArray(keys) = first.inner().get("routing-keys")? else { return None };
    let key = match keys.as_slice().first()? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    };
    Some((exchange, key))
}
