//! Every link encrypted the way production runs it: webhooks to https with a
//! private CA, the broker over amqps, PostgreSQL with sslmode, the checkout's
//! card channel to the vault over TLS with its token.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::tls::{TestCa, TlsFront};
use integration_tests::{Command, TestEnv, VAULT_TOKEN};
use ps_runtime::tls::Trust;
use serde_json::{json, Value};

fn one_time() -> Value {
    json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"})
}

#[tokio::test]
async fn a_webhook_reaches_an_https_receiver_whose_certificate_a_private_ca_signed() {
    let ca = TestCa::new();
    let rx = Receiver::start_https(&[], Answer::Status(200), ca.leaf("receiver").server_config()).await;
    assert!(rx.url.starts_with("https://localhost:"));
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    // The real binary, configured as production is (https only: no local mode), trusting the CA through SSL_CERT_FILE.
    env.spawn_binary(
        "webhook-dispatch",
        &[("SSL_CERT_FILE", &ca.ca_file()), ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8"), ("WEBHOOK_POLL_MS", "50")],
    );
    let ep = env
        .call(Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["*"]})).header("merchant-id", "shop"))
        .await
        .body;
    assert_eq!(ep["status"], "enabled", "{ep}");
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let got = rx.wait_for(1).await;
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!((event["type"].as_str(), event["data"]["id"].as_str()), (Some("payment_session.created"), s["id"].as_str()));
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got[0].headers[name].clone());
    }
    standardwebhooks::Webhook::new(ep["secret"].as_str().unwrap()).unwrap().verify(&got[0].body, &headers).expect("signed");
    env.finish().await;
}

#[tokio::test]
async fn a_receiver_the_fleet_cannot_verify_gets_nothing() {
    let ca = TestCa::new();
    let rx = Receiver::start_https(&[], Answer::Status(200), ca.leaf("receiver").server_config()).await;
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    // No SSL_CERT_FILE: the system's roots do not know the test CA.
    env.start_webhooks(&[]).await;
    env.call(Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["*"]})).header("merchant-id", "shop")).await;
    env.call(Command::create("shop", &one_time())).await;
    env.wait_for_count("SELECT count(*) FROM webhook_attempts WHERE status_code IS NULL AND error IS NOT NULL", 1).await;
    let error: String = env.pool.get().await.unwrap().query_one("SELECT error FROM webhook_attempts LIMIT 1", &[]).await.unwrap().get(0);
    assert!(error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"), "{error}");
    assert!(rx.received().is_empty(), "nothing reached an unverified receiver");
    env.finish().await;
}

