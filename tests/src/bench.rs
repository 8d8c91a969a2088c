//! The fleet benchmark (issue 10): the release binaries as separate
//! processes, `next_in_series` charges published as fast as possible and at a
//! fixed rate, and a raw pipeline with the same durable hops run against the
//! same broker and database, so the fleet's figure is a ratio to it.

use crate::faults::{Fleet, Load, Mix, MERCHANT};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use ps_contract::routing::{exchange, header};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

pub fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1000.0;
    Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), p999: at(0.999) }
}

/// The lowest rate over any `window` whole seconds of `timeline`, leaving out
/// the first second (the pipeline is filling) and the last (the run ends inside
/// it); the plain average when the run is shorter than that.
pub fn slowest_window(timeline: &[usize], window: usize) -> f64 {
    let whole = timeline.get(1..timeline.len().saturating_sub(1)).unwrap_or(&[]);
    if whole.len() < window {
        return timeline.iter().sum::<usize>() as f64 / timeline.len().max(1) as f64;
    }
    whole.windows(window).map(|w| w.iter().sum::<usize>()).min().unwrap_or(0) as f64 / window as f64
}

/// What one run of charges measured.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub sessions: usize,
    pub per_second: f64,
    pub reply_ms: Percentiles,
    pub completed_ms: Percentiles,
    /// Sessions completed in each second of the run.
    pub timeline: Vec<usize>,
    /// How long the run took, first command to last completion.
    pub seconds: f64,
    /// The slowest 10-second stretch of the run, in sessions/s: what the
    /// fleet sustained rather than averaged.
    pub sustained_per_second: f64,
    pub commits_per_session: f64,
    pub wal_syncs_per_session: f64,
    /// Statements the database executed per session, where pg_stat_statements
    /// is loaded (shared_preload_libraries); the busiest ones beside it.
    pub statements_per_session: Option<f64>,
    pub top_statements: Vec<(f64, String)>,
    /// Messages the fleet published per session (replies, internal hops,
    /// events; the upstream's own command is one more), and their bodies'
    /// mean size in bytes: what the broker carries (docs/capacity.md).
    pub messages_per_session: f64,
    pub bytes_per_message: f64,
    /// Command → completed of each session, in milliseconds.
    #[serde(skip)]
    pub completed_samples: Vec<f64>,
}

#[derive(Default)]
struct Seen {
    sent: HashMap<String, Instant>,
    replied: HashMap<String, (Instant, String)>,
    completed: HashMap<String, Instant>,
}

/// An upstream: publishes charges, records when each was answered and when its session completed.
pub struct Upstream {
    conn: Connection,
    channel: Channel,
    /// Carries the reply and event consumers; kept open with the upstream.
    _listen: Channel,
    reply_queue: String,
    seen: Arc<Mutex<Seen>>,
    commands: String,
    user: Option<String>,
}

