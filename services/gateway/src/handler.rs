//! `gateway.authorize`, `gateway.capture`, `gateway.void`, `gateway.refund` → processor → `gateway.result`.

use crate::calls::{CallLog, CallResult};
use crate::card;
use crate::processor::{Processor, ProcessorError, ProcessorRequest, ProcessorResponse, SaveFor};
use crate::vouch::{self, Vouched};
use deadpool_postgres::{Pool, Transaction};
use futures::future::BoxFuture;
use ps_contract::internal::{
    AuthenticateRequest, AuthorizeRequest, GatewayResult, Operation, Outcome, RefundRequest, ResolveRequest, SaveUsage, SettleRequest,
};
use ps_contract::routing::{exchange, header, internal};
use ps_contract::session::CaptureMethod;
use ps_runtime::{Admission, Called, Handled, Handler, HandlerError, Incoming, Outbound, Prepared};
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
            authorization_open: self.op == Operation::Capture && resp.outcome == Outcome::Succeeded && resp.authorization_open,
        }
    }
}

pub struct GatewayHandler {
    caller: Caller,
}

impl GatewayHandler {
    pub fn new(processor: Arc<dyn Processor>, timeout: Duration, calls: CallLog, pool: Pool) -> GatewayHandler {
        GatewayHandler { caller: Caller { processor, timeout, calls, pool } }
    }

    /// How long an authorize leases its attempt: its call and, should that
    /// time out, the lookup after it, each bounded by the timeout, and a margin
    /// for the transaction that keeps the answer.
    fn lease(&self) -> Duration {
        self.caller.timeout * 2 + Duration::from_secs(5)
    }

    fn call(&self, work: Work) -> Prepared {
        Prepared::Call(Box::pin(self.caller.clone().run(work)))
    }
}

/// What makes the processor calls; each call owns a clone, and its request.
#[derive(Clone)]
struct Caller {
    processor: Arc<dyn Processor>,
    timeout: Duration,
    /// Where each call is noted (processor_calls), beside the message's
    /// transactions: a call made is a fact even if they roll back.
    calls: CallLog,
    /// For an authorize's lease, released when its call fails.
    pool: Pool,
}

/// A processor call, made once the message's first transaction has committed.
enum Work {
    Authorize {
        req: AuthorizeRequest,
        token: Option<String>,
    },
    /// An authorize for an attempt already past it: answered from the processor's record.
    AuthorizeAgain {
        req: AuthorizeRequest,
        succeeded: bool,
    },
    Authenticate {
        req: AuthenticateRequest,
        attempt: Box<vouch::Recorded>,
    },
    Settle {
        op: Operation,
        req: SettleRequest,
    },
    SettleAgain {
        op: Operation,
        req: SettleRequest,
    },
    Refund(RefundRequest),
    RefundAgain(RefundRequest),
    Resolve {
        req: ResolveRequest,
        card_token: Option<String>,
    },
}

/// What a call leaves for the message's second transaction.
enum Answer {
    /// The `gateway.result` to send, and a card number the answer leaves without further use.
    Result { result: Box<GatewayResult>, forget: Option<String> },
    /// Nothing to send (yet): the processor still waits, or the request was not executed.
    Nothing { forget: Option<String> },
    /// Dead-lettered: our records say the step was taken, the processor has no call under its key.
    Unvouched(String),
}

