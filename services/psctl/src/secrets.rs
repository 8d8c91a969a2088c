//! `psctl secrets rewrap`: every sealed value, re-sealed under the active key
//! and bound to its row (DESIGN §10). Values an earlier version sealed bound
//! only to their column (`ps1:`) open here, and only here, to be re-sealed.
//! Each table in one transaction, rows locked, so services keep running.

use ps_runtime::sealing::{context, sealed_json, At, Keyring};
use serde_json::Value;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// (what, how many values were re-sealed).
pub async fn rewrap(c: &mut deadpool_postgres::Client, keys: &Keyring) -> Result<Vec<(&'static str, usize)>> {
    let mut done = Vec::new();

    let tx = c.transaction().await?;
    let mut n = 0;
    for r in tx.query("SELECT id, secret, previous_secret FROM webhook_endpoints FOR UPDATE", &[]).await? {
        let id: &str = r.get(0);
        let at = At::webhook_secret(id);
        let secret = keys.rewrap(&at, context::WEBHOOK_SECRET, r.get(1))?;
        let previous = match r.get::<_, Option<&str>>(2) {
            Some(p) => keys.rewrap(&at, context::WEBHOOK_SECRET, p)?,
            None => None,
        };
        n += secret.is_some() as usize + previous.is_some() as usize;
        if secret.is_some() || previous.is_some() {
            tx.execute(
                "UPDATE webhook_endpoints SET secret = coalesce($2, secret), previous_secret = coalesce($3, previous_secret) WHERE id = $1",
                &[&id, &secret, &previous],
            )
            .await?;
        }
    }
    tx.commit().await?;
    done.push(("webhook_endpoints.secret", n));

    let tx = c.transaction().await?;
    let mut n = 0;
    for r in tx.query("SELECT token, pan_sealed FROM vault_cards WHERE pan_sealed IS NOT NULL FOR UPDATE", &[]).await? {
        let token: &str = r.get(0);
        if let Some(new) = keys.rewrap(&At::card_number(token), context::CARD_NUMBER, r.get(1))? {
            tx.execute("UPDATE vault_cards SET pan_sealed = $2 WHERE token = $1", &[&token, &new]).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    done.push(("vault_cards.pan_sealed", n));

    // Replies: sealed ones under the new key, bound to their row; clear ones that
    // carry a signing secret (written before sealing) sealed.
    let reply = |at: &At, stored: Value| -> Result<Option<Value>> {
        Ok(match sealed_json(&stored) {
            Some(s) => keys.rewrap(at, context::LEGACY_REPLY, s)?.map(|new| serde_json::json!({ "$sealed": new })),
            None if stored.get("secret").and_then(Value::as_str).is_some() => Some(keys.seal_json(at, &stored)),
            None => None,
        })
    };
    // Both tables that keep replies, keyed by two text columns.
    type Binding = fn(&str, &str) -> At;
    let tables: [(&str, &str, &str, Binding, &'static str); 2] = [
        ("idempotency_keys", "merchant_id", "key", At::idempotency_reply, context::IDEMPOTENCY_REPLY),
        ("processed_messages", "consumer", "message_key", At::dedupe_reply, context::DEDUPE_REPLY),
    ];
    for (table, k1, k2, at, what) in tables {
        let tx = c.transaction().await?;
        let mut n = 0;
        let select = format!("SELECT {k1}, {k2}, reply FROM {table} WHERE reply IS NOT NULL FOR UPDATE");
        let update = format!("UPDATE {table} SET reply = $3 WHERE {k1} = $1 AND {k2} = $2");
        for r in tx.query(select.as_str(), &[]).await? {
            let (a, b): (&str, &str) = (r.get(0), r.get(1));
            if let Some(new) = reply(&at(a, b), r.get(2))? {
                tx.execute(update.as_str(), &[&a, &b, &new]).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        done.push((what, n));
    }

    // What consumed messages sent, kept in their records: each sealed body.
    let tx = c.transaction().await?;
    let mut n = 0;
    let kept = "SELECT consumer, message_key, outgoing FROM processed_messages
                WHERE outgoing IS NOT NULL AND jsonb_path_exists(outgoing, '$[*] ? (@.sealed == true)') FOR UPDATE";
    for r in tx.query(kept, &[]).await? {
        let (consumer, key, mut outgoing): (&str, &str, Value) = (r.get(0), r.get(1), r.get(2));
        let mut changed = false;
        for (i, m) in outgoing.as_array_mut().into_iter().flatten().enumerate() {
            if m["sealed"] != true {
                continue;
            }
            let at = At::dedupe_outgoing(consumer, key, i, m["exchange"].as_str().unwrap_or(""), m["routing_key"].as_str().unwrap_or(""));
            if let Some(new) = keys.rewrap(&at, context::DEDUPE_OUTGOING, m["body"].as_str().unwrap_or(""))? {
                m["body"] = Value::String(new);
                changed = true;
                n += 1;
            }
        }
        if changed {
            tx.execute(
                "UPDATE processed_messages SET outgoing = $3 WHERE consumer = $1 AND message_key = $2",
                &[&consumer, &key, &outgoing],
            )
            .await?;
        }
    }
    tx.commit().await?;
    done.push(("processed_messages.outgoing", n));

    let tx = c.transaction().await?;
    let mut n = 0;
    let pending = "SELECT id, body, sealed, producer, exchange, routing_key, message_id FROM outbox
                   WHERE sealed OR (kind = 'reply' AND position('whsec_' in convert_from(body, 'UTF8')) > 0) FOR UPDATE";
    for r in tx.query(pending, &[]).await? {
        let body: &[u8] = r.get(1);
        let at = At::outbox_body(r.get(3), r.get(4), r.get(5), r.get(6));
        let new = if r.get::<_, bool>(2) {
            keys.rewrap(&at, context::OUTBOX_BODY, std::str::from_utf8(body)?)?
        } else {
            Some(keys.seal(&at, body))
        };
        if let Some(new) = new {
            tx.execute("UPDATE outbox SET body = $2, sealed = true WHERE id = $1", &[&r.get::<_, i64>(0), &new.into_bytes()]).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    done.push(("outbox.body", n));
    Ok(done)
}
