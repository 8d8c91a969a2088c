//! The RabbitMQ connection and confirmed publishing.

use crate::message::Outbound;
use crate::tls::Trust;
use crate::topology::Names;
use backon::{ExponentialBuilder, Retryable};
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, DefaultConnectionBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one node may take to accept a connection before the next is tried.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no queue is bound for {exchange}/{routing_key}")]
    Unroutable { exchange: String, routing_key: String },
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

impl PublishError {
    /// The channel or connection is unusable: reconnect rather than retry on it.
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, PublishError::Broker(_) | PublishError::Timeout(_))
    }
}

/// The user an AMQP URL logs in as: what a publisher puts in `user_id`.
pub fn broker_user(url: &str) -> Option<String> {
    let uri: lapin::uri::AMQPUri = nodes(url).next()?.parse().ok()?;
    Some(uri.authority.userinfo.username).filter(|u| !u.is_empty())
}

/// The nodes an `AMQP_URL` names: one URL, or several of one cluster,
/// comma-separated (`amqps://u:p@rabbit-0:5671/%2f,amqps://u:p@rabbit-1:5671/%2f`).
pub fn nodes(url: &str) -> impl Iterator<Item = &str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// Checks a list of nodes: each an AMQP URL, all logging in as one user (the
/// `user_id` every message carries must be its connection's, whichever node).
pub fn check_nodes(url: &str) -> Result<(), String> {
    let mut user = None;
    for (i, node) in nodes(url).enumerate() {
        let uri: lapin::uri::AMQPUri = node.parse().map_err(|e| format!("node {} is not an AMQP URL: {e}", i + 1))?;
        match &user {
            None => user = Some(uri.authority.userinfo.username),
            Some(u) if *u == uri.authority.userinfo.username => {}
            Some(_) => return Err(format!("node {} logs in as another user than node 1; every node must name the same user", i + 1)),
        }
    }
    user.map(|_| ()).ok_or_else(|| "names no node".to_owned())
}

/// Which node the next connection tries first: connections (and the replicas
/// making them) spread over the cluster instead of all landing on the first.
static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// One connection attempt: each node in turn, from the next one along, until
/// one accepts; the last node's error if none does. `amqps://` is verified
/// against the system's roots and `SSL_CERT_FILE`.
pub async fn connect(url: &str, connection_name: &str, trust: &Trust) -> Result<Connection, lapin::Error> {
    let nodes: Vec<&str> = nodes(url).collect();
    if nodes.len() <= 1 {
        return connect_node(url.trim(), connection_name, trust).await;
    }
    let first = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
    let mut last = None;
    for i in 0..nodes.len() {
        let at = (first + i) % nodes.len();
        // A node that does not answer in time counts as one that refused.
        let attempt = tokio::time::timeout(NODE_CONNECT_TIMEOUT, connect_node(nodes[at], connection_name, trust))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the broker node did not answer in time").into()));
        match attempt {
            Ok(conn) => {
                tracing::info!(node = at + 1, "connected to the broker");
                return Ok(conn);
            }
            Err(e) => {
                tracing::warn!(node = at + 1, error = %e, "broker node unreachable; trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.expect("several nodes were tried"))
}

async fn connect_node(url: &str, connection_name: &str, trust: &Trust) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let tls = OwnedTLSConfig { identity: None, cert_chain: trust.extra_pem().map(str::to_owned) };
    DefaultConnectionBuilder::new()?.with_uri_str(url.to_owned()).with_properties(props).with_tls_config(tls).connect().await
}

/// Connects, retrying with capped exponential backoff until it works or `cancel` fires.
pub async fn connect_with_backoff(url: &str, connection_name: &str, trust: &Trust, cancel: &CancellationToken) -> Option<Connection> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times();
    let attempt = || connect(url, connection_name, trust);
    let retried = attempt.retry(backoff).notify(|e, wait| {
        tracing::warn!(error = %e, retry_in = ?wait, "broker unreachable");
    });
    tokio::select! {
        conn = retried => conn.ok(),
        _ = cancel.cancelled() => None,
    }
}

/// RabbitMQ returns a mandatory publish to a direct reply-to address as
/// unroutable even when it delivered it (rabbitmq-server#6124, seen on 3.10):
/// treated as a failure, each reply was sent again and again. A reply there is
/// published without `mandatory`; if its requester has gone, nobody is left to
/// answer, and the reply stays with the idempotency key for a retry to fetch.
fn is_direct_reply_to(m: &Outbound) -> bool {
    m.exchange.is_empty() && m.routing_key.starts_with("amq.rabbitmq.reply-to.")
}

/// A channel in confirm mode. Every publish is persistent and (but for direct
/// reply-to) mandatory, and counts only once the broker has confirmed it.
pub struct Publisher {
    channel: Channel,
    names: Names,
    timeout: Duration,
    /// Every message says which broker user sent it; RabbitMQ checks that it
    /// is this connection's, so consumers may trust it (DESIGN §10).
    user_id: Option<String>,
}

impl Publisher {
    /// How logical names become this fleet's real ones.
    pub fn names(&self) -> &Names {
        &self.names
    }

    pub async fn new(conn: &Connection, names: Names, timeout: Duration, user_id: Option<String>) -> Result<Publisher, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel, names, timeout, user_id })
    }

    /// Closes the channel; confirms already received stand.
    pub async fn close(&self) {
        let _ = self.channel.close(200, ShortString::from("closing")).await;
    }

    pub async fn publish(&self, msg: &Outbound) -> Result<(), PublishError> {
        self.publish_batch(std::slice::from_ref(msg)).await.pop().unwrap_or(Ok(()))
    }

    /// Sends all, then waits for all confirms: one round trip for the batch, and
    /// the broker keeps the channel's order. Results are in input order.
    pub async fn publish_batch(&self, msgs: &[Outbound]) -> Vec<Result<(), PublishError>> {
        let sent = tokio::time::timeout(self.timeout, async {
            let mut confirms = Vec::with_capacity(msgs.len());
            for m in msgs {
                let exchange = self.names.exchange(&m.exchange);
                let mut properties = m.properties();
                if let Some(user) = &self.user_id {
                    properties = properties.with_user_id(ShortString::from(user.as_str()));
                }
                let r = self
                    .channel
                    .basic_publish(
                        ShortString::from(exchange.as_str()),
                        ShortString::from(m.routing_key.as_str()),
                        BasicPublishOptions { mandatory: !is_direct_reply_to(m), ..Default::default() },
                        &m.body,
                        properties,
                    )
                    .await;
                confirms.push(r);
            }
            let waits = confirms.into_iter().map(|c| async move {
                match c {
                    Ok(confirm) => confirm.await.map_err(PublishError::from),
                    Err(e) => Err(PublishError::from(e)),
                }
            });
            join_all(waits).await
        })
        .await;
        match sent {
            Err(_) => msgs.iter().map(|_| Err(PublishError::Timeout(self.timeout))).collect(),
            Ok(results) => results
                .into_iter()
                .zip(msgs)
                .map(|(r, m)| match r? {
                    Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                    Confirmation::Ack(Some(_)) => {
                        Err(PublishError::Unroutable { exchange: self.names.exchange(&m.exchange), routing_key: m.routing_key.clone() })
                    }
                    Confirmation::Nack(_) => Err(PublishError::Nacked),
                })
                .collect(),
        }
    }
}
