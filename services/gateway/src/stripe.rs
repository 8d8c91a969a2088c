//! Stripe (DESIGN §11): PaymentIntents for payments, SetupIntents for a
//! zero-amount verification, Refunds, and the PaymentMethod made from a card
//! when the vault takes it. Form-encoded HTTPS, `Stripe-Version` pinned, an
//! `Idempotency-Key` derived from our own key on every call that changes
//! anything, and every object recorded against our key the moment it exists,
//! so an unknown outcome is resolved by reading Stripe's record of it.
//!
//! An authorization is two calls: the intent is created (which moves no
//! money) and recorded, then confirmed. A lookup reads the recorded intent.
//! When lifecycle gives up on an attempt whose intent is still unconfirmed, the
//! intent is cancelled before the attempt is called failed: a confirmation
//! still on its way to Stripe is then refused there, never charged unreported.

use crate::card::{AUTHENTICATION_FAILED, AUTHENTICATION_REQUIRED};
use crate::processor::{CardData, Processor, ProcessorError, ProcessorRequest, ProcessorResponse, SaveFor, Tokenized};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use ps_contract::internal::{ActionKind, CardSummary, NextAction, Operation, Outcome};
use ps_contract::secret::Secret;
use serde_json::Value;
use std::time::Duration;

/// The API version every request is made against: the shapes read below are this version's.
pub const STRIPE_VERSION: &str = "2024-06-20";

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    /// `https://api.stripe.com`, or a stand-in's (localstripe) in tests.
    pub api_base: String,
    /// Verifies the `Stripe-Signature` of Stripe's events.
    pub webhook_secret: Secret,
}

pub struct StripeProcessor {
    http: reqwest::Client,
    config: StripeConfig,
    /// Our keys and Stripe's objects, and the vault's cards (read for their PaymentMethod).
    pool: Pool,
}

/// The Customer a saved card is attached to, or Stripe's refusal to attach it.
enum CustomerFor {
    Ready(String),
    Declined(ProcessorResponse),
}

/// What Stripe answered a call with.
enum Answer {
    /// 2xx: the object.
    Object(Value),
    /// 402 `card_error`: the card was declined; `error` is Stripe's error object.
    Declined(Value),
}

impl StripeProcessor {
    pub fn new(config: StripeConfig, pool: Pool, tls: rustls::ClientConfig) -> Result<StripeProcessor, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("payment-sessions/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(StripeProcessor { http, config, pool })
    }

