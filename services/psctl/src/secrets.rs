//! `psctl secrets rewrap`: every sealed column, re-sealed under the active key.
//! Each table in one transaction, rows locked, so services keep running.

use ps_runtime::sealing::{context, sealed_json, Keyring};
use serde_json::Value;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// (what, how many values were re-sealed).
pub async fn rewrap(c: &mut deadpool_postgres::Client, keys: &Keyring) -> Result<Vec<(&'static str, usize)>> {
    let mut done = Vec::new();

    let tx = c.transaction().await?;
    let mut n = 0;
    for r in tx.query("SELECT id, secret, previous_secret FROM webhook_endpoints FOR UPDATE", &[]).await? {
        let id: &str = r.get(0);
        let secret = keys.rewrap(context::WEBHOOK_SECRET, r.get(1))?;
        let previous = match r.get::<_, Option<&str>>(2) {
            Some(p) => keys.rewrap(context::WEBHOOK_SECRET, p)?,
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
        if let Some(new) = keys.rewrap(context::CARD_NUMBER, r.get(1))? {
            tx.execute("UPDATE vault_cards SET pan_sealed = $2 WHERE token = $1", &[&r.get::<_, &str>(0), &new]).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    done.push(("vault_cards.pan_sealed", n));

    // Replies: sealed ones under the new key; clear ones that carry a signing secret (written before sealing) sealed.
    let reply = |stored: Value| -> Result<Option<Value>> {
        Ok(match sealed_json(&stored) {
            Some(s) => keys.rewrap(context::REPLY, s)?.map(|new| serde_json::json!({ "$sealed": new })),
            None if stored.get("secret").and_then(Value::as_str).is_some() => Some(keys.seal_json(context::REPLY, &stored)),
            None => None,
        })
    };
    // Both tables that keep replies, keyed by two text columns.
    for (table, k1, k2) in [("idempotency_keys", "merchant_id", "key"), ("processed_messages", "consumer", "message_key")] {
        let tx = c.transaction().await?;
        let mut n = 0;
        let select = format!("SELECT {k1}, {k2}, reply FROM {table} WHERE reply IS NOT NULL FOR UPDATE");
        let update = format!("UPDATE {table} SET reply = $3 WHERE {k1} = $1 AND {k2} = $2");
        for r in tx.query(select.as_str(), &[]).await? {
            if let Some(new) = reply(r.get(2))? {
                tx.execute(update.as_str(), &[&r.get::<_, &str>(0), &r.get::<_, &str>(1), &new]).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        done.push((if table == "idempotency_keys" { "idempotency_keys.reply" } else { "processed_messages.reply" }, n));
    }

    let tx = c.transaction().await?;
    let mut n = 0;
    for r in tx.query("SELECT id, body, sealed FROM outbox WHERE sealed OR (kind = 'reply' AND position('whsec_' in convert_from(body, 'UTF8')) > 0) FOR UPDATE", &[]).await? {
        let body: &[u8] = r.get(1);
        let text = std::str::from_utf8(body)?;
        let new = if r.get::<_, bool>(2) { keys.rewrap(context::OUTBOX_BODY, text)? } else { Some(keys.seal(context::OUTBOX_BODY, body)) };
        if let Some(new) = new {
            tx.execute("UPDATE outbox SET body = $2, sealed = true WHERE id = $1", &[&r.get::<_, i64>(0), &new.into_bytes()]).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    done.push(("outbox.body", n));
    Ok(done)
}
