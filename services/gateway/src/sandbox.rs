//! The sandbox processor (DESIGN §7): deterministic by card number, with a
//! ledger of its own keyed by idempotency key, and configurable latency.

use crate::card::{self, AfterAuthentication, OffSession, SandboxBehaviour};
use crate::processor::{CardData, Processor, ProcessorError, ProcessorRequest, ProcessorResponse, Tokenized};
use crate::vault;
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use ps_contract::internal::{ActionKind, NextAction, Operation, Outcome};
use ps_runtime::sealing::Keyring;
use std::time::Duration;

pub struct SandboxProcessor {
    pool: Pool,
    /// Opens the vault's card numbers.
    keys: Keyring,
    /// Added after the ledger is written, as a slow network would: a caller that
    /// times out sees an unknown outcome that `lookup` can resolve.
    latency: Duration,
}

impl SandboxProcessor {
    pub fn new(pool: Pool, keys: Keyring, latency: Duration) -> SandboxProcessor {
        SandboxProcessor { pool, keys, latency }
    }

    async fn stored(&self, client: &deadpool_postgres::Client, key: &str) -> Result<Option<ProcessorResponse>, ProcessorError> {
        let stmt = client
            .prepare_cached(
                "SELECT outcome, error_code, decline_code, reference, card_token, leaves_open FROM sandbox_ledger WHERE idempotency_key = $1",
            )
            .await
            .map_err(err)?;
        let row = client.query_opt(&stmt, &[&key]).await.map_err(err)?;
        let Some(r) = row else { return Ok(None) };
        let token: Option<String> = r.get(4);
        let card = match token {
            Some(t) => vault::card_for_token(client, &self.keys, &t).await.map_err(err)?.map(|c| c.summary),
            None => None,
        };
        let outcome = Outcome::parse(r.get(0)).ok_or_else(|| err("the ledger holds an outcome it cannot hold"))?;
        Ok(Some(ProcessorResponse {
            outcome,
            error_code: r.get(1),
            decline_code: r.get(2),
            reference: r.get(3),
            card,
            // The sandbox's issuer asks on a page of our own.
            next_action: (outcome == Outcome::RequiresAction)
                .then_some(NextAction { kind: ActionKind::SandboxChallenge, client_secret: None }),
            authorization_open: r.get(5),
        }))
    }