#[tokio::test]
async fn a_service_consumes_and_answers_over_amqps() {
    let ca = TestCa::new();
    let broker: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let front = TlsFront::start(&ca.leaf("rabbitmq"), broker).await;
    let mut env = TestEnv::new().await;
    let amqps = format!("amqps://guest:guest@localhost:{}/%2f", front.port);
    env.start_intake_with(&[("AMQP_URL", &amqps), ("SSL_CERT_FILE", &ca.ca_file())]).await;
    let reply = env.call(Command::create("shop", &one_time())).await;
    assert_eq!(reply.body["status"], "active", "{}", reply.body);
    assert!(front.handshakes() >= 1, "intake reached the broker through the TLS endpoint");

    // Without the CA the same endpoint is refused: the certificate is verified.
    let refused = ps_runtime::broker::connect(&amqps, "untrusting", &Trust::default()).await;
    assert!(refused.is_err(), "an unverifiable broker certificate must be refused");
    let trusted = ps_runtime::broker::connect(&amqps, "trusting", &Trust::with_ca_file(std::path::Path::new(&ca.ca_file())).unwrap()).await;
    trusted.expect("the CA makes it verifiable").close(200, "bye".into()).await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn the_database_is_reached_with_sslmode_require_and_verify_full_checks_the_certificate() {
    let mut env = TestEnv::new().await;
    let require = format!("{}?sslmode=require", env.database_url);
    let pool = ps_runtime::db::pool(&require, 2, &Trust::default()).unwrap();
    let ssl: bool = pool
        .get()
        .await
        .expect("connects with sslmode=require")
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
    // A whole service on it.
    env.start_intake_with(&[("DATABASE_URL", &require)]).await;
    assert_eq!(env.call(Command::create("shop", &one_time())).await.body["status"], "active");
    let encrypted = env
        .count("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'payment-sessions'")
        .await;
    assert!(encrypted >= 1, "intake's connections are encrypted");

    // verify-full against a certificate nobody here vouches for (Debian's self-signed snakeoil) is refused.
    let full = format!("{}?sslmode=verify-full", env.database_url);
    let strict = ps_runtime::db::pool(&full, 1, &Trust::default()).unwrap();
    let err = strict.get().await.expect_err("an unverifiable server certificate is refused");
    assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{err:?}");
    env.finish().await;
}

#[tokio::test]
async fn the_checkout_reaches_the_vault_over_tls_with_its_token_and_nobody_else_does() {
    let ca = TestCa::new();
    let leaf = ca.leaf("vault");
    let mut env = TestEnv::new().await;
    let (cert, key) = (leaf.cert_file.display().to_string(), leaf.key_file.display().to_string());
    let plain = env.start_gateway(&[("VAULT_TLS_CERT_FILE", &cert), ("VAULT_TLS_KEY_FILE", &key)]).await;
    let vault = plain.replace("http://127.0.0.1", "https://localhost");
    env.start_lifecycle(&[]).await;
    let checkout = env.start_checkout_with(&[("VAULT_URL", &vault), ("SSL_CERT_FILE", &ca.ca_file())]).await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let page = integration_tests::CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");

    let trust = Trust::with_ca_file(std::path::Path::new(&ca.ca_file())).unwrap();
    let http = reqwest::Client::builder().tls_backend_preconfigured(trust.client_config().unwrap()).build().unwrap();
    let card = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"});
    let url = format!("{vault}/v1/cards");
    let no_token = http.post(&url).json(&card).send().await.unwrap().status();
    let wrong = http.post(&url).bearer_auth("x".repeat(VAULT_TOKEN.len())).json(&card).send().await.unwrap().status();
    let right = http.post(&url).bearer_auth(VAULT_TOKEN).json(&card).send().await.unwrap().status();
    assert_eq!((no_token.as_u16(), wrong.as_u16(), right.as_u16()), (401, 401, 201));
    // Plain HTTP to the TLS port gets no card through.
    let cleartext = reqwest::Client::new().post(url.replace("https://", "http://")).bearer_auth(VAULT_TOKEN).json(&card).send().await;
    assert!(cleartext.map_or(true, |r| r.status().as_u16() != 201), "no card over plain HTTP");
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 2, "the paid card and the one stored with the token");
    env.finish().await;
}

/// Production's links for services in live mode: the broker over amqps (a
/// TLS front signed by the test CA) as each service's own broker user,
/// PostgreSQL with `sslmode=verify-full` as its own role (roles.sql applied;
/// the server's certificate trusted through SSL_CERT_FILE).
struct Live {
    front: TlsFront,
    bundle: std::path::PathBuf,
    port: u16,
    vhost: String,
    db_name: String,
}

impl Live {
    async fn new(env: &TestEnv, ca: &TestCa) -> Live {
        let front = TlsFront::start(&ca.leaf("rabbitmq"), "127.0.0.1:5672".parse().unwrap()).await;
        let bundle = std::env::temp_dir().join(format!("ps-trust-{}.pem", uuid::Uuid::new_v4().simple()));
        let server_cert =
            std::fs::read_to_string("/etc/ssl/certs/ssl-cert-snakeoil.pem").expect("PostgreSQL's certificate (Debian's snakeoil)");
        std::fs::write(&bundle, format!("{}\n{server_cert}", std::fs::read_to_string(ca.ca_file()).unwrap())).unwrap();
        let c = env.pool.get().await.unwrap();
        c.batch_execute(include_str!("../../../deploy/postgres/roles.sql")).await.expect("roles.sql applies");
        let port = front.port;
        Live {
            front,
            bundle,
            port,
            vhost: env.vhost.clone().expect("live links need a test in its own vhost"),
            db_name: env.db_name.clone(),
        }
    }

    /// The variables of a live-mode service running as `broker` and database `role`.
    fn vars(&self, broker: &integration_tests::peers::BrokerUser, role: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PS_MODE", "live".to_owned()),
            ("AMQP_URL", format!("amqps://{}:{}@localhost:{}/{}", broker.name, broker.password, self.port, self.vhost)),
            ("DATABASE_URL", format!("postgres://{role}@localhost:5432/{}?sslmode=verify-full", self.db_name)),
            ("SSL_CERT_FILE", self.bundle.display().to_string()),
            ("DATABASE_MIGRATE", "false".to_owned()),
            ("CHECKOUT_BASE_URL", "https://pay.example.com".to_owned()),
        ]
    }

    /// Stops the services and drops the roles roles.sql made (they are cluster-wide).
    async fn finish(self, mut env: TestEnv, extra_roles: &[&str]) {
        env.stop_services().await;
        let _ = std::fs::remove_file(&self.bundle);
        let roles = ["ps_intake", "ps_checkout", "ps_gateway", "ps_lifecycle", "ps_webhooks", "ps_scheduler", "ps_api"];
        let c = env.pool.get().await.unwrap();
        for r in roles {
            c.batch_execute(&format!("DROP OWNED BY {r}")).await.unwrap();
        }
        drop(c);
        let (admin, conn) = tokio_postgres::connect(&integration_tests::admin_database_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        env.finish().await;
        for r in roles.iter().chain(extra_roles) {
            // Roles are cluster-wide: another test's database may still grant them something.
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
        }
    }
}