impl Handler for GatewayHandler {
    /// Internal work, from the services the consumer checked it came from
    /// (DESIGN §10); each request is then checked against its recorded attempt.
    fn admit<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async { Ok(Admission::Apply) })
    }

    fn handle<'a>(&'a self, _: &'a Transaction<'_>, _: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async { Err(HandlerError::Permanent("the gateway's messages are prepared and completed around their call".into())) })
    }

    /// Each processor call is made with no transaction open (DESIGN §5): an
    /// in-flight call holds no pooled connection, so the gateway's
    /// concurrency is bounded by `CONSUMER_PREFETCH`, not by the pool.
    fn calls_out(&self) -> bool {
        true
    }

    /// The request checked against its recorded attempt (an authorize leases
    /// it for its call): a refusal is answered here, anything else is a call.
    fn prepare<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Prepared, HandlerError>> {
        Box::pin(async move {
            Ok(match msg.routing_key.as_str() {
                internal::GATEWAY_AUTHORIZE => match serde_json::from_slice::<AuthorizeRequest>(&msg.body) {
                    Ok(req) => match vouch::authorize(tx, &req, self.lease()).await? {
                        (Vouched::Yes, attempt) => {
                            let token = match (&req.card_token, &req.payment_method_id) {
                                (Some(t), _) => Some(t.clone()),
                                (None, Some(_)) => attempt.and_then(|a| a.saved_card),
                                (None, None) => None,
                            };
                            self.call(Work::Authorize { req, token })
                        }
                        (Vouched::AlreadyDone { succeeded }, _) => self.call(Work::AuthorizeAgain { req, succeeded }),
                        (Vouched::No(why), _) => Prepared::Handled(unvouched(msg, &why)),
                    },
                    Err(e) => Prepared::Handled(bad(msg, &e.to_string())),
                },
                key @ (internal::GATEWAY_CAPTURE | internal::GATEWAY_VOID) => match serde_json::from_slice::<SettleRequest>(&msg.body) {
                    Ok(req) => {
                        let op = if key == internal::GATEWAY_CAPTURE { Operation::Capture } else { Operation::Void };
                        match vouch::settle(tx, op, &req).await? {
                            Vouched::Yes => self.call(Work::Settle { op, req }),
                            Vouched::AlreadyDone { .. } => self.call(Work::SettleAgain { op, req }),
                            Vouched::No(why) => Prepared::Handled(unvouched(msg, &why)),
                        }
                    }
                    Err(e) => Prepared::Handled(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_REFUND => match serde_json::from_slice::<RefundRequest>(&msg.body) {
                    Ok(req) => match vouch::refund(tx, &req).await? {
                        Vouched::Yes => self.call(Work::Refund(req)),
                        Vouched::AlreadyDone { .. } => self.call(Work::RefundAgain(req)),
                        Vouched::No(why) => Prepared::Handled(unvouched(msg, &why)),
                    },
                    Err(e) => Prepared::Handled(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_AUTHENTICATE => match serde_json::from_slice::<AuthenticateRequest>(&msg.body) {
                    Ok(req) => match vouch::authenticate(tx, &req).await? {
                        (Vouched::Yes, Some(attempt)) => self.call(Work::Authenticate { req, attempt: Box::new(attempt) }),
                        (Vouched::AlreadyDone { .. }, _) => {
                            tracing::info!(attempt = %req.attempt_id, "a challenge's end for an attempt that already has its answer");
                            Prepared::Handled(Handled::default())
                        }
                        (Vouched::No(why), _) => Prepared::Handled(unvouched(msg, &why)),
                        (Vouched::Yes, None) => return Err(HandlerError::Permanent("vouched for an attempt it did not read".into())),
                    },
                    Err(e) => Prepared::Handled(bad(msg, &e.to_string())),
                },
                internal::GATEWAY_RESOLVE => match serde_json::from_slice::<ResolveRequest>(&msg.body) {
                    Ok(req) => match vouch::resolve(tx, &req).await? {
                        (Vouched::Yes, Some(attempt)) => self.call(Work::Resolve { req, card_token: attempt.card_token }),
                        (Vouched::AlreadyDone { .. }, _) => {
                            tracing::info!(attempt = %req.attempt_id, "resolve for an attempt that already has its answer");
                            Prepared::Handled(Handled::default())
                        }
                        (Vouched::No(why), _) => Prepared::Handled(unvouched(msg, &why)),
                        (Vouched::Yes, None) => return Err(HandlerError::Permanent("vouched for an attempt it did not read".into())),
                    },
                    Err(e) => Prepared::Handled(bad(msg, &e.to_string())),
                },
                other => Prepared::Handled(bad(msg, &format!("the gateway does not handle {other:?}"))),
            })
        })
    }

    /// The call's answer kept with the message's record: the card number it
    /// leaves without use deleted, the result sent to lifecycle.
    fn complete<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming, called: Called) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let answer = called.downcast::<Answer>().map_err(|_| HandlerError::Permanent("a gateway call left something else".into()))?;
            let (result, forget) = match *answer {
                Answer::Result { result, forget } => (Some(result), forget),
                Answer::Nothing { forget } => (None, forget),
                Answer::Unvouched(why) => return Ok(unvouched(msg, &why)),
            };
            if let Some(t) = forget {
                if crate::vault::forget(tx, &t).await? {
                    tracing::info!("card number deleted from the vault");
                }
            }
            let Some(result) = result else { return Ok(Handled::default()) };
            tracing::info!(operation = %result.operation, attempt = %result.attempt_id, outcome = %result.outcome,
                decline_code = result.decline_code.as_deref().unwrap_or(""), "processor answered");
            Ok(Handled::default().send(
                Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_RESULT, &*result)?
                    .with_message_id(result.message_id())
                    .with_header(header::MERCHANT_ID, result.merchant_id.as_str()),
            ))
        })
    }
}

