//! `gateway.authorize`, `gateway.capture`, `gateway.void`, `gateway.refund` → processor → `gateway.result`.

use crate::calls::CallResult;
use crate::card;
use crate::processor::{Processor, ProcessorError, ProcessorRequest, ProcessorResponse, SaveFor};
use crate::vouch::{self, Vouched};
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::internal::{
    AuthenticateRequest, AuthorizeRequest, GatewayResult, Operation, Outcome, RefundRequest, ResolveRequest, SaveUsage, SettleRequest,
};
use ps_contract::routing::{exchange, header, internal};
use ps_contract::session::CaptureMethod;
use ps_runtime::{Admission, Handled, Handler, HandlerError, Incoming, Outbound};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an authorize, capture or void names, for answering it again.
struct Step<'a> {
    op: Operation,
    attempt: &'a ps_contract::ids::AttemptId,
    session: &'a ps_contract::ids::SessionId,
    merchant: &'a ps_contract::ids::MerchantId,
    amount: i64,
    currency: ps_contract::money::Currency,
    key: &'a str,
    refund: Option<&'a ps_contract::ids::RefundId>,
}

impl<'a> Step<'a> {
    fn authorize(r: &'a AuthorizeRequest) -> Step<'a> {
        Step {
            op: Operation::Authorize,
            attempt: &r.attempt_id,
            session: &r.session_id,
            merchant: &r.merchant_id,
            amount: r.amount,
            currency: r.currency,
            key: &r.processor_idempotency_key,
            refund: None,
        }
    }

    fn authenticate(r: &'a AuthenticateRequest, amount: i64, currency: ps_contract::money::Currency) -> Step<'a> {
        Step {
            op: Operation::Authorize,
            attempt: &r.attempt_id,
            session: &r.session_id,
            merchant: &r.merchant_id,
            amount,
            currency,
            key: &r.processor_idempotency_key,
            refund: None,
        }
    }

    fn refund(r: &'a RefundRequest) -> Step<'a> {
        Step {
            op: Operation::Refund,
            attempt: &r.attempt_id,
            session: &r.session_id,
            merchant: &r.merchant_id,
            amount: r.amount,
            currency: r.currency,
            key: &r.processor_idempotency_key,
            refund: Some(&r.refund_id),
        }
    }

    /// A settle request, or (with `Operation::Authorize`) a resolve request for the attempt's authorize.
    fn settle(op: Operation, r: &'a SettleRequest) -> Step<'a> {
        Step {
            op,
            attempt: &r.attempt_id,
            session: &r.session_id,
            merchant: &r.merchant_id,
            amount: r.amount,
            currency: r.currency,
            key: &r.processor_idempotency_key,
            refund: None,
        }
    }

    /// The step's `gateway.result`, from what the processor answered.
    fn answered(&self, resp: ProcessorResponse, card_token: Option<String>) -> GatewayResult {
        let message = resp.decline_code.as_deref().map(|d| card::decline_message(d).to_owned());
        GatewayResult {
            operation: self.op,
            attempt_id: self.attempt.clone(),
            session_id: self.session.clone(),
            merchant_id: self.merchant.clone(),
            outcome: resp.outcome,
            amount: self.amount,
            currency: self.currency,
            error_code: resp.error_code,
            decline_code: resp.decline_code,
            message,
            card: resp.card,
            card_token: if resp.outcome == Outcome::Succeeded { card_token } else { None },
            processor_reference: Some(resp.reference),
            processor_idempotency_key: self.key.to_owned(),
            refund_id: self.refund.cloned(),
            next_action: resp.next_action,
        }
    }
}

pub struct GatewayHandler {
    pub processor: Arc<dyn Processor>,
    pub timeout: Duration,
    /// Where each call is noted (processor_calls), beside the message's
    /// transaction: a call made is a fact even if that rolls back.
    pub calls: crate::calls::CallLog,
}

impl Handler for GatewayHandler {
    /// Internal work, from the services the consumer checked it came from
    /// (DESIGN §10); each request is then checked against its recorded attempt.
    fn admit<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async { Ok(Admission::Apply) })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let result = match msg.routing_key.as_str() {
                internal::GATEWAY_AUTHORIZE => match serde_json::from_slice::<AuthorizeRequest>(&msg.body) {
                    Ok(req) => match vouch::authorize(tx, &req).await? {
                        (Vouched::Yes, attempt) => self.authorize(tx, &req, attempt.and_then(|a| a.saved_card)).await?,
                        (Vouched::AlreadyDone { succeeded }, _) => match self.replay(Step::authorize(&req)).await? {
                            Some(r) => r,
                            // Lifecycle gave up on the attempt before this request was
                            // executed, and has its answer (or is getting it) by lookup.
                            None if !succeeded => {
                                tracing::info!(attempt = %req.attempt_id, "authorize for an attempt that ended without it; not executed");
                                if let Some(t) = req.card_token.as_deref() {
                                    crate::vault::forget(tx, t).await?;
                                }
                                return Ok(Handled::default());
                            }
                            None => return Ok(unvouched(msg, "the attempt succeeded but the processor has no call under its key")),
                        },
                        (Vouched::No(why), _) => return Ok(unvouched(msg, &why)),
                    },
                    Err(e) => return Ok(bad(msg, &e.to_string())),
                },
                key @ (internal::GATEWAY_CAPTURE | internal::GATEWAY_VOID) => match serde_json::from_slice::<SettleRequest>(&msg.body) {
                    Ok(req) => {
                        let op = if key == internal::GATEWAY_CAPTURE { Operation::Capture } else { Operation::Void };
                        match vouch::settle(tx, op, &req).await? {
                            Vouched::Yes => self.settle(op, &req).await?,
                            Vouched::AlreadyDone { .. } => match self.replay(Step::settle(op, &req)).await? {
                                Some(r) => r,
                                None => {
                                    return Ok(unvouched(msg, &format!("the {op} is settled and the processor has no call under its key")))
                                }
                            },
                            Vouched::No(why) => return Ok(unvouched(msg, &why)),
                        }
                    }
                    Err(e) => return Ok(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_REFUND => match serde_json::from_slice::<RefundRequest>(&msg.body) {
                    Ok(req) => match vouch::refund(tx, &req).await? {
                        Vouched::Yes => match self.refund(&req).await? {
                            Called::Answered(r) => *r,
                            Called::Pending => {
                                tracing::info!(refund = %req.refund_id, "refund in progress at the processor; its event or the next sweep answers");
                                return Ok(Handled::default());
                            }
                        },
                        Vouched::AlreadyDone { .. } => match self.replay(Step::refund(&req)).await? {
                            Some(r) => r,
                            None => return Ok(unvouched(msg, "the refund has its answer and the processor has no call under its key")),
                        },
                        Vouched::No(why) => return Ok(unvouched(msg, &why)),
                    },
                    Err(e) => return Ok(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_AUTHENTICATE => match serde_json::from_slice::<AuthenticateRequest>(&msg.body) {
                    Ok(req) => match vouch::authenticate(tx, &req).await? {
                        (Vouched::Yes, Some(attempt)) => match self.authenticate(tx, &req, &attempt).await? {
                            Some(r) => r,
                            None => {
                                tracing::info!(attempt = %req.attempt_id, "the processor still waits for the customer");
                                return Ok(Handled::default());
                            }
                        },
                        (Vouched::AlreadyDone { .. }, _) => {
                            tracing::info!(attempt = %req.attempt_id, "a challenge's end for an attempt that already has its answer");
                            return Ok(Handled::default());
                        }
                        (Vouched::No(why), _) => return Ok(unvouched(msg, &why)),
                        (Vouched::Yes, None) => return Err(HandlerError::Permanent("vouched for an attempt it did not read".into())),
                    },
                    Err(e) => return Ok(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_RESOLVE => match serde_json::from_slice::<ResolveRequest>(&msg.body) {
                    Ok(req) => match vouch::resolve(tx, &req).await? {
                        (Vouched::Yes, Some(attempt)) => self.resolve(tx, &req, attempt.card_token).await?,
                        (Vouched::AlreadyDone { .. }, _) => {
                            tracing::info!(attempt = %req.attempt_id, "resolve for an attempt that already has its answer");
                            return Ok(Handled::default());
                        }
                        (Vouched::No(why), _) => return Ok(unvouched(msg, &why)),
                        (Vouched::Yes, None) => return Err(HandlerError::Permanent("vouched for an attempt it did not read".into())),
                    },
                    Err(e) => return Ok(bad(msg, &e.to_string())),
                },
                other => return Ok(bad(msg, &format!("the gateway does not handle {other:?}"))),
            };
            tracing::info!(operation = %result.operation, attempt = %result.attempt_id, outcome = %result.outcome,
                decline_code = result.decline_code.as_deref().unwrap_or(""), "processor answered");
            Ok(Handled::default().send(
                Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_RESULT, &result)?
                    .with_message_id(result.message_id())
                    .with_header(header::MERCHANT_ID, result.merchant_id.as_str()),
            ))
        })
    }
}

/// A processor call that gave no answer yet.
enum CallError {
    /// Taken and in progress at the processor (a refund): answered later.
    Pending,
    Failed(HandlerError),
}

impl From<CallError> for HandlerError {
    /// Only a refund may be pending; any other call still in progress is asked again.
    fn from(e: CallError) -> HandlerError {
        match e {
            CallError::Pending => HandlerError::Transient("the processor has not finished the call".into()),
            CallError::Failed(e) => e,
        }
    }
}

/// A refund's call: its answer, or in progress at the processor.
enum Called {
    Answered(Box<GatewayResult>),
    Pending,
}

/// What a processor's failure means for the message: retried (unavailable, or
/// asked to slow down), or dead-lettered (a request it refused as malformed).
fn processor_failure(e: ProcessorError) -> HandlerError {
    match e {
        ProcessorError::Pending(_) => HandlerError::Transient(e.to_string()),
        ProcessorError::Unavailable(_) => HandlerError::Transient(e.to_string()),
        ProcessorError::RateLimited(retry_after) => HandlerError::Throttled { retry_after, why: e.to_string() },
        ProcessorError::Refused(_) => HandlerError::Permanent(e.to_string()),
    }
}

/// Once an authorization has its answer, a card that will not be kept has no
/// further use for its number; while the customer is still asked, it waits.
async fn done_with_card(
    tx: &Transaction<'_>,
    attempt: &str,
    card_token: Option<&str>,
    keep: bool,
    outcome: Outcome,
) -> Result<(), HandlerError> {
    let done = match outcome {
        Outcome::RequiresAction => false,
        Outcome::Failed => true,
        Outcome::Succeeded => !keep,
    };
    if let Some(t) = card_token.filter(|_| done) {
        if crate::vault::forget(tx, t).await? {
            tracing::info!(attempt, "card number deleted from the vault");
        }
    }
    Ok(())
}

/// A well-formed request the fleet's records do not back: kept in the DLQ for a
/// person to look at, and nothing sent to the processor.
fn unvouched(msg: &Incoming, why: &str) -> Handled {
    tracing::error!(routing_key = %msg.routing_key, reason = why, "internal request not backed by a recorded attempt; refused");
    crate::metrics::CALLS.with_label_values(&[msg.routing_key.as_str(), "refused"]).inc();
    Handled::dead_lettered("request_not_vouched", why)
}

fn bad(msg: &Incoming, why: &str) -> Handled {
    tracing::error!(routing_key = %msg.routing_key, error = why, "malformed internal message");
    Handled::dead_lettered("invalid_message", why)
}

impl GatewayHandler {
    /// `saved_card`: the vault token of the saved method the vouched attempt charges.
    async fn authorize(
        &self,
        tx: &Transaction<'_>,
        req: &AuthorizeRequest,
        saved_card: Option<String>,
    ) -> Result<GatewayResult, HandlerError> {
        let token = match (&req.card_token, &req.payment_method_id) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => saved_card,
            (None, None) => None,
        };
        // A card entered now and kept is set up for its later use; a saved method's charge sets up nothing.
        let save = match (req.customer_present, req.keep_card, req.save_for) {
            (true, true, Some(SaveUsage::OffSession)) => Some(SaveFor::OffSession),
            (true, true, _) => Some(SaveFor::OnSession),
            _ => None,
        };
        let call = ProcessorRequest {
            key: &req.processor_idempotency_key,
            operation: Operation::Authorize,
            card_token: token.as_deref(),
            authorization_key: None,
            amount: req.amount,
            currency: req.currency,
            customer_present: req.customer_present,
            capture: req.capture_method == CaptureMethod::Automatic,
            save,
        };
        let resp = self.call(req.attempt_id.as_str(), call).await?;
        done_with_card(tx, req.attempt_id.as_str(), req.card_token.as_deref(), req.keep_card, resp.outcome).await?;
        Ok(Step::authorize(req).answered(resp, token))
    }

    /// The end of a challenge: what the processor now says of the attempt's
    /// authorization (`None`: it still waits for the customer).
    async fn authenticate(
        &self,
        tx: &Transaction<'_>,
        req: &AuthenticateRequest,
        attempt: &vouch::Recorded,
    ) -> Result<Option<GatewayResult>, HandlerError> {
        let started = Instant::now();
        let key = req.processor_idempotency_key.as_str();
        let answered = tokio::time::timeout(self.timeout, self.processor.authenticate(key, req.completed)).await;
        let resp = match answered {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(processor_failure(e)),
            Err(_) => return Err(HandlerError::Transient(format!("the processor did not answer within {:?}", self.timeout))),
        };
        self.log_call(req.attempt_id.as_str(), Operation::Authorize, key, CallResult::of(resp.outcome), started.elapsed());
        crate::metrics::CALLS.with_label_values(&["authenticate", resp.outcome.as_str()]).inc();
        done_with_card(tx, req.attempt_id.as_str(), attempt.card_token.as_deref(), attempt.keep_card, resp.outcome).await?;
        let (amount, currency) = attempt.amount_and_currency()?;
        Ok(Some(Step::authenticate(req, amount, currency).answered(resp, attempt.card_token.clone())))
    }

    async fn settle(&self, op: Operation, req: &SettleRequest) -> Result<GatewayResult, HandlerError> {
        let auth_key = AuthorizeRequest::idempotency_key_for(&req.attempt_id);
        let call = ProcessorRequest {
            key: &req.processor_idempotency_key,
            operation: op,
            card_token: None,
            authorization_key: Some(&auth_key),
            amount: req.amount,
            currency: req.currency,
            customer_present: false,
            capture: op == Operation::Capture,
            save: None,
        };
        let resp = self.call(req.attempt_id.as_str(), call).await?;
        Ok(Step::settle(op, req).answered(resp, None))
    }

    /// Refunds part or all of the attempt's payment; the processor refunds
    /// against the authorisation, at most once under the refund's key.
    async fn refund(&self, req: &RefundRequest) -> Result<Called, HandlerError> {
        let auth_key = AuthorizeRequest::idempotency_key_for(&req.attempt_id);
        let call = ProcessorRequest {
            key: &req.processor_idempotency_key,
            operation: Operation::Refund,
            card_token: None,
            authorization_key: Some(&auth_key),
            amount: req.amount,
            currency: req.currency,
            customer_present: false,
            capture: false,
            save: None,
        };
        match self.call(req.attempt_id.as_str(), call).await {
            Ok(resp) => Ok(Called::Answered(Box::new(Step::refund(req).answered(resp, None)))),
            Err(CallError::Pending) => Ok(Called::Pending),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    /// One processor call with a deadline. A timeout is an unknown outcome: ask
    /// the processor what happened under this key; if it has nothing, the call
    /// is retried later with the same key, which cannot charge twice.
    async fn call(&self, attempt: &str, req: ProcessorRequest<'_>) -> Result<ProcessorResponse, CallError> {
        let (key, op) = (req.key.to_owned(), req.operation);
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.processor.execute(req)).await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(Ok(resp)) => {
                self.log_call(attempt, op, &key, CallResult::of(resp.outcome), elapsed);
                crate::metrics::CALLS.with_label_values(&[op.as_str(), resp.outcome.as_str()]).inc();
                Ok(resp)
            }
            Ok(Err(ProcessorError::Pending(_))) => {
                self.log_call(attempt, op, &key, CallResult::Pending, elapsed);
                crate::metrics::CALLS.with_label_values(&[op.as_str(), "pending"]).inc();
                Err(CallError::Pending)
            }
            Ok(Err(e)) => {
                self.log_call(attempt, op, &key, CallResult::Error, elapsed);
                crate::metrics::CALLS.with_label_values(&[op.as_str(), "error"]).inc();
                Err(CallError::Failed(processor_failure(e)))
            }
            Err(_) => {
                self.log_call(attempt, op, &key, CallResult::Timeout, elapsed);
                crate::metrics::CALLS.with_label_values(&[op.as_str(), "timeout"]).inc();
                tracing::warn!(attempt, %key, timeout = ?self.timeout, "processor timed out; resolving the outcome by lookup");
                match self.processor.lookup(&key).await {
                    Ok(Some(resp)) => {
                        self.log_call(attempt, op, &key, CallResult::ResolvedByLookup, started.elapsed());
                        Ok(resp)
                    }
                    Ok(None) => {
                        Err(CallError::Failed(HandlerError::Transient(format!("processor timed out and has no record of {key} yet"))))
                    }
                    Err(ProcessorError::Pending(_)) => Err(CallError::Pending),
                    Err(e) => Err(CallError::Failed(processor_failure(e))),
                }
            }
        }
    }

    /// An attempt lifecycle gave up waiting for: what the processor did under
    /// its key, asked and never executed. No record means the processor never
    /// charged it, and (with the attempt no longer pending) never will.
    async fn resolve(&self, tx: &Transaction<'_>, req: &ResolveRequest, card_token: Option<String>) -> Result<GatewayResult, HandlerError> {
        let started = Instant::now();
        let key = req.processor_idempotency_key.as_str();
        let found = self.processor.close_unknown(key).await.map_err(processor_failure)?;
        let resp = match found {
            Some(resp) => {
                self.log_call(req.attempt_id.as_str(), Operation::Authorize, key, CallResult::ResolvedByLookup, started.elapsed());
                resp
            }
            None => {
                self.log_call(req.attempt_id.as_str(), Operation::Authorize, key, CallResult::ResolvedNoRecord, started.elapsed());
                ProcessorResponse::failed("processing_error", "processor_no_record", "")
            }
        };
        tracing::info!(attempt = %req.attempt_id, outcome = %resp.outcome, "unanswered attempt resolved by asking the processor");
        crate::metrics::CALLS.with_label_values(&["resolve", resp.outcome.as_str()]).inc();
        if let Some(t) = card_token.as_deref().filter(|_| resp.outcome == Outcome::Failed) {
            crate::vault::forget(tx, t).await?;
        }
        Ok(Step::settle(Operation::Authorize, req).answered(resp, card_token))
    }

    /// A step already taken, answered from what the processor did under its
    /// key (asked without asking it to act); `None` if it has no such call.
    async fn replay(&self, step: Step<'_>) -> Result<Option<GatewayResult>, HandlerError> {
        let (attempt, key) = (step.attempt.as_str(), step.key);
        tracing::info!(operation = %step.op, attempt, "request for a step already taken: answering from the processor's record");
        let started = Instant::now();
        let Some(resp) = self.processor.lookup(key).await.map_err(processor_failure)? else { return Ok(None) };
        self.log_call(attempt, step.op, key, CallResult::ResolvedByLookup, started.elapsed());
        Ok(Some(step.answered(resp, None)))
    }

    fn log_call(&self, attempt: &str, op: Operation, key: &str, result: CallResult, elapsed: Duration) {
        self.calls.note(attempt, op, key, result, elapsed);
    }
}