impl Upstream {
    pub async fn connect(fleet: &Fleet) -> Upstream {
        let env = &fleet.env;
        let conn = ps_runtime::broker::connect(&env.amqp_url, "bench-upstream", &Default::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let events_queue = format!("{}bench.completed", env.prefix);
        let listen = conn.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        listen.queue_declare(events_queue.as_str().into(), exclusive, FieldTable::default()).await.unwrap();
        // Server-named: the fleet answers only into RabbitMQ's own reply queues.
        let reply_queue = listen.queue_declare("".into(), exclusive, FieldTable::default()).await.unwrap().name().as_str().to_owned();
        listen
            .queue_bind(
                events_queue.as_str().into(),
                env.names.exchange(exchange::EVENTS).as_str().into(),
                "payment_session.completed".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut replies = listen.basic_consume(reply_queue.as_str().into(), "".into(), no_ack, FieldTable::default()).await.unwrap();
        let mut events = listen.basic_consume(events_queue.as_str().into(), "".into(), no_ack, FieldTable::default()).await.unwrap();
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let now = Instant::now();
                let corr = d.properties.correlation_id().as_ref().map(|c| c.to_string()).unwrap_or_default();
                let id =
                    serde_json::from_slice::<Value>(&d.data).ok().and_then(|v| v["id"].as_str().map(str::to_owned)).unwrap_or_default();
                s.lock().unwrap().replied.insert(corr, (now, id));
            }
        });
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = events.next().await {
                let now = Instant::now();
                if let Some(id) = serde_json::from_slice::<Value>(&d.data).ok().and_then(|v| v["data"]["id"].as_str().map(str::to_owned)) {
                    s.lock().unwrap().completed.entry(id).or_insert(now);
                }
            }
        });
        let commands = env.names.exchange(exchange::COMMANDS);
        let user = ps_runtime::broker::broker_user(&env.amqp_url);
        Upstream { conn, channel, _listen: listen, reply_queue, seen, commands, user }
    }

    async fn charge(&self, mandate: &str, key: &str) -> lapin::PublisherConfirm {
        let mut headers = FieldTable::default();
        headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString(LongString::from(MERCHANT)));
        headers.insert(header::IDEMPOTENCY_KEY.into(), AMQPValue::LongString(LongString::from(key)));
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers)
            .with_message_id(key.into())
            .with_correlation_id(key.into())
            .with_reply_to(self.reply_queue.as_str().into());
        if let Some(u) = &self.user {
            props = props.with_user_id(u.as_str().into());
        }
        let body = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": mandate});
        self.seen.lock().unwrap().sent.insert(key.to_owned(), Instant::now());
        self.channel
            .basic_publish(
                self.commands.as_str().into(),
                "payment_session.create".into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &serde_json::to_vec(&body).unwrap(),
                props,
            )
            .await
            .unwrap()
    }

    /// `n` charges spread over `mandates`, published at `rate` a second (as
    /// fast as possible if `None`); waits until every session has completed.
    pub async fn run(&self, fleet: &Fleet, mandates: &[String], n: usize, rate: Option<f64>, tag: &str) -> Run {
        let statements = statement_counts(fleet, true).await;
        let (commits0, syncs0) = db_counters(fleet).await;
        let since = db_now(fleet).await;
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(1000);
        for i in 0..n {
            if let Some(r) = rate {
                let due = started + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(due.into()).await;
            }
            confirms.push(self.charge(&mandates[i % mandates.len()], &format!("{tag}-{i}")).await);
            if confirms.len() == 1000 {
                for c in confirms.drain(..) {
                    c.await.unwrap();
                }
            }
        }
        for c in confirms {
            c.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let done = {
                let s = self.seen.lock().unwrap();
                s.replied.iter().filter(|(k, (_, id))| k.starts_with(tag) && s.completed.contains_key(id)).count()
            };
            if done >= n {
                break;
            }
            assert!(Instant::now() < deadline, "bench: {done} of {n} sessions completed within 30 minutes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (commits1, syncs1) = db_counters(fleet).await;
        let (messages, bytes) = published_since(fleet, since).await;
        let (statements_per_session, top_statements) = match statements {
            Some(_) => {
                let after = statement_counts(fleet, false).await.unwrap_or_default();
                let total: i64 = after.iter().map(|(c, _)| c).sum();
                let top = after.iter().take(25).map(|(c, q)| (*c as f64 / n as f64, q.clone())).collect();
                (Some(total as f64 / n as f64), top)
            }
            None => (None, vec![]),
        };
        let s = self.seen.lock().unwrap();
        let mut reply = vec![];
        let mut completed = vec![];
        let mut last = started;
        let mut timeline = vec![];
        for (key, sent) in s.sent.iter().filter(|(k, _)| k.starts_with(tag)) {
            let (at, id) = &s.replied[key];
            let done = s.completed[id];
            reply.push(at.duration_since(*sent));
            completed.push(done.duration_since(*sent));
            last = last.max(done);
            let second = done.duration_since(started).as_secs() as usize;
            if timeline.len() <= second {
                timeline.resize(second + 1, 0);
            }
            timeline[second] += 1;
        }
        let secs = last.duration_since(started).as_secs_f64();
        let completed_samples = completed.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let sustained_per_second = slowest_window(&timeline, 10);
        Run {
            seconds: secs,
            sustained_per_second,
            completed_samples,
            sessions: n,
            per_second: n as f64 / secs,
            reply_ms: percentiles(reply),
            completed_ms: percentiles(completed),
            timeline,
            commits_per_session: (commits1 - commits0) as f64 / n as f64,
            wal_syncs_per_session: (syncs1 - syncs0) as f64 / n as f64,
            messages_per_session: messages as f64 / n as f64,
            bytes_per_message: if messages > 0 { bytes as f64 / messages as f64 } else { 0.0 },
            statements_per_session,
            top_statements,
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// Every statement the run's database executed since the last reset, busiest
/// first (`reset`: start counting afresh); `None` without pg_stat_statements.
async fn statement_counts(fleet: &Fleet, reset: bool) -> Option<Vec<(i64, String)>> {
    let c = fleet.env.pool.get().await.unwrap();
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await.ok()?;
    if reset {
        c.batch_execute("SELECT pg_stat_statements_reset()").await.ok()?;
        return Some(vec![]);
    }
    let rows = c
        .query(
            "SELECT calls, query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY calls DESC",
            &[],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|r| (r.get(0), r.get::<_, String>(1).split_whitespace().collect::<Vec<_>>().join(" "))).collect())
}

async fn db_now(fleet: &Fleet) -> chrono::DateTime<chrono::Utc> {
    fleet.env.pool.get().await.unwrap().query_one("SELECT now()", &[]).await.unwrap().get(0)
}

/// Messages the fleet published since `since` (its records of what each
/// consumer and the outbox sent) and their bodies' bytes.
async fn published_since(fleet: &Fleet, since: chrono::DateTime<chrono::Utc>) -> (i64, i64) {
    let c = fleet.env.pool.get().await.unwrap();
    let r = c
        .query_one(
            "SELECT count(*), coalesce(sum(octet_length(decode(body_base64, 'base64'))), 0)::bigint FROM sent_messages WHERE created_at >= $1",
            &[&since],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Commits in the run's database, and WAL syncs of the whole server.
async fn db_counters(fleet: &Fleet) -> (i64, i64) {
    let c = fleet.env.pool.get().await.unwrap();
    let r = c
        .query_one(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), (SELECT wal_sync FROM pg_stat_wal)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Mandates set up as customers give them: `n` first_in_series sessions paid
/// at the checkout's HTTP interface.
pub async fn mandates(fleet: &Fleet, n: usize) -> Vec<String> {
    let mix = Mix { one_time: 0, first_in_series: n, next_in_series: 0, scheduled: 0 };
    let load = Load::prepare(fleet, mix, 1).await;
    load.send_wave(fleet, 0, 1).await;
    let unpaid = load.pay_all(fleet).await;
    assert!(unpaid.is_empty(), "bench: could not set up mandates {unpaid:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = fleet.env.pool.get().await.unwrap();
        let rows = c.query("SELECT id FROM mandates WHERE merchant_id = $1 AND status = 'active'", &[&MERCHANT]).await.unwrap();
        if rows.len() >= n {
            return rows.iter().map(|r| r.get(0)).collect();
        }
        assert!(Instant::now() < deadline, "bench: {} of {n} mandates set up", rows.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// RSS (MiB) and CPU seconds of a process, from /proc.
pub fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss =
        status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (rss / 1024.0, ticks / 100.0)
}

/// The raw baseline: `hops` stages, each consuming its queue and, per message,
/// one transaction (an insert), a confirmed publish to the next, then the ack;
/// no logic. Returns messages per second through all of them.
pub async fn raw_pipeline(fleet: &Fleet, n: usize, hops: usize, prefetch: u16, batch: usize) -> f64 {
    let env = &fleet.env;
    let table = format!("raw_hops_{batch}");
    env.pool.get().await.unwrap().batch_execute(&format!("CREATE TABLE {table} (id TEXT, hop INT, PRIMARY KEY (id, hop))")).await.unwrap();
    let conn = Arc::new(ps_runtime::broker::connect(&env.amqp_url, "bench-raw", &Default::default()).await.unwrap());
    let q = |k: usize| format!("{}raw{batch}.{k}", env.prefix);
    let setup = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    for k in 0..=hops {
        let opts = if k == hops { QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() } } else { opts };
        let args = if k == hops { FieldTable::default() } else { quorum.clone() };
        setup.queue_declare(q(k).as_str().into(), opts, args).await.unwrap();
    }
    for k in 0..hops {
        let (conn, pool, from, to, table) = (conn.clone(), env.pool.clone(), q(k), q(k + 1), table.clone());
        tokio::spawn(async move {
            let ch = conn.create_channel().await.unwrap();
            ch.basic_qos(prefetch, BasicQosOptions::default()).await.unwrap();
            let out = conn.create_channel().await.unwrap();
            out.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            let consumer =
                ch.basic_consume(from.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
            // Up to `batch` waiting messages per transaction, as the fleet's
            // consumers take them (CONSUMER_BATCH); one at a time when batch is 1.
            let insert = format!("INSERT INTO {table} (id, hop) SELECT unnest($1::text[]), $2");
            consumer
                .ready_chunks(batch)
                .for_each_concurrent((prefetch as usize / batch).max(1), |chunk| {
                    let (pool, out, to, insert) = (pool.clone(), out.clone(), to.clone(), insert.clone());
                    async move {
                        let deliveries: Vec<_> = chunk.into_iter().filter_map(Result::ok).collect();
                        let mut c = pool.get().await.unwrap();
                        let tx = c.transaction().await.unwrap();
                        let ids: Vec<String> = deliveries.iter().map(|d| String::from_utf8_lossy(&d.data).into_owned()).collect();
                        tx.execute(insert.as_str(), &[&ids, &(k as i32)]).await.unwrap();
                        tx.commit().await.unwrap();
                        let mut confirms = vec![];
                        for d in &deliveries {
                            let props = BasicProperties::default().with_delivery_mode(2);
                            confirms.push(
                                out.basic_publish("".into(), to.as_str().into(), BasicPublishOptions::default(), &d.data, props)
                                    .await
                                    .unwrap(),
                            );
                        }
                        for c in confirms {
                            c.await.unwrap();
                        }
                        for d in deliveries {
                            d.acker.ack(BasicAckOptions::default()).await.unwrap();
                        }
                    }
                })
                .await;
        });
    }
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut done = setup.basic_consume(q(hops).as_str().into(), "".into(), no_ack, FieldTable::default()).await.unwrap();
    let publish = conn.create_channel().await.unwrap();
    publish.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let started = Instant::now();
    let mut confirms = vec![];
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(2);
        confirms.push(
            publish
                .basic_publish("".into(), q(0).as_str().into(), BasicPublishOptions::default(), format!("m{i}").as_bytes(), props)
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        c.await.unwrap();
    }
    let mut arrived = 0;
    while arrived < n {
        tokio::time::timeout(Duration::from_secs(600), done.next()).await.expect("raw pipeline stalled").unwrap().unwrap();
        arrived += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for k in 0..hops {
        let _ = setup.queue_delete(q(k).as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
    rate
}

/// Sessions completed per second over a run, as an SVG line chart.
pub fn plot_throughput(path: &std::path::Path, title: &str, timeline: &[usize]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = timeline.iter().copied().max().unwrap_or(1).max(1) * 11 / 10 + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0usize..timeline.len().max(1), 0usize..top)?;
    chart.configure_mesh().x_desc("seconds into the run").y_desc("sessions completed / s").draw()?;
    chart.draw_series(LineSeries::new(timeline.iter().enumerate().map(|(x, y)| (x, *y)), &BLUE))?;
    root.present()?;
    Ok(())
}

/// Command → completed latencies as an SVG histogram, in 10 ms buckets.
pub fn plot_latency(path: &std::path::Path, title: &str, samples_ms: &[f64]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let buckets: Vec<u32> = samples_ms.iter().map(|ms| (*ms / 10.0) as u32).collect();
    let widest = buckets.iter().copied().max().unwrap_or(1) + 1;
    let mut counts = vec![0u32; widest as usize];
    for b in &buckets {
        counts[*b as usize] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1) * 11 / 10 + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((0u32..widest).into_segmented(), 0u32..top)?;
    chart
        .configure_mesh()
        .x_desc("command → completed, 10 ms buckets")
        .y_desc("sessions")
        .x_label_formatter(&|v| match v {
            SegmentValue::Exact(b) | SegmentValue::CenterOf(b) => format!("{}", b * 10),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    chart.draw_series(Histogram::vertical(&chart).style(BLUE.filled()).data(buckets.iter().map(|b| (*b, 1))))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::slowest_window;

    #[test]
    fn the_slowest_stretch_is_found_and_the_ragged_ends_left_out() {
        let mut t = vec![1];
        t.extend([100; 12]);
        t[6] = 40;
        t.push(3);
        assert_eq!(slowest_window(&t, 10), 94.0);
        assert_eq!(slowest_window(&[5, 10, 1], 10), 16.0 / 3.0);
    }
}