impl Answer {
    fn result(result: GatewayResult, forget: Option<String>) -> Answer {
        Answer::Result { result: Box::new(result), forget }
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
enum RefundCall {
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
/// further use for its number (returned, to delete); while the customer is
/// still asked, it waits.
fn done_with_card(card_token: Option<&str>, keep: bool, outcome: Outcome) -> Option<String> {
    let done = match outcome {
        Outcome::RequiresAction => false,
        Outcome::Failed => true,
        Outcome::Succeeded => !keep,
    };
    card_token.filter(|_| done).map(str::to_owned)
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

impl Caller {
    /// The work's call or calls, and what they leave for the second transaction.
    async fn run(self, work: Work) -> Result<Called, HandlerError> {
        let answer = match work {
            Work::Authorize { req, token } => match self.authorize(&req, token).await {
                Ok(answer) => answer,
                Err(e) => {
                    if let Err(release) = ps_store::attempts::end_call(&self.pool, req.attempt_id.as_str()).await {
                        tracing::warn!(attempt = %req.attempt_id, error = %release, "lease not released; it lapses by itself");
                    }
                    return Err(e);
                }
            },
            Work::AuthorizeAgain { req, succeeded } => match self.replay(Step::authorize(&req)).await? {
                Some(r) => Answer::result(r, None),
                // Lifecycle gave up on the attempt before this request was
                // executed, and has its answer (or is getting it) by lookup.
                None if !succeeded => {
                    tracing::info!(attempt = %req.attempt_id, "authorize for an attempt that ended without it; not executed");
                    Answer::Nothing { forget: req.card_token.clone() }
                }
                None => Answer::Unvouched("the attempt succeeded but the processor has no call under its key".into()),
            },
            Work::Authenticate { req, attempt } => match self.authenticate(&req, &attempt).await? {
                Some(answer) => answer,
                None => {
                    tracing::info!(attempt = %req.attempt_id, "the processor still waits for the customer");
                    Answer::Nothing { forget: None }
                }
            },
            Work::Settle { op, req } => Answer::result(self.settle(op, &req).await?, None),
            Work::SettleAgain { op, req } => match self.replay(Step::settle(op, &req)).await? {
                Some(r) => Answer::result(r, None),
                None => Answer::Unvouched(format!("the {op} is settled and the processor has no call under its key")),
            },
            Work::Refund(req) => match self.refund(&req).await? {
                RefundCall::Answered(r) => Answer::result(*r, None),
                RefundCall::Pending => {
                    tracing::info!(refund = %req.refund_id, "refund in progress at the processor; its event or the next sweep answers");
                    Answer::Nothing { forget: None }
                }
            },
            Work::RefundAgain(req) => match self.replay(Step::refund(&req)).await? {
                Some(r) => Answer::result(r, None),
                None => Answer::Unvouched("the refund has its answer and the processor has no call under its key".into()),
            },
            Work::Resolve { req, card_token } => self.resolve(&req, card_token).await?,
        };
        Ok(Box::new(answer))
    }

    /// `token`: the card entered now, or the vault token of the saved method the attempt charges.
    async fn authorize(&self, req: &AuthorizeRequest, token: Option<String>) -> Result<Answer, HandlerError> {
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
            final_capture: true,
        };
        let resp = self.call(req.attempt_id.as_str(), call).await?;
        let forget = done_with_card(req.card_token.as_deref(), req.keep_card, resp.outcome);
        Ok(Answer::result(Step::authorize(req).answered(resp, token), forget))
    }

    /// The end of a challenge: what the processor now says of the attempt's
    /// authorization (`None`: it still waits for the customer).
    async fn authenticate(&self, req: &AuthenticateRequest, attempt: &vouch::Recorded) -> Result<Option<Answer>, HandlerError> {
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
        let forget = done_with_card(attempt.card_token.as_deref(), attempt.keep_card, resp.outcome);
        let (amount, currency) = attempt.amount_and_currency()?;
        Ok(Some(Answer::result(Step::authenticate(req, amount, currency).answered(resp, attempt.card_token.clone()), forget)))
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
            final_capture: req.final_capture,
        };
        let resp = self.call(req.attempt_id.as_str(), call).await?;
        Ok(Step::settle(op, req).answered(resp, None))
    }

    /// Refunds part or all of the attempt's payment; the processor refunds
    /// against the authorisation, at most once under the refund's key.
    async fn refund(&self, req: &RefundRequest) -> Result<RefundCall, HandlerError> {
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
            final_capture: true,
        };
        match self.call(req.attempt_id.as_str(), call).await {
            Ok(resp) => Ok(RefundCall::Answered(Box::new(Step::refund(req).answered(resp, None)))),
            Err(CallError::Pending) => Ok(RefundCall::Pending),
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
                let looked = tokio::time::timeout(self.timeout, self.processor.lookup(&key)).await.unwrap_or_else(|_| {
                    Err(ProcessorError::Unavailable(format!("the lookup did not answer within {:?} either", self.timeout)))
                });
                match looked {
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
    async fn resolve(&self, req: &ResolveRequest, card_token: Option<String>) -> Result<Answer, HandlerError> {
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
        let forget = card_token.clone().filter(|_| resp.outcome == Outcome::Failed);
        Ok(Answer::result(Step::settle(Operation::Authorize, req).answered(resp, card_token), forget))
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
