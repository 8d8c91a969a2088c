//! The deploy manifests' database roles are enough to run the fleet, and no more.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{admin_database_url, rabbitmqctl, seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use serde_json::json;
use std::time::Duration;

const ROLES: [&str; 7] = ["ps_intake", "ps_checkout", "ps_gateway", "ps_lifecycle", "ps_webhooks", "ps_scheduler", "ps_api"];

#[tokio::test]
async fn the_fleet_runs_with_only_the_grants_of_its_roles() {
    let mut env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    c.batch_execute(include_str!("../../../deploy/postgres/roles.sql")).await.expect("roles.sql applies");
    drop(c);
    let url_as = |role: &str| env.database_url.replacen("postgres@", &format!("{role}@"), 1);
    let (intake, checkout_db, gateway, lifecycle, webhooks) =
        (url_as("ps_intake"), url_as("ps_checkout"), url_as("ps_gateway"), url_as("ps_lifecycle"), url_as("ps_webhooks"));
    let (scheduler, api_db) = (url_as("ps_scheduler"), url_as("ps_api"));
    let no_migrate = ("DATABASE_MIGRATE", "false");
    env.start_gateway(&[("DATABASE_URL", &gateway), no_migrate]).await;
    env.start_lifecycle(&[("DATABASE_URL", &lifecycle), no_migrate]).await;
    let checkout = env.start_checkout_with(&[("DATABASE_URL", &checkout_db), no_migrate]).await;
    env.start_intake_with(&[("DATABASE_URL", &intake), no_migrate, ("CHECKOUT_BASE_URL", &checkout)]).await;
    env.start_webhooks(&[("DATABASE_URL", &webhooks), no_migrate, ("WEBHOOK_RETRY_SCHEDULE_SECS", "0.05")]).await;
    let clock = std::sync::Arc::new(charge_scheduler::clock::ManualClock::new(chrono::Utc::now()));
    let wake = env.start_scheduler(&[("DATABASE_URL", &scheduler), no_migrate], clock.clone()).await;
    let rx = Receiver::start(&[Answer::Status(500)], Answer::Status(200)).await;
    let ep = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["mandate.revoked"]}))
                .header("merchant-id", "gym"),
        )
        .await;
    assert_eq!(ep.body["status"], "enabled", "{}", ep.body);

    // A one_time saved always, and a first_in_series: every table each service writes.
    let body = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                      "return_url": "https://x.example/r", "save_payment_method": "always"});
    let cmd = || Command::create("shop_1", &body).header("idempotency-key", "roles-1");
    let s = env.call(cmd()).await.body;
    assert!(env.call(cmd()).await.replayed);
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    let refund = json!({"payment_session_id": s["id"], "amount": 40});
    let r =
        env.call(Command::new("refund.create", &refund).header("merchant-id", "shop_1").header("idempotency-key", "roles-refund")).await;
    assert_eq!(env.event_about("refund.succeeded", r.body["id"].as_str().unwrap()).await["data"]["amount"], 40, "{}", r.body);

    // The merchant's look, set by lifecycle and read by the checkout under their roles.
    let look = json!({"display_name": "Shop One", "brand_color": "#112233"});
    let set = env.call(Command::new("checkout_settings.update", &look).header("merchant-id", "shop_1")).await;
    assert_eq!(set.body["display_name"], "Shop One", "{}", set.body);

    // A reservation captured in two parts, the rest voided: each under its role.
    let manual =
        json!({"type": "one_time", "amount": 1000, "currency": "ZAR", "return_url": "https://x.example/r", "capture_method": "manual"});
    let m = env.call(Command::create("shop_1", &manual)).await.body;
    let mid = m["id"].as_str().unwrap();
    CheckoutClient::new().pay(m["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", mid).await["data"]["payment_outcome"], "reserved");
    for (amount, paid) in [(300, 300), (200, 500)] {
        let capture = json!({"payment_session_id": mid, "amount": amount});
        assert!(env.call(Command::new("payment.capture", &capture).header("merchant-id", "shop_1")).await.error_code().is_none());
        assert_eq!(env.event_about("payment.captured", mid).await["data"]["paid_amount"], paid);
    }
    env.call(Command::new("payment.void", &json!({"payment_session_id": mid})).header("merchant-id", "shop_1")).await;
    assert_eq!(env.event_about("payment.voided", mid).await["data"]["voided_amount"], 500);

    // payments-api reads keys and nothing else; the rest is a command.
    let api = env.start_api(&[("DATABASE_URL", &api_db), no_migrate]).await;
    let key = env.psctl(&["keys", "create", "--merchant", "shop_1", "--mode", "test"]).trim().to_owned();
    let over_http = reqwest::Client::new()
        .post(format!("{api}/collect/payment_sessions"))
        .bearer_auth(&key)
        .header("idempotency-key", "roles-http")
        .json(&json!({"type": "one_time", "amount": 300, "currency": "ZAR", "return_url": "https://x.example/r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.status().as_u16(), 200);
    let (api_client, conn) = tokio_postgres::connect(&api_db, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let refused = api_client.query("SELECT * FROM payment_sessions LIMIT 1", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{refused:?}");
    drop(api_client);

    let fis = json!({"type": "first_in_series", "amount": 100, "currency": "ZAR", "customer": {"name": "B", "email": "b@example.com"},
                     "return_url": "https://x.example/r", "subscription_options": {"recurrence": {"type": "monthly", "interval_count": 1}}});
    let f = env.call(Command::create("gym", &fis)).await.body;
    CheckoutClient::new().pay(f["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", f["id"].as_str().unwrap()).await;
    let md = done["data"]["mandate_id"].as_str().unwrap();
    let next =
        env.call(Command::create("gym", &json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": md}))).await.body;
    assert_eq!(env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    // The scheduler: the subscription's schedule charged when due, and a trigger.
    env.wait_for_count("SELECT count(*) FROM schedules", 1).await;
    clock.set(chrono::Utc::now() + chrono::Duration::days(62));
    wake.notify_one();
    env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome = 'paid'", 1).await;
    let trigger = json!({"charges": [{"mandate_id": md, "amount": 100, "currency": "ZAR", "external_reference": "roles-trigger"}]});
    let answered =
        env.call(Command::new("schedule.trigger", &trigger).header("merchant-id", "gym").header("idempotency-key", "roles-trigger")).await;
    assert!(answered.body["items"][0]["payment_session_id"].is_string(), "{}", answered.body);
    let revoked = env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "gym")).await;
    assert_eq!(revoked.body["status"], "revoked", "{}", revoked.body);
    rx.wait_for(2).await;
    let rotated = env
        .call(Command::new("webhook_endpoint.rotate_secret", &json!({"webhook_endpoint_id": ep.body["id"]})).header("merchant-id", "gym"))
        .await;
    assert!(rotated.body["secret"].is_string(), "{}", rotated.body);
    let (_, _, seeded) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), "4000000000009995", (12, 2099), true)
            .await;
    let declined = env
        .call(Command::create("gym", &json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": seeded})))
        .await
        .body;
    assert_eq!(env.event_about("payment_session.completed", declined["id"].as_str().unwrap()).await["data"]["payment_outcome"], "unpaid");

    // And no more: only the gateway may read the vault.
    let (client, conn) = tokio_postgres::connect(&checkout_db, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let denied = client.query("SELECT pan_sealed FROM vault_cards", &[]).await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    // Nor write another producer's outbox row: stolen checkout credentials cannot
    // queue a gateway.result the gateway's relay would publish as the gateway.
    let forge = "INSERT INTO outbox (exchange, routing_key, message_id, body, kind, producer)
                 VALUES ('payment_sessions.internal', 'gateway.result', 'forged', '{}', 'durable', $1)";
    let refused = client.execute(forge, &[&"payment-gateway"]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{refused:?}");
    let theirs = client.query_one("SELECT count(*) FROM outbox WHERE producer <> 'checkout'", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(theirs, 0, "another service's outbox rows are not even visible");
    for table in ["processed_messages", "idempotency_keys", "dead_letters"] {
        let e = client.query(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap_err();
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{table}: {e:?}");
    }
    let register = "UPDATE fleet_members SET broker_user = 'mallory' WHERE service = 'payment-gateway'";
    assert_eq!(client.execute(register, &[]).await.unwrap(), 0, "the gateway's broker user is not the checkout's to change");
    drop(client);
    // And a consumer's role writes only its own consumers' dedupe records.
    let (gateway_client, conn) = tokio_postgres::connect(&gateway, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let claim = "INSERT INTO processed_messages (consumer, message_key) VALUES ('payment_sessions.lifecycle', 'pre-claimed')";
    let refused = gateway_client.execute(claim, &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{refused:?}");
    drop(gateway_client);

    env.stop_services().await;
    // Roles are cluster-wide: remove them unless another database still grants them something.
    let c = env.pool.get().await.unwrap();
    for r in ROLES {
        c.batch_execute(&format!("DROP OWNED BY {r}")).await.unwrap();
    }
    drop(c);
    let (admin, conn) = tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    env.finish().await;
    for r in ROLES {
        let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
    }
}

/// The broker users of `deploy/rabbitmq/definitions.json`, each with a fresh password.
struct BrokerUsers {
    vhost: String,
    suffix: String,
    passwords: std::collections::HashMap<String, String>,
}

impl BrokerUsers {
    fn create(vhost: &str) -> BrokerUsers {
        let defs: serde_json::Value = serde_json::from_str(include_str!("../../../deploy/rabbitmq/definitions.json")).unwrap();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let mut passwords = std::collections::HashMap::new();
        for p in defs["permissions"].as_array().unwrap() {
            let user = p["user"].as_str().unwrap();
            let name = format!("{user}-{suffix}");
            let password = uuid::Uuid::new_v4().simple().to_string();
            rabbitmqctl(&["add_user", &name, &password]);
            let perm = |k: &str| p[k].as_str().unwrap().to_owned();
            rabbitmqctl(&["set_permissions", "-p", vhost, &name, &perm("configure"), &perm("write"), &perm("read")]);
            for t in defs["topic_permissions"].as_array().unwrap().iter().filter(|t| t["user"] == user) {
                let field = |k: &str| t[k].as_str().unwrap().to_owned();
                rabbitmqctl(&["set_topic_permissions", "-p", vhost, &name, &field("exchange"), &field("write"), &field("read")]);
            }
            passwords.insert(user.to_owned(), password);
        }
        BrokerUsers { vhost: vhost.to_owned(), suffix, passwords }
    }

    fn name(&self, user: &str) -> String {
        format!("{user}-{}", self.suffix)
    }

    fn url(&self, user: &str) -> String {
        format!("amqp://{user}-{}:{}@127.0.0.1:5672/{}", self.suffix, self.passwords[user], self.vhost)
    }
}

/// The policies of definitions.json, in `vhost`; checks they reach exactly the work queues.
fn apply_policies(vhost: &str) {
    let defs: serde_json::Value = serde_json::from_str(include_str!("../../../deploy/rabbitmq/definitions.json")).unwrap();
    let k8s = include_str!("../../../deploy/k8s/rabbitmq.yaml");
    for p in defs["policies"].as_array().unwrap() {
        let (name, pattern) = (p["name"].as_str().unwrap(), p["pattern"].as_str().unwrap());
        assert!(k8s.contains(&format!("pattern: '{pattern}'")), "deploy/k8s/rabbitmq.yaml's {name} differs from definitions.json's");
        rabbitmqctl(&[
            "set_policy",
            "-p",
            vhost,
            "--apply-to",
            p["apply-to"].as_str().unwrap(),
            "--priority",
            &p["priority"].to_string(),
            name,
            pattern,
            &p["definition"].to_string(),
        ]);
    }
    let listed = rabbitmqctl(&["list_queues", "-p", vhost, "--no-table-headers", "name", "policy"]);
    for q in ps_runtime::topology::QUEUES {
        for (queue, want) in [(q.name.to_owned(), "payment-sessions-work-queues"), (format!("{}.dlq", q.name), "")] {
            let line = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(queue.as_str()))
                .unwrap_or_else(|| panic!("{queue} not declared: {listed}"));
            assert_eq!(line.split_whitespace().nth(1).unwrap_or(""), want, "{queue}'s policy");
        }
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for user in self.passwords.keys() {
            let _ = std::process::Command::new("rabbitmqctl").args(["-q", "delete_user", &format!("{user}-{}", self.suffix)]).status();
        }
    }
}

#[tokio::test]
async fn the_fleet_runs_with_only_its_broker_permissions() {
    // As deployed: delivery limits from definitions.json's policy, not queue arguments.
    let mut env = TestEnv::in_vhost_limits_from_policy().await;
    let users = BrokerUsers::create(env.vhost.as_deref().unwrap());
    apply_policies(env.vhost.as_deref().unwrap());
    let as_user = |u: &str| users.url(u);
    let (gateway, lifecycle, checkout_amqp, intake, webhooks) =
        (as_user("ps-gateway"), as_user("ps-lifecycle"), as_user("ps-checkout"), as_user("ps-intake"), as_user("ps-webhooks"));
    env.start_gateway(&[("AMQP_URL", &gateway)]).await;
    env.start_lifecycle(&[("AMQP_URL", &lifecycle)]).await;
    let checkout = env.start_checkout_with(&[("AMQP_URL", &checkout_amqp)]).await;
    env.start_intake_with(&[("AMQP_URL", &intake), ("CHECKOUT_BASE_URL", &checkout)]).await;
    env.start_webhooks(&[("AMQP_URL", &webhooks)]).await;
    // The scheduler sends payment_session.create as its own broker user, which must be granted the merchants it charges for.
    env.psctl(&["merchants", "grant", &users.name("ps-scheduler"), "*"]);
    let clock = std::sync::Arc::new(charge_scheduler::clock::ManualClock::new(chrono::Utc::now()));
    env.start_scheduler(&[("AMQP_URL", &as_user("ps-scheduler"))], clock).await;

    // An upstream system, as the upstream user: a server-named reply queue, a command, its reply.
    let conn = ps_runtime::broker::connect(&users.url("upstream"), "upstream", &Default::default()).await.expect("upstream connects");
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            Default::default(),
        )
        .await
        .expect("upstream may declare its reply queue");
    let mut replies = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    let body = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                      "return_url": "https://x.example/r", "save_payment_method": "always"});
    let upstream = users.name("upstream");
    // The upstream may act for shop only (DESIGN §10); its user_id is vouched for by the broker.
    env.psctl(&["merchants", "grant", &upstream, "shop"]);
    let grants: serde_json::Value = serde_json::from_str(&env.psctl(&["merchants", "list", "--json"])).unwrap();
    assert!(grants.as_array().unwrap().iter().any(|g| g["broker_user"] == upstream.as_str() && g["merchant_id"] == "shop"), "{grants}");
    let mut send = async |merchant: &str, key: &str, user: Option<&str>| -> serde_json::Value {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert("merchant-id".into(), lapin::types::AMQPValue::LongString(merchant.into()));
        headers.insert("idempotency-key".into(), lapin::types::AMQPValue::LongString(key.into()));
        let mut props = lapin::BasicProperties::default()
            .with_reply_to(q.name().clone())
            .with_correlation_id(key.into())
            .with_headers(headers)
            .with_message_id(key.into());
        if let Some(u) = user {
            props = props.with_user_id(u.into());
        }
        ch.basic_publish(
            "payment_sessions.commands".into(),
            "payment_session.create".into(),
            Default::default(),
            body.to_string().as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let reply =
            tokio::time::timeout(integration_tests::WAIT, futures::StreamExt::next(&mut replies)).await.expect("a reply").unwrap().unwrap();
        serde_json::from_slice(&reply.data).unwrap()
    };
    let s = send("shop", "upstream-1", Some(&upstream)).await;
    assert_eq!(s["status"], "active", "{s}");
    let rival = send("rival", "upstream-2", Some(&upstream)).await;
    assert_eq!(rival["error"]["code"], "merchant_not_authorized", "{rival}");
    let anonymous = send("shop", "upstream-3", None).await;
    assert_eq!(anonymous["error"]["code"], "merchant_not_authorized", "{anonymous}");
    env.psctl(&["merchants", "revoke", &upstream, "shop"]);
    let revoked = send("shop", "upstream-4", Some(&upstream)).await;
    assert_eq!(revoked["error"]["code"], "merchant_not_authorized", "{revoked}");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions WHERE merchant_id = 'rival'").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "refused commands changed nothing");

    // The upstream user may not publish where only services may: the broker closes the channel.
    let probe = conn.create_channel().await.unwrap();
    probe.confirm_select(Default::default()).await.unwrap();
    let attempt = async {
        probe
            .basic_publish("payment_sessions.internal".into(), "gateway.authorize".into(), Default::default(), b"{}", Default::default())
            .await?
            .await
    };
    let outcome = tokio::time::timeout(integration_tests::WAIT, attempt).await.expect("the broker answers");
    assert!(outcome.is_err(), "upstream published on the internal exchange: {outcome:?}");

    // Nor may it claim to be another broker user: RabbitMQ refuses a user_id that is not the connection's.
    let spoof = conn.create_channel().await.unwrap();
    spoof.confirm_select(Default::default()).await.unwrap();
    let props = lapin::BasicProperties::default().with_user_id("guest".into());
    let attempt = async {
        spoof
            .basic_publish("payment_sessions.commands".into(), "payment_session.create".into(), Default::default(), b"{}", props)
            .await?
            .await
    };
    let outcome = tokio::time::timeout(integration_tests::WAIT, attempt).await.expect("the broker answers");
    assert!(outcome.is_err(), "a spoofed user_id was accepted: {outcome:?}");

    // A service may publish only its own routing keys: the checkout cannot forge a processor result.
    let checkout_conn = ps_runtime::broker::connect(&users.url("ps-checkout"), "forger", &Default::default()).await.unwrap();
    let forge = checkout_conn.create_channel().await.unwrap();
    forge.confirm_select(Default::default()).await.unwrap();
    let attempt = async {
        forge
            .basic_publish("payment_sessions.internal".into(), "gateway.result".into(), Default::default(), b"{}", Default::default())
            .await?
            .await
    };
    let outcome = tokio::time::timeout(integration_tests::WAIT, attempt).await.expect("the broker answers");
    assert!(outcome.is_err(), "ps-checkout published gateway.result: {outcome:?}");
    let _ = checkout_conn.close(200, "bye".into()).await;

    // Every service does its part: pay, mandate, next_in_series, webhook.
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    endpoint_for(&env, &rx.url).await;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    // A refund: lifecycle publishes gateway.refund and refund.* as ps-lifecycle, the gateway answers as ps-gateway.
    let refund = json!({"payment_session_id": s["id"], "amount": 60});
    let r = env.call(Command::new("refund.create", &refund).header("merchant-id", "shop").header("idempotency-key", "perm-refund")).await;
    assert_eq!(env.event_about("refund.succeeded", r.body["id"].as_str().unwrap()).await["data"]["amount"], 60, "{}", r.body);
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "shop", json!({"type": "on_demand", "currency": "ZAR"}), "4242424242424242", (12, 2099), true)
            .await;
    let next = env
        .call(Command::create("shop", &json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": md})))
        .await
        .body;
    assert_eq!(env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    let trigger = json!({"charges": [{"mandate_id": md, "amount": 100, "currency": "ZAR", "external_reference": "perm-trigger"}]});
    let answered =
        env.call(Command::new("schedule.trigger", &trigger).header("merchant-id", "shop").header("idempotency-key", "perm-trigger")).await;
    assert!(answered.body["items"][0]["payment_session_id"].is_string(), "{}", answered.body);
    env.wait_for_count("SELECT count(*) FROM schedule_triggers WHERE completed_at IS NOT NULL", 1).await;
    let cancelled = env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "shop")).await;
    assert_eq!(cancelled.body["status"], "revoked", "{}", cancelled.body);
    rx.wait_for(1).await;
    let _ = conn.close(200, "bye".into()).await;
    env.finish().await;
}

async fn endpoint_for(env: &TestEnv, url: &str) {
    let r = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": ["payment_session.completed"]}))
                .header("merchant-id", "shop"),
        )
        .await;
    assert_eq!(r.body["status"], "enabled", "{}", r.body);
}

/// Resolving an unanswered attempt as production runs it: lifecycle publishes
/// `gateway.resolve` as its own broker user (its topic permission must allow
/// it) and the gateway answers as its own.
#[tokio::test]
async fn an_unanswered_attempt_is_resolved_with_only_the_services_broker_permissions() {
    let mut env = TestEnv::in_vhost().await;
    let users = BrokerUsers::create(env.vhost.as_deref().unwrap());
    env.start_intake_with(&[("AMQP_URL", &users.url("ps-intake"))]).await;
    env.start_lifecycle(&[("AMQP_URL", &users.url("ps-lifecycle")), ("ATTEMPT_ABANDON_AFTER_SECS", "1")]).await;
    let (_, _, md) = integration_tests::seed_mandate_with_card(
        &env.pool,
        "gym",
        json!({"type": "on_demand", "currency": "ZAR"}),
        "4242424242424242",
        (12, 2099),
        true,
    )
    .await;
    let s = env.call(Command::create("gym", &json!({"type": "next_in_series", "amount": 700, "currency": "ZAR", "mandate_id": md}))).await;
    let id = s.body["id"].as_str().unwrap().to_owned();
    // The authorize is lost before any gateway sees it.
    env.next_message(&env.names.queue(&ps_runtime::topology::GATEWAY)).await;
    env.start_gateway(&[("AMQP_URL", &users.url("ps-gateway"))]).await;
    let failed = env.event_about("payment.failed", &id).await;
    assert_eq!(failed["data"]["last_payment_error"]["decline_code"], "processor_no_record");
    env.finish().await;
}

/// Counts how often RabbitMQ delivers one message that is always returned
/// (nack with requeue) before it dead-letters it to `dlq`.
async fn deliveries_until_dead_lettered(env: &TestEnv, queue: &str, dlq: &str) -> u32 {
    use futures::StreamExt;
    let conn = ps_runtime::broker::connect(&env.amqp_url, "policy-test", &Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let published = ch
        .basic_publish("".into(), queue.into(), Default::default(), b"{}", lapin::BasicProperties::default().with_delivery_mode(2))
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(published.is_ack());
    let mut consumer = ch.basic_consume(queue.into(), "".into(), Default::default(), Default::default()).await.unwrap();
    let mut deliveries = 0;
    loop {
        // RabbitMQ dead-letters the message instead of delivering it once the limit is passed.
        let next = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
        match next {
            Ok(Some(Ok(d))) => {
                deliveries += 1;
                d.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
            }
            Ok(other) => panic!("consumer ended: {other:?}"),
            Err(_) if env.ready_count(dlq).await == 1 => break,
            Err(_) => assert!(deliveries < 100, "never dead-lettered after {deliveries} deliveries"),
        }
    }
    let _ = ch.queue_purge(dlq.into(), Default::default()).await;
    conn.close(0, "done".into()).await.unwrap();
    deliveries
}

#[tokio::test]
async fn delivery_limits_come_from_a_policy_and_change_without_redeclaring() {
    // As the k8s manifests and docker-compose.yml run it: AMQP_DELIVERY_LIMIT=policy.
    let env = TestEnv::with_limits_from_policy().await;
    let queue = env.names.queue(&ps_runtime::topology::INTAKE);
    let dlq = env.names.dead_letter_queue(&ps_runtime::topology::INTAKE);
    let policy = format!("{}limits", env.prefix);
    let pattern = format!("^{}$", regex_escape(&queue));
    let set = |limit: u32| {
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "50",
            &policy,
            &pattern,
            &format!("{{\"delivery-limit\": {limit}}}"),
        ])
    };
    set(2);
    let first = deliveries_until_dead_lettered(&env, &queue, &dlq).await;
    // Above the services' default argument (10), which would otherwise cap it.
    set(12);
    let second = deliveries_until_dead_lettered(&env, &queue, &dlq).await;
    rabbitmqctl(&["clear_policy", &policy]);
    // A limit of n allows the first delivery and n redeliveries.
    assert_eq!((first, second), (3, 13), "the policy's limit governs, and a change applies to the declared queue at once");
    // The services declare it the same way: without the argument a policy would lose to.
    let c = ps_runtime::Config::from_env(&ps_runtime::Env::from_pairs([("AMQP_DELIVERY_LIMIT", "policy")]), 1).unwrap();
    assert_eq!(c.delivery_limit, None);
    env.finish().await;
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c == '.' { vec!['\\', '.'] } else { vec![c] }).collect()
}

/// payments-api as deployed: its own broker user (definitions.json's
/// `ps-api`: publish commands, nothing else), acting only for the merchants
/// that user is granted, whatever key a client holds.
#[tokio::test]
async fn the_api_publishes_as_its_own_broker_user_for_the_merchants_it_is_granted() {
    let mut env = TestEnv::in_vhost().await;
    let users = BrokerUsers::create(env.vhost.as_deref().unwrap());
    env.start_intake_with(&[("AMQP_URL", &users.url("ps-intake"))]).await;
    let api = env.start_api(&[("AMQP_URL", &users.url("ps-api"))]).await;
    env.psctl(&["merchants", "grant", &users.name("ps-api"), "shop"]);
    let shop = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    let cafe = env.psctl(&["keys", "create", "--merchant", "cafe", "--mode", "test"]).trim().to_owned();
    let body = json!({"type": "one_time", "amount": 700, "currency": "ZAR", "return_url": "https://shop.example/r"});
    let http = reqwest::Client::new();
    let post = |key: &str, idem: &str| {
        http.post(format!("{api}/collect/payment_sessions")).bearer_auth(key).header("idempotency-key", idem).json(&body).send()
    };
    let r = post(&shop, "a").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["object"], "payment_session");
    // A valid key for a merchant the API's broker user is not granted: refused by intake, as from any upstream.
    let r = post(&cafe, "b").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "merchant_not_authorized");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    env.finish().await;
}
