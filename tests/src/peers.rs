//! Other parties on a test's own vhost: broker users besides the harness's
//! (a second upstream, an attacker, an operator allowed to impersonate), each
//! removed when dropped, and a publisher that sends commands as one of them.

use crate::{rabbitmqctl, vhost_url, Command, Reply, TestEnv, WAIT};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use ps_contract::routing::{exchange, header};
use ps_runtime::message::header_str;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A broker user with every permission on the test's vhost (the fleet, not the
/// broker, must be what stops it), deleted when dropped.
pub struct BrokerUser {
    pub name: String,
    pub password: String,
    pub url: String,
}

impl BrokerUser {
    /// `tags`: e.g. `impersonator`, for an operator replaying as another user.
    pub fn create(env: &TestEnv, role: &str, tags: &[&str]) -> BrokerUser {
        let vhost = env.vhost.as_deref().expect("extra broker users need a test in its own vhost (TestEnv::in_vhost)");
        let name = format!("{role}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let password = uuid::Uuid::new_v4().simple().to_string();
        rabbitmqctl(&["add_user", &name, &password]);
        rabbitmqctl(&["set_permissions", "-p", vhost, &name, ".*", ".*", ".*"]);
        if !tags.is_empty() {
            let mut args = vec!["set_user_tags", name.as_str()];
            args.extend_from_slice(tags);
            rabbitmqctl(&args);
        }
        let base = crate::amqp_url();
        let host = base.split_once('@').map(|(_, h)| h).unwrap_or("127.0.0.1:5672/%2f");
        let url = vhost_url(&format!("amqp://{name}:{password}@{host}"), vhost);
        BrokerUser { name, password, url }
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_user", &self.name]).status();
    }
}

/// Commands sent as another broker user, its replies in a server-named queue of its own.
pub struct Peer {
    _conn: Connection,
    channel: Channel,
    pub user: String,
    pub reply_queue: String,
    commands: String,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    arrived: Arc<Notify>,
}

impl Peer {
    pub async fn connect(env: &TestEnv, user: &BrokerUser) -> Peer {
        let conn = ps_runtime::broker::connect(&user.url, "peer", &Default::default()).await.expect("the peer connects");
        let channel = conn.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let listen = conn.create_channel().await.unwrap();
        let q = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let reply_queue = listen.queue_declare("".into(), q, FieldTable::default()).await.unwrap().name().as_str().to_owned();
        let mut consumer = listen
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let (replies, arrived) = (Arc::new(Mutex::new(HashMap::new())), Arc::new(Notify::new()));
        let (r, a) = (replies.clone(), arrived.clone());
        tokio::spawn(async move {
            let _keep = listen;
            while let Some(Ok(d)) = consumer.next().await {
                let corr = d.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default();
                let replayed = header_str(d.properties.headers().as_ref(), header::IDEMPOTENT_REPLAYED).as_deref() == Some("true");
                let body = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                r.lock().unwrap().insert(corr, Reply { body, replayed });
                a.notify_waiters();
            }
        });
        Peer {
            _conn: conn,
            channel,
            user: user.name.clone(),
            reply_queue,
            commands: env.names.exchange(exchange::COMMANDS),
            replies,
            arrived,
        }
    }

    /// Publishes `cmd` as this user (whatever user_id it names: RabbitMQ would
    /// refuse another); returns its correlation id.
    pub async fn send(&self, cmd: Command) -> String {
        let corr = cmd.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let cmd = cmd.user_id(Some(&self.user));
        let props = cmd.properties(&corr, &self.reply_queue);
        let confirm = self
            .channel
            .basic_publish(
                self.commands.as_str().into(),
                cmd.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &cmd.body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(None)), "command was not routed: {confirm:?}");
        corr
    }

    /// Publishes raw bytes on a real exchange name (`""`: the default exchange) as this user.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8], props: BasicProperties) {
        let props = props.with_user_id(self.user.as_str().into());
        let confirm = self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, body, props)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(None)), "not routed: {confirm:?}");
    }

    pub async fn reply(&self, corr: &str) -> Reply {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(r) = self.replies.lock().unwrap().get(corr) {
                    return r.clone();
                }
                arrived.await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no reply for {corr} within {WAIT:?}"))
    }

    pub async fn call(&self, cmd: Command) -> Reply {
        let corr = self.send(cmd).await;
        self.reply(&corr).await
    }
}