    pub fn config(&self) -> &StripeConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base.trim_end_matches('/'))
    }

    /// One call. Only the status and Stripe's own error text are ever kept:
    /// never the request (a card number, a key) nor a header.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Answer, ProcessorError> {
        let sent = req.bearer_auth(self.config.secret_key.expose()).header("Stripe-Version", STRIPE_VERSION).send().await;
        let resp = sent.map_err(|e| ProcessorError::Unavailable(format!("Stripe unreachable: {}", without_url(&e))))?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ProcessorError::Unavailable(format!("Stripe's answer ({status}) is not JSON: {}", without_url(&e))))?;
        let error = &body["error"];
        let text = || format!("{status} {}: {}", error["type"].as_str().unwrap_or("?"), error["message"].as_str().unwrap_or("?"));
        match status {
            200..=299 => Ok(Answer::Object(body)),
            402 if error["type"] == "card_error" || error["code"].is_string() => Ok(Answer::Declined(error.clone())),
            429 => Err(ProcessorError::RateLimited(Duration::from_secs(retry_after.unwrap_or(1)))),
            // Another call under the same key in flight: its answer comes; ask again.
            409 => Err(ProcessorError::Unavailable(text())),
            500..=599 => Err(ProcessorError::Unavailable(text())),
            _ => Err(ProcessorError::Refused(text())),
        }
    }

    async fn post(&self, path: &str, key: &str, form: &[(String, String)]) -> Result<Answer, ProcessorError> {
        self.call(self.http.post(self.url(path)).header("Idempotency-Key", key).form(form)).await
    }

    async fn get(&self, path: &str) -> Result<Value, ProcessorError> {
        match self.call(self.http.get(self.url(path))).await? {
            Answer::Object(v) => Ok(v),
            Answer::Declined(e) => Err(ProcessorError::Refused(format!("a read answered as a decline: {}", e["message"]))),
        }
    }

    /// The Stripe object recorded under our key.
    async fn recorded(&self, key: &str) -> Result<Option<String>, ProcessorError> {
        let c = self.pool.get().await.map_err(ProcessorError::unavailable)?;
        let row = c
            .query_opt("SELECT object_id FROM processor_objects WHERE idempotency_key = $1", &[&key])
            .await
            .map_err(ProcessorError::unavailable)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records the object made under our key, the first one for good: a second
    /// create under the same key (Stripe returns the first) changes nothing.
    async fn record(&self, key: &str, object_id: &str) -> Result<String, ProcessorError> {
        let c = self.pool.get().await.map_err(ProcessorError::unavailable)?;
        c.execute(
            "INSERT INTO processor_objects (idempotency_key, object_id) VALUES ($1, $2) ON CONFLICT (idempotency_key) DO NOTHING",
            &[&key, &object_id],
        )
        .await
        .map_err(ProcessorError::unavailable)?;
        Ok(self.recorded(key).await?.unwrap_or_else(|| object_id.to_owned()))
    }

    /// A vaulted card's PaymentMethod, the Customer it is attached to, and what may be shown of it.
    async fn card(&self, token: &str) -> Result<Option<(Option<String>, Option<String>, CardSummary)>, ProcessorError> {
        let c = self.pool.get().await.map_err(ProcessorError::unavailable)?;
        let sql = format!("SELECT processor_method, processor_customer, {} FROM vault_cards WHERE token = $1", crate::vault::SUMMARY);
        let row = c.query_opt(&sql, &[&token]).await.map_err(ProcessorError::unavailable)?;
        Ok(row.map(|r| (r.get(0), r.get(1), crate::vault::summary_at(&r, 2))))
    }

    /// The Customer a card is saved under: made, and the card attached to it,
    /// the first time the card is kept (Stripe charges a saved card without
    /// the customer only through its Customer).
    async fn customer_for(&self, token: &str, method: &str, existing: Option<String>) -> Result<CustomerFor, ProcessorError> {
        if let Some(c) = existing {
            return Ok(CustomerFor::Ready(c));
        }
        // Recorded the moment it exists, and the attachment read before it is
        // asked for: a retry after a lost answer makes neither twice, even
        // once Stripe has forgotten the Idempotency-Key.
        let key = format!("customer:{token}");
        let customer = match self.recorded(&key).await? {
            Some(c) => c,
            None => {
                let form = vec![("metadata[ps_vault_token]".to_owned(), token.to_owned())];
                match self.post("/v1/customers", &key, &form).await? {
                    Answer::Object(c) => self.record(&key, &str_field(&c, "id")?).await?,
                    Answer::Declined(e) => return Ok(CustomerFor::Declined(declined(&e, ""))),
                }
            }
        };
        let attached = self.get(&format!("/v1/payment_methods/{method}")).await?["customer"] == customer.as_str();
        if !attached {
            let attach = vec![("customer".to_owned(), customer.clone())];
            let path = format!("/v1/payment_methods/{method}/attach");
            if let Answer::Declined(e) = self.post(&path, &format!("attach:{token}"), &attach).await? {
                return Ok(CustomerFor::Declined(declined(&e, "")));
            }
        }
        let c = self.pool.get().await.map_err(ProcessorError::unavailable)?;
        c.execute("UPDATE vault_cards SET processor_customer = $2 WHERE token = $1 AND processor_customer IS NULL", &[&token, &customer])
            .await
            .map_err(ProcessorError::unavailable)?;
        Ok(CustomerFor::Ready(customer))
    }

    async fn authorize(&self, req: &ProcessorRequest<'_>) -> Result<ProcessorResponse, ProcessorError> {
        let Some(token) = req.card_token else { return Ok(ProcessorResponse::failed("processing_error", "missing_card", "")) };
        let Some((method, customer, summary)) = self.card(token).await? else {
            return Ok(ProcessorResponse::failed("processing_error", "unknown_card_token", ""));
        };
        let Some(method) = method else {
            // Vaulted before PROCESSOR=stripe: Stripe never saw this card.
            return Ok(ProcessorResponse::failed("processing_error", "card_not_at_processor", ""));
        };
        let customer = match (req.save, customer) {
            (Some(_), existing) => match self.customer_for(token, &method, existing).await? {
                CustomerFor::Ready(c) => Some(c),
                CustomerFor::Declined(declined) => return Ok(with_card(declined, &summary)),
            },
            (None, existing) => existing,
        };
        let resp = if req.amount == 0 { self.verify(req, &method, customer).await? } else { self.pay(req, &method, customer).await? };
        Ok(with_card(resp, &summary))
    }

    /// A payment: the intent created and recorded (moving no money), then confirmed.
    async fn pay(&self, req: &ProcessorRequest<'_>, method: &str, customer: Option<String>) -> Result<ProcessorResponse, ProcessorError> {
        let intent = match self.recorded(req.key).await? {
            Some(id) => self.get(&format!("/v1/payment_intents/{id}")).await?,
            None => {
                let mut form = vec![
                    ("amount".to_owned(), req.amount.to_string()),
                    ("currency".to_owned(), req.currency.code().to_ascii_lowercase()),
                    ("payment_method".to_owned(), method.to_owned()),
                    ("payment_method_types[0]".to_owned(), "card".to_owned()),
                    ("capture_method".to_owned(), if req.capture { "automatic" } else { "manual" }.to_owned()),
                    ("metadata[ps_key]".to_owned(), req.key.to_owned()),
                ];
                if let Some(c) = &customer {
                    form.push(("customer".to_owned(), c.clone()));
                }
                // Several captures of one authorisation (Moment's partial
                // fulfilment) need multicapture, asked for at creation; the
                // charge then says whether the card and account have it.
                if !req.capture {
                    form.push(("payment_method_options[card][request_multicapture]".to_owned(), "if_available".to_owned()));
                }
                // Stripe must be told before it allows charges without the customer.
                match req.save {
                    Some(SaveFor::OffSession) => form.push(("setup_future_usage".to_owned(), "off_session".to_owned())),
                    Some(SaveFor::OnSession) => form.push(("setup_future_usage".to_owned(), "on_session".to_owned())),
                    None => {}
                }
                match self.post("/v1/payment_intents", req.key, &form).await? {
                    Answer::Object(pi) => {
                        let id = self.record(req.key, &str_field(&pi, "id")?).await?;
                        if id == str_field(&pi, "id")? {
                            pi
                        } else {
                            self.get(&format!("/v1/payment_intents/{id}")).await?
                        }
                    }
                    Answer::Declined(e) => return Ok(declined(&e, "")),
                }
            }
        };
        let intent = if intent["status"] == "requires_confirmation" {
            let id = str_field(&intent, "id")?;
            let mut form = vec![];
            if !req.customer_present {
                form.push(("off_session".to_owned(), "true".to_owned()));
            }
            match self.post(&format!("/v1/payment_intents/{id}/confirm"), &format!("{}:confirm", req.key), &form).await? {
                Answer::Object(pi) => pi,
                // A decline answers the confirmation; the intent says the rest.
                Answer::Declined(e) if e["payment_intent"].is_object() => e["payment_intent"].clone(),
                Answer::Declined(e) => return Ok(declined(&e, &id)),
            }
        } else {
            intent
        };
        self.after_confirm(intent, req.customer_present).await
    }

    /// An intent's state as an answer. Off-session, an issuer that wants the
    /// customer is a decline the merchant can act on, and the intent is cancelled.
    async fn after_confirm(&self, intent: Value, customer_present: bool) -> Result<ProcessorResponse, ProcessorError> {
        let resp = intent_answer(&intent)?.ok_or_unknown()?;
        if resp.outcome == Outcome::RequiresAction && !customer_present {
            let id = str_field(&intent, "id")?;
            let _ = self.post(&format!("/v1/payment_intents/{id}/cancel"), &format!("{id}:cancel"), &[]).await?;
            return Ok(ProcessorResponse::failed(AUTHENTICATION_REQUIRED, AUTHENTICATION_REQUIRED, id));
        }
        Ok(resp)
    }

    /// A zero-amount verification: a SetupIntent for the card, for later use
    /// without the customer (a mandate's) or by the customer (a `one_time`'s).
    async fn verify(
        &self,
        req: &ProcessorRequest<'_>,
        method: &str,
        customer: Option<String>,
    ) -> Result<ProcessorResponse, ProcessorError> {
        let setup = match self.recorded(req.key).await? {
            Some(id) => self.get(&format!("/v1/setup_intents/{id}")).await?,
            None => {
                let usage = match req.save {
                    Some(SaveFor::OnSession) => "on_session",
                    Some(SaveFor::OffSession) | None => "off_session",
                };
                let mut form = vec![
                    ("usage".to_owned(), usage.to_owned()),
                    ("payment_method_types[0]".to_owned(), "card".to_owned()),
                    ("metadata[ps_key]".to_owned(), req.key.to_owned()),
                ];
                if let Some(c) = &customer {
                    form.push(("customer".to_owned(), c.clone()));
                }
                match self.post("/v1/setup_intents", req.key, &form).await? {
                    Answer::Object(si) => {
                        let id = self.record(req.key, &str_field(&si, "id")?).await?;
                        self.get(&format!("/v1/setup_intents/{id}")).await?
                    }
                    Answer::Declined(e) => return Ok(declined(&e, "")),
                }
            }
        };
        let setup = if setup["status"] == "requires_payment_method" || setup["status"] == "requires_confirmation" {
            let id = str_field(&setup, "id")?;
            let form = vec![("payment_method".to_owned(), method.to_owned())];
            match self.post(&format!("/v1/setup_intents/{id}/confirm"), &format!("{}:confirm", req.key), &form).await? {
                Answer::Object(si) => si,
                Answer::Declined(e) => return Ok(declined(&e, &id)),
            }
        } else {
            setup
        };
        setup_answer(&setup)?.ok_or_unknown()
    }

    /// The intent an authorization made, by the authorization's key.
    async fn intent_of(&self, authorization_key: Option<&str>) -> Result<Option<String>, ProcessorError> {
        match authorization_key {
            Some(k) => self.recorded(k).await,
            None => Ok(None),
        }
    }

    /// A capture. One that is not final keeps the rest open only where the
    /// charge has multicapture (`final_capture=false`); elsewhere Stripe
    /// releases what a capture does not take, and the answer says so.
    async fn capture(&self, req: &ProcessorRequest<'_>) -> Result<ProcessorResponse, ProcessorError> {
        let Some(pi) = self.intent_of(req.authorization_key).await? else {
            return Ok(ProcessorResponse::failed("processing_error", "no_authorization", ""));
        };
        let mut form = vec![("amount_to_capture".to_owned(), req.amount.to_string())];
        let several = !req.final_capture && self.multicapture_available(&pi).await?;
        if several {
            form.push(("final_capture".to_owned(), "false".to_owned()));
        }
        match self.post(&format!("/v1/payment_intents/{pi}/capture"), req.key, &form).await {
            Ok(Answer::Object(intent)) => capture_answer(&intent, &pi, several),
            Ok(Answer::Declined(e)) => Ok(declined(&e, &pi)),
            // Stripe refuses a capture of an intent that is not waiting for
            // one: a final capture made already, or nothing left to capture.
            Err(ProcessorError::Refused(why)) => match self.get(&format!("/v1/payment_intents/{pi}")).await?["status"].as_str() {
                Some("succeeded") if req.final_capture => Ok(ProcessorResponse::succeeded(&pi)),
                Some("succeeded" | "canceled") => Ok(ProcessorResponse::failed("processing_error", "already_settled", pi)),
                _ => Err(ProcessorError::Refused(why)),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether the intent's charge may be captured several times: Stripe
    /// says so on the charge (`payment_method_details.card.multicapture`).
    async fn multicapture_available(&self, pi: &str) -> Result<bool, ProcessorError> {
        let intent = self.get(&format!("/v1/payment_intents/{pi}")).await?;
        let charge = match &intent["latest_charge"] {
            Value::String(id) => self.get(&format!("/v1/charges/{id}")).await?,
            Value::Object(_) => intent["latest_charge"].clone(),
            _ => return Ok(false),
        };
        Ok(multicapture_of(&charge))
    }

    async fn void(&self, req: &ProcessorRequest<'_>) -> Result<ProcessorResponse, ProcessorError> {
        let Some(pi) = self.intent_of(req.authorization_key).await? else {
            return Ok(ProcessorResponse::failed("processing_error", "no_authorization", ""));
        };
        // A void after Stripe captured (an automatic-capture charge that came
        // too late for its session) gives the money back the only way Stripe
        // has: a full refund, under the void's own key.
        if self.recorded(req.key).await?.is_some() {
            return self.refund_of(req.key, &pi, None).await;
        }
        match self.post(&format!("/v1/payment_intents/{pi}/cancel"), req.key, &[]).await {
            Ok(Answer::Object(_)) => Ok(ProcessorResponse::succeeded(&pi)),
            Ok(Answer::Declined(e)) => Ok(declined(&e, &pi)),
            Err(ProcessorError::Refused(why)) => {
                let intent = self.get(&format!("/v1/payment_intents/{pi}")).await?;
                match (intent["status"].as_str(), intent["capture_method"].as_str()) {
                    (Some("canceled"), _) => Ok(ProcessorResponse::succeeded(&pi)),
                    // A reservation captured to its end: nothing is left to
                    // release, and what was captured is not the void's to give back.
                    (Some("succeeded"), Some("manual")) => Ok(ProcessorResponse::failed("processing_error", "already_settled", pi)),
                    (Some("succeeded"), _) => self.refund_of(req.key, &pi, None).await,
                    _ => Err(ProcessorError::Refused(why)),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, req: &ProcessorRequest<'_>) -> Result<ProcessorResponse, ProcessorError> {
        let Some(pi) = self.intent_of(req.authorization_key).await? else {
            return Ok(ProcessorResponse::failed("processing_error", "no_charge", ""));
        };
        self.refund_of(req.key, &pi, Some(req.amount)).await
    }

    /// A refund of `amount` (all, if `None`) of an intent, under our key. A
    /// refund Stripe made whose answer never reached us is found on the
    /// intent by our key before another is asked for: Stripe keeps an
    /// Idempotency-Key for 24 hours only, and a retry may come later.
    async fn refund_of(&self, key: &str, pi: &str, amount: Option<i64>) -> Result<ProcessorResponse, ProcessorError> {
        let existing = match self.recorded(key).await? {
            Some(id) => Some(id),
            None => self.refund_made(key, pi).await?,
        };
        if let Some(id) = existing {
            let id = self.record(key, &id).await?;
            return refund_result(&self.get(&format!("/v1/refunds/{id}")).await?);
        }
        let mut form = vec![("payment_intent".to_owned(), pi.to_owned()), ("metadata[ps_key]".to_owned(), key.to_owned())];
        if let Some(amount) = amount {
            form.push(("amount".to_owned(), amount.to_string()));
        }
        match self.post("/v1/refunds", key, &form).await? {
            Answer::Object(re) => {
                self.record(key, &str_field(&re, "id")?).await?;
                refund_result(&re)
            }
            Answer::Declined(e) => Ok(declined(&e, pi)),
        }
    }

    /// The refund of an intent made under our key, by its metadata.
    async fn refund_made(&self, key: &str, pi: &str) -> Result<Option<String>, ProcessorError> {
        let list = self.get(&format!("/v1/refunds?payment_intent={pi}&limit=100")).await?;
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["metadata"]["ps_key"] == key)
            .and_then(|r| r["id"].as_str())
            .map(str::to_owned))
    }

    /// What Stripe's record says of a key, read and never acted on.
    async fn look(&self, key: &str) -> Result<Option<ProcessorResponse>, ProcessorError> {
        let op = key.split(':').next().unwrap_or_default();
        match op {
            "authorize" => {
                let Some(id) = self.recorded(key).await? else { return Ok(None) };
                let (object, answer) = if id.starts_with("seti_") {
                    let si = self.get(&format!("/v1/setup_intents/{id}")).await?;
                    (si.clone(), setup_answer(&si)?)
                } else {
                    let pi = self.get(&format!("/v1/payment_intents/{id}")).await?;
                    (pi.clone(), intent_answer(&pi)?)
                };
                // Created, never confirmed: nothing happened, and nothing will.
                if matches!(object["status"].as_str(), Some("requires_confirmation") | Some("requires_payment_method"))
                    && object["last_payment_error"].is_null()
                {
                    return Ok(None);
                }
                Ok(answer.settled())
            }
            "capture" | "void" => {
                let attempt = key.split(':').nth(1).unwrap_or_default();
                let Some(pi) = self.recorded(&format!("authorize:{attempt}")).await? else { return Ok(None) };
                let status = self.get(&format!("/v1/payment_intents/{pi}")).await?["status"].as_str().map(str::to_owned);
                if op == "void" {
                    if let Some(refund) = self.recorded(key).await? {
                        return Ok(refund_answer(&self.get(&format!("/v1/refunds/{refund}")).await?)?.settled());
                    }
                }
                Ok(match (op, status.as_deref()) {
                    ("capture", Some("succeeded")) | ("void", Some("canceled")) => Some(ProcessorResponse::succeeded(&pi)),
                    _ => None,
                })
            }
            "refund" => match self.recorded(key).await? {
                Some(id) => Ok(refund_answer(&self.get(&format!("/v1/refunds/{id}")).await?)?.settled()),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// An unknown authorization closed: an intent never confirmed is
    /// cancelled first (Stripe refuses a confirmation that arrives after), then
    /// read; if Stripe confirmed it meanwhile, that is the answer.
    async fn close(&self, key: &str) -> Result<Option<ProcessorResponse>, ProcessorError> {
        if !key.starts_with("authorize:") {
            return self.look(key).await;
        }
        let Some(id) = self.recorded(key).await? else { return Ok(None) };
        let path = if id.starts_with("seti_") { format!("/v1/setup_intents/{id}") } else { format!("/v1/payment_intents/{id}") };
        let object = self.get(&path).await?;
        let unconfirmed = matches!(object["status"].as_str(), Some("requires_confirmation" | "requires_payment_method"))
            && object["last_payment_error"].is_null()
            && object["last_setup_error"].is_null();
        if unconfirmed {
            match self.post(&format!("{path}/cancel"), &format!("{id}:cancel"), &[]).await {
                Ok(_) => {}
                // Refused: it is no longer cancellable, because it was confirmed meanwhile.
                Err(ProcessorError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
            if self.get(&path).await?["status"] == "canceled" {
                return Ok(None);
            }
        }
        // Still processing is not "nothing happened": asked again later.
        let object = self.get(&path).await?;
        let answer = if id.starts_with("seti_") { setup_answer(&object)? } else { intent_answer(&object)? };
        answer.ok_or_unknown().map(Some)
    }

    /// The end of a challenge. Stripe, not the browser, says how it went; a
    /// challenge given up is cancelled there, so it cannot complete later.
    async fn after_challenge(&self, key: &str, completed: bool) -> Result<Option<ProcessorResponse>, ProcessorError> {
        let Some(id) = self.recorded(key).await? else { return Ok(None) };
        let setup = id.starts_with("seti_");
        let path = if setup { format!("/v1/setup_intents/{id}") } else { format!("/v1/payment_intents/{id}") };
        let object = self.get(&path).await?;
        let waiting = object["status"] == "requires_action";
        if waiting && completed {
            // The customer says done, Stripe not yet: its event will tell.
            return Ok(None);
        }
        if waiting || (!completed && object["status"] == "requires_payment_method") {
            let _ = self.post(&format!("{path}/cancel"), &format!("{id}:cancel"), &[]).await?;
            return Ok(Some(ProcessorResponse::failed("card_declined", AUTHENTICATION_FAILED, id)));
        }
        let answer = if setup { setup_answer(&object)? } else { intent_answer(&object)? };
        Ok(answer.settled())
    }

    /// The card as it reaches Stripe, from the vault, with its security code.
    async fn payment_method(&self, card: CardData<'_>, vault_token: &str) -> Result<Tokenized, ProcessorError> {
        let form = vec![
            ("type".to_owned(), "card".to_owned()),
            ("card[number]".to_owned(), card.number.to_owned()),
            ("card[exp_month]".to_owned(), card.exp_month.to_string()),
            ("card[exp_year]".to_owned(), card.exp_year.to_string()),
            ("card[cvc]".to_owned(), card.cvc.to_owned()),
        ];
        match self.post("/v1/payment_methods", &format!("pm:{vault_token}"), &form).await {
            Ok(Answer::Object(pm)) => Ok(Tokenized::Method {
                id: str_field(&pm, "id")?,
                funding: pm["card"]["funding"]
                    .as_str()
                    .filter(|f| matches!(*f, "credit" | "debit" | "prepaid" | "unknown"))
                    .map(str::to_owned),
            }),
            Ok(Answer::Declined(e)) => Ok(Tokenized::Refused {
                code: e["code"].as_str().unwrap_or("card_declined").to_owned(),
                message: e["message"].as_str().unwrap_or("Your card was declined.").to_owned(),
            }),
            // Stripe refuses a malformed card with a 400: the customer can fix it.
            Err(ProcessorError::Refused(_)) => Ok(Tokenized::Refused {
                code: "incorrect_number".to_owned(),
                message: "The card was not accepted. Check its number, expiry and security code.".to_owned(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// A processor error's text without the URL (whose path may name an object, never a secret, but is noise).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "…");
    }
    text
}

fn str_field(v: &Value, field: &str) -> Result<String, ProcessorError> {
    v[field].as_str().map(str::to_owned).ok_or_else(|| ProcessorError::Refused(format!("Stripe's answer has no {field}")))
}

/// A capture's answer: `succeeded` closes the intent; `requires_capture`
/// after a capture asked not to be final leaves the rest open.
fn capture_answer(intent: &Value, pi: &str, several: bool) -> Result<ProcessorResponse, ProcessorError> {
    match intent["status"].as_str() {
        Some("succeeded") => Ok(ProcessorResponse::succeeded(pi)),
        Some("requires_capture") if several && intent["amount_capturable"].as_i64().is_some_and(|a| a > 0) => {
            Ok(ProcessorResponse { authorization_open: true, ..ProcessorResponse::succeeded(pi) })
        }
        other => Err(ProcessorError::Unavailable(format!("a capture left the intent {}", other.unwrap_or("without a status")))),
    }
}

/// Whether a charge allows several captures (Stripe's `multicapture.status`).
fn multicapture_of(charge: &Value) -> bool {
    charge["payment_method_details"]["card"]["multicapture"]["status"] == "available"
}

fn with_card(mut r: ProcessorResponse, summary: &CardSummary) -> ProcessorResponse {
    r.card = Some(summary.clone());
    r
}

/// Stripe's card error as our decline: its `code` (card_declined,
/// expired_card, incorrect_cvc, processing_error, authentication_required…)
/// and the issuer's `decline_code` where it gives one.
fn declined(error: &Value, reference: &str) -> ProcessorResponse {
    let code = error["code"].as_str().unwrap_or("card_declined");
    let (code, decline) = match code {
        "payment_intent_authentication_failure" | "setup_intent_authentication_failure" => ("card_declined", AUTHENTICATION_FAILED),
        "authentication_required" => (AUTHENTICATION_REQUIRED, AUTHENTICATION_REQUIRED),
        other => (other, error["decline_code"].as_str().unwrap_or(other)),
    };
    ProcessorResponse::failed(code, decline, reference)
}

/// An answer read from an object, which may not be final yet.
enum Read {
    Final(ProcessorResponse),
    /// Stripe is still working on it (`processing`): ask again later.
    Unknown(String),
}

impl Read {
    fn ok_or_unknown(self) -> Result<ProcessorResponse, ProcessorError> {
        match self {
            Read::Final(r) => Ok(r),
            Read::Unknown(why) => Err(ProcessorError::Unavailable(why)),
        }
    }

    fn settled(self) -> Option<ProcessorResponse> {
        match self {
            Read::Final(r) => Some(r),
            Read::Unknown(_) => None,
        }
    }
}

/// A PaymentIntent's state as an answer.
fn intent_answer(pi: &Value) -> Result<Read, ProcessorError> {
    let id = str_field(pi, "id")?;
    Ok(match pi["status"].as_str().unwrap_or_default() {
        "succeeded" | "requires_capture" => Read::Final(ProcessorResponse::succeeded(&id)),
        "requires_action" => Read::Final(ProcessorResponse::requires_action(
            &id,
            NextAction { kind: ActionKind::StripePayment, client_secret: pi["client_secret"].as_str().map(str::to_owned) },
        )),
        "requires_payment_method" if !pi["last_payment_error"].is_null() => Read::Final(declined(&pi["last_payment_error"], &id)),
        "canceled" => Read::Final(ProcessorResponse::failed("processing_error", "canceled", id)),
        other => Read::Unknown(format!("intent {id} is {other}")),
    })
}

/// What an intent in one of Stripe's events answers, if it is final.
pub fn intent_event_answer(pi: &Value) -> Option<ProcessorResponse> {
    intent_answer(pi).ok()?.settled()
}

/// What a setup intent in one of Stripe's events answers, if it is final.
pub fn setup_event_answer(si: &Value) -> Option<ProcessorResponse> {
    setup_answer(si).ok()?.settled()
}

/// A SetupIntent's state as an answer.
fn setup_answer(si: &Value) -> Result<Read, ProcessorError> {
    let id = str_field(si, "id")?;
    Ok(match si["status"].as_str().unwrap_or_default() {
        "succeeded" => Read::Final(ProcessorResponse::succeeded(&id)),
        "requires_action" => Read::Final(ProcessorResponse::requires_action(
            &id,
            NextAction { kind: ActionKind::StripeSetup, client_secret: si["client_secret"].as_str().map(str::to_owned) },
        )),
        "requires_payment_method" if !si["last_setup_error"].is_null() => Read::Final(declined(&si["last_setup_error"], &id)),
        "canceled" => Read::Final(ProcessorResponse::failed("card_declined", "canceled", id)),
        other => Read::Unknown(format!("setup intent {id} is {other}")),
    })
}

/// A refund's answer, where a refund Stripe has not finished is pending, not unknown.
fn refund_result(re: &Value) -> Result<ProcessorResponse, ProcessorError> {
    match refund_answer(re)? {
        Read::Final(r) => Ok(r),
        Read::Unknown(why) => Err(ProcessorError::Pending(why)),
    }
}

/// A Refund's state as an answer.
fn refund_answer(re: &Value) -> Result<Read, ProcessorError> {
    let id = str_field(re, "id")?;
    Ok(match re["status"].as_str().unwrap_or_default() {
        "succeeded" => Read::Final(ProcessorResponse::succeeded(&id)),
        "failed" | "canceled" => {
            let reason = re["failure_reason"].as_str().unwrap_or("declined");
            Read::Final(ProcessorResponse::failed("refund_failed", reason, id))
        }
        other => Read::Unknown(format!("refund {id} is {other}")),
    })
}

impl Processor for StripeProcessor {
    fn execute<'a>(&'a self, req: ProcessorRequest<'a>) -> BoxFuture<'a, Result<ProcessorResponse, ProcessorError>> {
        Box::pin(async move {
            match req.operation {
                Operation::Authorize => self.authorize(&req).await,
                Operation::Capture => self.capture(&req).await,
                Operation::Void => self.void(&req).await,
                Operation::Refund => self.refund(&req).await,
            }
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        Box::pin(self.look(key))
    }

    fn close_unknown<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        Box::pin(self.close(key))
    }

    fn authenticate<'a>(&'a self, key: &'a str, completed: bool) -> BoxFuture<'a, Result<Option<ProcessorResponse>, ProcessorError>> {
        Box::pin(self.after_challenge(key, completed))
    }

    fn tokenize<'a>(&'a self, card: CardData<'a>, vault_token: &'a str) -> BoxFuture<'a, Result<Tokenized, ProcessorError>> {
        Box::pin(self.payment_method(card, vault_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// localstripe has no multicapture (its charges carry no `multicapture`,
    /// and it refuses `final_capture`), so Stripe's documented shapes stand
    /// in for it here: a charge that has it, a partial capture that left the
    /// rest open, and the answers that close the intent.
    #[test]
    fn multicapture_is_read_from_the_charge_and_the_captures_answer() {
        let available =
            json!({"object": "charge", "payment_method_details": {"type": "card", "card": {"multicapture": {"status": "available"}}}});
        let unavailable =
            json!({"object": "charge", "payment_method_details": {"type": "card", "card": {"multicapture": {"status": "unavailable"}}}});
        let localstripe = json!({"object": "charge", "payment_method_details": {"type": "card", "card": {"brand": "visa"}}});
        assert!(multicapture_of(&available));
        assert!(!multicapture_of(&unavailable));
        assert!(!multicapture_of(&localstripe));

        let open =
            json!({"id": "pi_1", "status": "requires_capture", "amount": 300000, "amount_capturable": 180000, "amount_received": 120000});
        let r = capture_answer(&open, "pi_1", true).unwrap();
        assert_eq!((r.outcome, r.authorization_open), (Outcome::Succeeded, true));
        // Not asked to stay open, an intent still waiting is not an answer we understand.
        assert!(capture_answer(&open, "pi_1", false).is_err());
        let closed = json!({"id": "pi_1", "status": "succeeded", "amount": 300000, "amount_capturable": 0, "amount_received": 200000});
        let r = capture_answer(&closed, "pi_1", true).unwrap();
        assert_eq!((r.outcome, r.authorization_open), (Outcome::Succeeded, false));
        let emptied = json!({"id": "pi_1", "status": "requires_capture", "amount_capturable": 0});
        assert!(capture_answer(&emptied, "pi_1", true).is_err());
    }

    #[test]
    fn stripe_declines_map_onto_our_codes() {
        let d = declined(&json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}), "pi_1");
        assert_eq!((d.error_code.as_deref(), d.decline_code.as_deref()), (Some("card_declined"), Some("insufficient_funds")));
        let d = declined(&json!({"code": "expired_card"}), "pi_1");
        assert_eq!((d.error_code.as_deref(), d.decline_code.as_deref()), (Some("expired_card"), Some("expired_card")));
        let d = declined(&json!({"code": "authentication_required", "decline_code": "authentication_required"}), "pi_1");
        assert_eq!(d.error_code.as_deref(), Some("authentication_required"));
        let d = declined(&json!({"code": "payment_intent_authentication_failure"}), "pi_1");
        assert_eq!(d.decline_code.as_deref(), Some("authentication_failed"));
    }

    #[test]
    fn an_intent_says_what_came_of_a_payment() {
        let answer = |pi: Value| intent_answer(&pi).unwrap().settled().map(|r| (r.outcome, r.decline_code, r.next_action.map(|a| a.kind)));
        assert_eq!(answer(json!({"id": "pi_1", "status": "succeeded"})), Some((Outcome::Succeeded, None, None)));
        assert_eq!(answer(json!({"id": "pi_1", "status": "requires_capture"})), Some((Outcome::Succeeded, None, None)));
        assert_eq!(
            answer(json!({"id": "pi_1", "status": "requires_action", "client_secret": "pi_1_secret_x"})),
            Some((Outcome::RequiresAction, None, Some(ActionKind::StripePayment)))
        );
        assert_eq!(
            answer(
                json!({"id": "pi_1", "status": "requires_payment_method", "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline"}})
            ),
            Some((Outcome::Failed, Some("generic_decline".into()), None))
        );
        assert_eq!(answer(json!({"id": "pi_1", "status": "processing"})), None, "not final: asked again later");
    }
}
