//! `psctl keys`: the HTTP API's keys (DESIGN §12). A key is printed once, when
//! made; the database keeps only its id and a hash.

use crate::out::Out;
use clap::Subcommand;
use ps_contract::ids::MerchantId;
use ps_contract::session::Mode;
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Make a key for MERCHANT and print it, once (stdout): sk_test_… or sk_….
    Create {
        #[arg(long)]
        merchant: String,
        /// test or live: a test key is refused by a live deployment, and the other way round.
        #[arg(long)]
        mode: String,
    },
    /// From now on the key authenticates nobody.
    Revoke { id: String },
    /// Keys (ids, never secrets), newest first.
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
}

pub async fn run(action: KeysCmd, c: &deadpool_postgres::Client, out: &Out) -> Result<()> {
    match action {
        KeysCmd::Create { merchant, mode } => {
            let merchant = MerchantId::parse(&merchant).map_err(|e| e.message)?;
            let mode = Mode::parse(&mode).ok_or_else(|| format!("--mode {mode:?} is neither test nor live"))?;
            let made = ps_store::api_keys::create(c, &merchant, mode).await?;
            eprintln!("psctl: key {} for {merchant} ({mode}); it is shown this once and cannot be shown again", made.id);
            println!("{}", made.key.expose());
        }
        KeysCmd::Revoke { id } => {
            if !ps_store::api_keys::revoke(c, &id).await? {
                return Err(format!("no key {id}").into());
            }
            eprintln!("psctl: key {id} revoked");
        }
        KeysCmd::List { merchant } => {
            let rows: Vec<Value> = ps_store::api_keys::list(c, merchant.as_deref())
                .await?
                .into_iter()
                .map(|k| {
                    json!({"id": k.id, "merchant_id": k.merchant_id, "mode": k.mode, "created_at": k.created_at.to_rfc3339(),
                           "revoked_at": k.revoked_at.map(|t| t.to_rfc3339())})
                })
                .collect();
            out.rows(&["id", "merchant_id", "mode", "created_at", "revoked_at"], &rows);
        }
    }
    Ok(())
}
