//! The batched consumer (issue 10): messages already waiting share one
//! transaction, each under a savepoint, acked only after its commit.

use integration_tests::{close_broker_connections, eventually, Command, TestEnv};
use ps_runtime::topology;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

fn one_time() -> Value {
    json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"})
}

fn batches_seen(queue: &str) -> u64 {
    ps_runtime::metrics::BATCH_SIZE.with_label_values(&[queue]).get_sample_count()
}

/// A message that fails (here, a handler that panics) in the middle of a batch
/// is rolled back alone: its neighbours commit, it is dead-lettered with its
/// reason and its sender answered.
#[tokio::test]
async fn a_poison_message_in_the_middle_of_a_batch_fails_alone() {
    let mut env = TestEnv::new().await;
    // Commands that change something (reads are never recorded): each is refused, and recorded once.
    let retrieve = |i: usize| Command::new("mandate.revoke", &json!({"mandate_id": format!("md_{:026}", i)})).header("merchant-id", "shop");
    // Waiting before lifecycle starts, so they arrive together.
    let mut cmds: Vec<Command> = (0..7).map(retrieve).collect();
    cmds.push(
        Command::new("payment_session.cancel", &json!({"payment_session_id": format!("ps_{:026}", 99)})).header("merchant-id", "shop"),
    );
    cmds.extend((7..14).map(retrieve));
    let corrs = env.send_many(cmds).await;
    env.start_lifecycle(&[("PS_FAULT_PANIC_ON", "payment_session.cancel"), ("AMQP_PREFETCH", "32"), ("CONSUMER_BATCH", "16")]).await;
    for (i, corr) in corrs.iter().enumerate() {
        let r = env.reply(corr).await;
        let expected = if i == 7 { "internal_error" } else { "mandate_not_found" };
        assert_eq!(r.error_code(), Some(expected), "{i}: {}", r.body);
    }
    let (_, headers) = env.next_dead_letter(&topology::LIFECYCLE).await;
    let reason = ps_runtime::message::header_str(Some(&headers), "x-dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("panicked"), "{reason}");
    assert!(batches_seen(topology::LIFECYCLE.name) >= 1, "the messages were applied as a batch");
    assert_eq!(env.count("SELECT count(*) FROM processed_messages").await, 15, "each applied once");
    env.finish().await;
}

/// A batch committed and then the process killed before its acks: every
/// message comes back, is recognised, and answered with what was committed.
#[tokio::test]
async fn killed_after_a_batchs_commit_before_its_acks_nothing_is_applied_twice() {
    let mut env = TestEnv::new().await;
    let corrs = env.send_many((0..12).map(|i| Command::create("shop", &one_time()).message_id(&format!("batch-{i}"))).collect()).await;
    let child = env.spawn_binary("session-intake", &[("PS_FAULT_ABORT_AFTER_BATCH_COMMIT", "true"), ("CONSUMER_BATCH", "16")]);
    let pid = child.id();
    let status = env.wait_child(pid).await;
    assert_eq!(status.signal(), Some(6), "intake aborted after a batch's commit: {status:?}");
    let committed = env.count("SELECT count(*) FROM payment_sessions").await;
    assert!(committed >= 2, "a batch was committed ({committed} sessions)");

    env.start_intake().await;
    let mut ids = std::collections::HashSet::new();
    for corr in &corrs {
        let r = env.reply(corr).await;
        ids.insert(r.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 12);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 12, "nothing applied twice");
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment_session.created'").await, 12);
    env.finish().await;
}

/// The broker connection cut while batches are being applied: whatever was
/// committed and not acked comes back and is recognised; nothing is lost.
#[tokio::test]
async fn batches_across_a_broker_reconnect_lose_nothing_and_apply_nothing_twice() {
    let mut env = TestEnv::new().await;
    let corrs = env.send_many((0..300).map(|i| Command::create("shop", &one_time()).message_id(&format!("rc-{i}"))).collect()).await;
    let reconnects = ps_runtime::metrics::BROKER_RECONNECTS.get();
    env.start_intake().await;
    env.wait_for_count("SELECT count(*) FROM payment_sessions", 20).await;
    assert_eq!(close_broker_connections(&format!("session-intake {}", env.prefix)), 1);
    eventually("intake to reconnect", || ps_runtime::metrics::BROKER_RECONNECTS.get() > reconnects).await;
    for corr in &corrs {
        assert!(env.reply(corr).await.body["id"].is_string());
    }
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 300);
    assert!(batches_seen(topology::INTAKE.name) >= 1);
    env.finish().await;
}
