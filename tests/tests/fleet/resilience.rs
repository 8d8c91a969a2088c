//! What production does to us: redelivery, a crash between commit and ack.

use integration_tests::{seed_mandate, Command, TestEnv, WAIT};
use ps_contract::routing::header;
use ps_runtime::topology;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

fn one_time() -> Value {
    serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-one_time.json")).unwrap()
}

fn duplicates_seen() -> u64 {
    ps_runtime::metrics::MESSAGES.with_label_values(&[topology::INTAKE.name, "duplicate"]).get()
}

#[tokio::test]
async fn a_republished_message_is_applied_once_and_answered_again() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let (cus, pm, _) = seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let body = json!({"type": "next_in_series", "amount": 700, "currency": "ZAR", "customer_id": cus, "payment_method_id": pm});
    let cmd = || Command::create("gym", &body).message_id("msg-1").header(header::IDEMPOTENCY_KEY, "k-1");
    let first = env.call(cmd()).await;
    let second = env.call(cmd()).await;
    assert_eq!(first.body["id"], second.body["id"]);
    assert!(second.replayed);
    assert_eq!(duplicates_seen(), 1, "the second delivery was recognised by its message id");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 1, "one charge requested, not two");
    assert_eq!(env.count("SELECT count(*) FROM outbox WHERE routing_key = 'gateway.authorize'").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn killed_between_commit_and_ack_the_redelivery_creates_nothing_new() {
    let mut env = TestEnv::new().await;
    let child = env.spawn_binary("session-intake", &[("PS_FAULT_ABORT_AFTER_COMMIT", "true")]);
    let pid = child.id();
    let corr = env.send(Command::create("shop_1", &one_time()).message_id("crash-1")).await;

    // The process commits, then dies before it can ack.
    let status = {
        let child = env_child_wait(&mut env, pid).await;
        child
    };
    assert_eq!(status.signal(), Some(6), "intake aborted (SIGABRT) after its commit: {status:?}");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "the commit happened");
    assert_eq!(env.count("SELECT count(*) FROM processed_messages").await, 1);

    // The broker still holds the unacked message and hands it to the next instance.
    env.start_intake().await;
    let reply = env.reply(&corr).await;
    assert_eq!(reply.body["status"], "active", "the reply written before the crash is delivered: {}", reply.body);
    let deadline = tokio::time::Instant::now() + WAIT;
    while duplicates_seen() < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the redelivery never arrived");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "the redelivery created nothing");
    assert_eq!(env.count("SELECT count(*) FROM customers").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM outbox WHERE routing_key = 'payment_session.created'").await, 1);
    let event = env.next_event().await;
    assert_eq!(event["data"]["id"], reply.body["id"]);
    env.finish().await;
}

/// Waits for the child with `pid` to exit, without blocking the runtime.
async fn env_child_wait(env: &mut TestEnv, pid: u32) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = env.try_wait_child(pid) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "intake did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