    async fn decide(
        &self,
        client: &deadpool_postgres::Client,
        req: &ProcessorRequest<'_>,
        card: Option<&vault::VaultedCard>,
    ) -> Result<Decision, ProcessorError> {
        let fail = |e, d| {
            Ok(Decision {
                outcome: Outcome::Failed,
                error_code: Some(e),
                decline_code: Some(d),
                refunds_fail: false,
                after_auth: None,
                leaves_open: false,
            })
        };
        let succeed = |refunds_fail| {
            Ok(Decision {
                outcome: Outcome::Succeeded,
                error_code: None,
                decline_code: None,
                refunds_fail,
                after_auth: None,
                leaves_open: false,
            })
        };
        match req.operation {
            Operation::Authorize => {
                if req.card_token.is_none() {
                    return fail("processing_error", "missing_card");
                }
                let Some(card) = card else { return fail("processing_error", "unknown_card_token") };
                let Some(pan) = card.pan.as_ref() else { return fail("processing_error", "card_data_deleted") };
                match card::sandbox_behaviour(pan.expose()) {
                    SandboxBehaviour::Succeeds => succeed(false),
                    // Kept with the charge: the number may be forgotten before a refund comes.
                    SandboxBehaviour::RefundsFail => succeed(true),
                    SandboxBehaviour::SucceedsOnlyWithCustomerPresent if req.customer_present => succeed(false),
                    SandboxBehaviour::SucceedsOnlyWithCustomerPresent => fail("card_declined", "generic_decline"),
                    SandboxBehaviour::SettlementFailsOnce => succeed(false),
                    SandboxBehaviour::Declines { error_code, decline_code } => fail(error_code, decline_code),
                    // The issuer asks the customer first; what it then does is kept for the challenge's end.
                    SandboxBehaviour::Authenticates { then, .. } if req.customer_present => Ok(Decision {
                        outcome: Outcome::RequiresAction,
                        error_code: None,
                        decline_code: None,
                        refunds_fail: false,
                        after_auth: Some(then),
                        leaves_open: false,
                    }),
                    SandboxBehaviour::Authenticates { off_session: OffSession::PaysOnceSetUp, then: AfterAuthentication::Pays } => {
                        succeed(false)
                    }
                    SandboxBehaviour::Authenticates { .. } => fail(card::AUTHENTICATION_REQUIRED, card::AUTHENTICATION_REQUIRED),
                }
            }
            Operation::Capture | Operation::Void => {
                let Some(auth) = req.authorization_key else { return fail("processing_error", "missing_authorization") };
                let row = client
                    .query_opt(
                        "SELECT outcome, amount, card_token FROM sandbox_ledger WHERE idempotency_key = $1 AND operation = 'authorize'",
                        &[&auth],
                    )
                    .await
                    .map_err(err)?;
                // The sandbox allows several captures (as multicapture does):
                // what went through so far, and whether any of it closed the
                // authorisation (a void, or a capture that did not leave it open).
                let attempt = auth.trim_start_matches("authorize:");
                let so_far = client
                    .query_one(
                        "SELECT coalesce(sum(amount) FILTER (WHERE operation = 'capture'), 0)::bigint,
                                coalesce(bool_or(operation = 'void' OR NOT leaves_open), false)
                         FROM sandbox_ledger WHERE (idempotency_key LIKE $1 OR idempotency_key LIKE $2) AND outcome = 'succeeded'",
                        &[&format!("capture:{attempt}:%"), &format!("void:{attempt}:%")],
                    )
                    .await
                    .map_err(err)?;
                let (captured, closed): (i64, bool) = (so_far.get(0), so_far.get(1));
                if let Some(token) = row.as_ref().and_then(|r| r.get::<_, Option<String>>(2)) {
                    if self.settlement_hiccups(client, &token, attempt).await? {
                        return fail("processing_error", "try_again_later");
                    }
                }
                let Some(r) = row.filter(|r| r.get::<_, &str>(0) == "succeeded") else {
                    return fail("processing_error", "no_authorization");
                };
                let open = r.get::<_, i64>(1) - captured;
                if closed {
                    return fail("processing_error", "already_settled");
                }
                if req.operation == Operation::Void {
                    return succeed(false);
                }
                if req.amount > open {
                    return fail("processing_error", "amount_too_large");
                }
                Ok(Decision { leaves_open: !req.final_capture && req.amount < open, ..succeed(false)? })
            }
            Operation::Refund => {
                let Some(auth) = req.authorization_key else { return fail("processing_error", "missing_authorization") };
                let charge = client
                    .query_opt(
                        "SELECT amount, refunds_fail FROM sandbox_ledger
                         WHERE idempotency_key = $1 AND operation = 'authorize' AND outcome = 'succeeded'",
                        &[&auth],
                    )
                    .await
                    .map_err(err)?;
                let Some(charge) = charge else { return fail("processing_error", "no_charge") };
                if charge.get::<_, bool>(1) {
                    return fail("refund_failed", "expired_or_canceled_card");
                }
                // What was taken: what captures took, nothing after a void of
                // an uncaptured authorisation, else the authorisation itself
                // (captured with it, automatically).
                let attempt = auth.trim_start_matches("authorize:");
                let settled = client
                    .query_one(
                        "SELECT coalesce(sum(amount) FILTER (WHERE operation = 'capture'), 0)::bigint, count(*) FILTER (WHERE operation = 'capture'),
                                count(*) FILTER (WHERE operation = 'void')
                         FROM sandbox_ledger WHERE (idempotency_key LIKE $1 OR idempotency_key LIKE $2) AND outcome = 'succeeded'",
                        &[&format!("capture:{attempt}:%"), &format!("void:{attempt}:%")],
                    )
                    .await
                    .map_err(err)?;
                let taken = match (settled.get::<_, i64>(1), settled.get::<_, i64>(2)) {
                    (0, 0) => charge.get::<_, i64>(0),
                    (0, _) => 0,
                    _ => settled.get::<_, i64>(0),
                };
                let refunded: i64 = client
                    .query_one(
                        "SELECT coalesce(sum(amount), 0)::bigint FROM sandbox_ledger
                         WHERE authorization_key = $1 AND operation = 'refund' AND outcome = 'succeeded'",
                        &[&auth],
                    )
                    .await
                    .map_err(err)?
                    .get(0);
                if refunded + req.amount > taken {
                    return fail("processing_error", "refund_exceeds_charge");
                }
                succeed(false)
            }
        }
    }
}

/// What the sandbox does with one call.
struct Decision {
    outcome: Outcome,
    error_code: Option<&'static str>,
    decline_code: Option<&'static str>,
    /// An authorisation whose later refunds fail (`4000000000005126`).
    refunds_fail: bool,
    /// A challenge's end: what the issuer does once the customer authenticates.
    after_auth: Option<AfterAuthentication>,
    /// A capture that kept the rest of the authorisation open.
    leaves_open: bool,
}