fn pairs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Live mode as production runs it: amqps as the service's own broker user,
/// PostgreSQL with `sslmode=verify-full` as the service's own role (the
/// server's certificate trusted through SSL_CERT_FILE), https session URLs.
/// A role no grant binds (a superuser) stops it at start.
#[tokio::test]
async fn intake_runs_in_live_mode_over_tls_as_its_own_users_and_refuses_a_superuser() {
    let ca = TestCa::new();
    let mut env = TestEnv::in_vhost().await;
    let live = Live::new(&env, &ca).await;
    let user = integration_tests::peers::BrokerUser::create(&env, "ps-intake", &[]);
    let superuser = format!("ps_root_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    env.pool.get().await.unwrap().batch_execute(&format!("CREATE ROLE {superuser} LOGIN SUPERUSER")).await.unwrap();
    let refused = {
        let vars = live.vars(&user, &superuser);
        let config = session_intake::IntakeConfig::from_env(&env.env_with(&pairs(&vars))).expect("a superuser's URL looks like any other");
        session_intake::start(config, tokio_util::sync::CancellationToken::new()).await.err().expect("a superuser is refused at start")
    };
    assert!(refused.to_string().contains("superuser"), "{refused}");

    env.start_intake_with(&pairs(&live.vars(&user, "ps_intake"))).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    assert_eq!((s["status"].as_str(), s["mode"].as_str()), (Some("active"), Some("live")), "{s}");
    assert!(s["session_url"].as_str().unwrap().starts_with("https://pay.example.com/pay/"), "{s}");
    assert!(live.front.handshakes() >= 1, "intake reached the broker over TLS");
    let encrypted =
        env.count("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'ps_intake'").await;
    assert!(encrypted >= 1, "intake's database connections are encrypted");
    live.finish(env, &[&superuser]).await;
}

/// The HTTP API as production runs it: live mode, https on its own
/// listener, its own broker user and database role, a live key; a test key
/// gets nothing, and plain HTTP gets no answer.
#[tokio::test]
async fn the_api_serves_live_keys_over_https_in_live_mode() {
    let ca = TestCa::new();
    let mut env = TestEnv::in_vhost().await;
    let live = Live::new(&env, &ca).await;
    let intake = integration_tests::peers::BrokerUser::create(&env, "ps-intake", &[]);
    let api_user = integration_tests::peers::BrokerUser::create(&env, "ps-api", &[]);
    env.start_intake_with(&pairs(&live.vars(&intake, "ps_intake"))).await;
    let leaf = ca.leaf("api");
    let mut vars = live.vars(&api_user, "ps_api");
    vars.push(("API_TLS_CERT_FILE", leaf.cert_file.display().to_string()));
    vars.push(("API_TLS_KEY_FILE", leaf.key_file.display().to_string()));
    let api = env.start_api(&pairs(&vars)).await.replace("http://127.0.0.1", "https://localhost");
    env.psctl(&["merchants", "grant", &api_user.name, "shop"]);
    let live_key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "live"]).trim().to_owned();
    let test_key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    assert!(live_key.starts_with("sk_") && !live_key.starts_with("sk_test_"));

    let trust = Trust::with_ca_file(std::path::Path::new(&ca.ca_file())).unwrap();
    let https = reqwest::Client::builder().tls_backend_preconfigured(trust.client_config().unwrap()).build().unwrap();
    let url = format!("{api}/collect/payment_sessions");
    let post = |key: &str, idem: &str| https.post(&url).bearer_auth(key).header("idempotency-key", idem).json(&one_time()).send();
    let r = post(&live_key, "live-1").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!((s["mode"].as_str(), s["status"].as_str()), (Some("live"), Some("active")), "{s}");
    let r = post(&test_key, "live-2").await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "a test key never reaches live mode");
    let cleartext = reqwest::Client::new().post(url.replace("https://", "http://")).bearer_auth(&live_key).json(&one_time()).send().await;
    assert!(cleartext.map_or(true, |r| r.status().as_u16() != 200), "no answer over plain HTTP");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    let encrypted =
        env.count("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'ps_api'").await;
    assert!(encrypted >= 1, "the API's database connections are encrypted");
    live.finish(env, &[]).await;
}