impl SandboxProcessor {
    /// The first settlement of a `SettlementFailsOnce` card's payment fails.
    async fn settlement_hiccups(&self, client: &deadpool_postgres::Client, token: &str, attempt: &str) -> Result<bool, ProcessorError> {
        let Some(card) = vault::card_for_token(client, &self.keys, token).await.map_err(err)? else { return Ok(false) };
        if card.pan.is_none_or(|pan| card::sandbox_behaviour(pan.expose()) != SandboxBehaviour::SettlementFailsOnce) {
            return Ok(false);
        }
        let tried = client
            .query_opt(
                "SELECT 1 FROM sandbox_ledger WHERE idempotency_key LIKE $1 OR idempotency_key LIKE $2 LIMIT 1",
                &[&format!("capture:{attempt}:%"), &format!("void:{attempt}:%")],
            )
            .await
            .map_err(err)?;
        Ok(tried.is_none())
    }
}

fn err(e: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::unavailable(e)
}

impl Processor for SandboxProcessor {
    fn execute<'a>(&'a self, req: ProcessorRequest<'a>) -> BoxFuture<'a, Result<ProcessorResponse, ProcessorError>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(err)?;
            // Decided first and recorded by one insert that a call already
            // made under the key loses: then that call's answer is the answer.
            let card = match (req.operation, req.card_token) {
                (Operation::Authorize, Some(token)) => vault::card_for_token(&client, &self.keys, token).await.map_err(err)?,
                _ => None,
            };
            let Decision { outcome, error_code, decline_code, refunds_fail, after_auth, leaves_open } =
                self.decide(&client, &req, card.as_ref()).await?;
            let (after_outcome, after_error, after_decline) = match after_auth {
                None => (None, None, None),
                Some(AfterAuthentication::Pays) => (Some(Outcome::Succeeded.as_str()), None, None),
                Some(AfterAuthentication::Declines { error_code, decline_code }) => {
                    (Some(Outcome::Failed.as_str()), Some(error_code), Some(decline_code))
                }
            };
            let reference = format!("sbx_{}", uuid_like(req.key));
            // A concurrent call with the same key loses the insert and returns the winner's row.
            let insert = client
                .prepare_cached(
                    "INSERT INTO sandbox_ledger (idempotency_key, operation, card_token, amount, currency, outcome, error_code, decline_code,
                         reference, authorization_key, refunds_fail, after_auth_outcome, after_auth_error_code, after_auth_decline_code, leaves_open)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (idempotency_key) DO NOTHING
                     RETURNING outcome",
                )
                .await
                .map_err(err)?;
            let inserted = client
                .query_opt(
                    &insert,
                    &[
                        &req.key,
                        &req.operation.as_str(),
                        &req.card_token,
                        &req.amount,
                        &req.currency.code(),
                        &outcome.as_str(),
                        &error_code,
                        &decline_code,
                        &reference,
                        &req.authorization_key,
                        &refunds_fail,
                        &after_outcome,
                        &after_error,
                        &after_decline,
                        &leaves_open,
                    ],
                )
                .await
                .map_err(err)?;
            let response = match inserted {
                Some(_) => ProcessorResponse {
                    outcome,
                    error_code: error_code.map(str::to_owned),
                    decline_code: decline_code.map(str::to_owned),
                    reference,
                    card: card.map(|c| c.summary),
                    next_action: (outcome == Outcome::RequiresAction)
                        .then_some(NextAction { kind: ActionKind::SandboxChallenge, client_secret: None }),
                    authorization_open: leaves_open,
                },
                None => {
                    tracing::info!(key = req.key, "sandbox: idempotent replay, no new charge");
                    self.stored(&client, req.key).await?.ok_or_else(|| err("ledger row vanished"))?
                }
            };
            drop(client);
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            Ok(response)
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(err)?;
            self.stored(&client, key).await
        })
    }

    /// The sandbox's issuer takes the customer's word: the challenge is ours.
    /// Once: a second answer finds the call decided and changes nothing.
    fn authenticate<'a>(&'a self, key: &'a str, completed: bool) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(err)?;
            let decide = client
                .prepare_cached(
                    "UPDATE sandbox_ledger SET
                         outcome = CASE WHEN $2 THEN after_auth_outcome ELSE 'failed' END,
                         error_code = CASE WHEN $2 THEN after_auth_error_code ELSE 'card_declined' END,
                         decline_code = CASE WHEN $2 THEN after_auth_decline_code ELSE $3 END
                     WHERE idempotency_key = $1 AND outcome = 'requires_action'",
                )
                .await
                .map_err(err)?;
            client.execute(&decide, &[&key, &completed, &card::AUTHENTICATION_FAILED]).await.map_err(err)?;
            self.stored(&client, key).await
        })
    }

    fn tokenize<'a>(&'a self, _: CardData<'a>, _: &'a str) -> BoxFuture<'a, Result<Tokenized, ProcessorError>> {
        Box::pin(async { Ok(Tokenized::Nothing) })
    }
}

/// A stable reference per key, as a processor's charge id would be.
fn uuid_like(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    format!("{:016x}", h.finish())
}
