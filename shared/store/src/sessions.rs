//! Payment session rows and the wire object they become.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use ps_contract::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId, SessionId};
use ps_contract::internal::CardSummary;
use ps_contract::lifecycle::{PaymentOutcome, SessionState, SessionType, Status};
use ps_contract::mandate::MandateTerms;
use ps_contract::money::Currency;
use ps_contract::payment::PaymentAmounts;
use ps_contract::session::{CaptureMethod, LastPaymentError, LegacyPaymentStatus, Mode, PaymentSession, SavePaymentMethod};
use ps_runtime::HandlerError;
use std::collections::BTreeMap;

/// What is stored beside the wire object.
pub struct SessionExtras<'a> {
    pub merchant: &'a MerchantId,
    pub capture_method: &'a str,
    pub save_payment_method: &'a str,
    pub checkout_token: Option<&'a str>,
    pub mandate_terms: Option<serde_json::Value>,
    pub subscription_options: Option<serde_json::Value>,
    /// How its checkout looks, over the merchant's settings.
    pub branding: Option<serde_json::Value>,
    pub presentation_mode: &'a str,
    /// The language its checkout speaks (a canonical BCP 47 tag).
    pub locale: Option<&'a str>,
}

/// A new session's row: intake's create is its only writer of new rows, `save` of changes.
pub async fn create(tx: &impl GenericClient, s: &PaymentSession, x: &SessionExtras<'_>) -> Result<(), HandlerError> {
    let metadata = serde_json::to_value(&s.metadata)?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO payment_sessions (id, merchant_id, type, status, payment_outcome, amount, currency, capture_method,
             save_payment_method, customer_id, payment_method_id, mandate_id, checkout_token, session_url, return_url,
             expires_at, metadata, external_reference, mode, mandate_terms, subscription_options, created_at, updated_at, traceparent, payment_created_at,
             branding, presentation_mode, locale)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $22, $23, $24, $25, $26, $27)").await?,
        &[
            &s.id.as_str(),
            &x.merchant.as_str(),
            &s.session_type.as_str(),
            &s.status.as_str(),
            &s.payment_outcome.as_str(),
            &s.amount,
            &s.currency.code(),
            &x.capture_method,
            &x.save_payment_method,
            &s.customer_id.as_ref().map(|c| c.as_str()),
            &s.payment_method_id.as_ref().map(|p| p.as_str()),
            &s.mandate_id.as_ref().map(|m| m.as_str()),
            &x.checkout_token,
            &s.session_url,
            &s.return_url,
            &s.expires_at,
            &metadata,
            &s.external_reference,
            &s.mode.as_str(),
            &x.mandate_terms,
            &x.subscription_options,
            &s.created_at,
            &ps_runtime::telemetry::current_traceparent(),
            &s.payment.as_ref().map(|p| p.created_at),
            &x.branding,
            &x.presentation_mode,
            &x.locale,
        ],
    )
    .await?;
    Ok(())
}

/// A session as stored: the wire object and what only the fleet sees.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub session: PaymentSession,
    pub merchant_id: MerchantId,
    pub capture_method: CaptureMethod,
    pub save_payment_method: SavePaymentMethod,
    pub checkout_token: Option<String>,
    pub mandate_terms: Option<MandateTerms>,
    /// The payment's amounts, as lifecycle keeps them; `session.payment` shows them.
    amounts: PaymentAmounts,
    payment_started: Option<DateTime<Utc>>,
    /// The card of the attempt that succeeded, as it may be shown.
    payment_card: Option<CardSummary>,
    /// How its checkout looks, over the merchant's settings (none: theirs alone).
    pub branding: Option<ps_contract::branding::Branding>,
    /// The customer asked at the checkout to cancel; lifecycle has yet to.
    pub cancel_requested: bool,
    /// The customer's saved cards, when the checkout offers them (it alone fills this).
    pub saved_cards: Vec<crate::saved_cards::SavedCard>,
    pub presentation_mode: ps_contract::branding::PresentationMode,
    /// The origins that may frame its checkout (the merchant's settings; the checkout fills this).
    pub embed_origins: Vec<String>,
    /// The language the create asked its checkout to speak.
    pub locale: Option<String>,
}

impl StoredSession {
    pub fn state(&self) -> SessionState {
        SessionState::new(self.session.status, self.session.payment_outcome)
    }

    /// Applies a state already checked by `lifecycle::transition`. An ended
    /// session no longer advertises its checkout URL, but the token stays so the
    /// customer who holds the link still sees what became of it.
    pub fn set_state(&mut self, to: SessionState, now: DateTime<Utc>) {
        self.session.status = to.status;
        self.session.payment_outcome = to.outcome;
        self.session.updated_at = now;
        if to.status.is_terminal() {
            self.session.session_url = None;
        }
        if to.outcome == PaymentOutcome::Pending && self.payment_started.is_none() {
            self.payment_started = Some(now);
        }
        self.show_payment();
    }

    pub fn amounts(&self) -> PaymentAmounts {
        self.amounts
    }

    /// Records what the processor moved; the caller holds the row lock and saves.
    pub fn set_amounts(&mut self, amounts: PaymentAmounts, now: DateTime<Utc>) {
        self.amounts = amounts;
        self.session.updated_at = now;
        self.show_payment();
    }

    /// Records the card the payment was made with; the caller holds the row lock and saves.
    pub fn set_payment_card(&mut self, card: Option<CardSummary>) {
        self.payment_card = card;
        self.show_payment();
    }

    fn show_payment(&mut self) {
        let s = &mut self.session;
        s.payment = s.derive_payment(self.capture_method, self.amounts, self.payment_started, self.payment_card.as_ref());
        s.payment_id = s.payment.as_ref().map(|p| p.id.clone());
        s.derive_legacy_fields();
    }
}

fn corrupt(what: &str) -> HandlerError {
    HandlerError::Permanent(format!("corrupt stored session: {what}"))
}

fn id<T>(s: Option<String>, parse: fn(&str) -> Result<T, ps_contract::ApiError>) -> Result<Option<T>, HandlerError> {
    s.map(|s| parse(&s).map_err(|_| corrupt("id"))).transpose()
}

const COLUMNS: &str = "id, merchant_id, type, status, payment_outcome, amount, currency, capture_method, save_payment_method,
    customer_id, payment_method_id, mandate_id, checkout_token, session_url, return_url, expires_at, last_payment_error,
    metadata, external_reference, mode, mandate_terms, created_at, updated_at,
    payment_created_at, authorised_amount, paid_amount, voided_amount, refunded_amount, payment_card, branding,
    cancel_requested_at IS NOT NULL, presentation_mode, locale";

fn from_row(r: &tokio_postgres::Row) -> Result<StoredSession, HandlerError> {
    let text = |i: usize| r.get::<_, String>(i);
    let session = PaymentSession {
        id: SessionId::parse(&text(0)).map_err(|_| corrupt("id"))?,
        object: PaymentSession::OBJECT.to_owned(),
        session_type: SessionType::parse(&text(2)).ok_or_else(|| corrupt("type"))?,
        status: Status::parse(&text(3)).ok_or_else(|| corrupt("status"))?,
        payment_outcome: PaymentOutcome::parse(&text(4)).ok_or_else(|| corrupt("payment_outcome"))?,
        amount: r.get(5),
        currency: Currency::parse(&text(6)).map_err(|_| corrupt("currency"))?,
        customer_id: id(r.get(9), CustomerId::parse)?,
        payment_method_id: id(r.get(10), PaymentMethodId::parse)?,
        mandate_id: id(r.get(11), MandateId::parse)?,
        payment_id: None,
        payment: None,
        session_url: r.get(13),
        return_url: r.get(14),
        expires_at: r.get(15),
        last_payment_error: r
            .get::<_, Option<serde_json::Value>>(16)
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| corrupt("last_payment_error"))?,
        metadata: serde_json::from_value::<BTreeMap<String, String>>(r.get(17)).map_err(|_| corrupt("metadata"))?,
        external_reference: r.get(18),
        mode: Mode::parse(&text(19)).ok_or_else(|| corrupt("mode"))?,
        created_at: r.get(21),
        updated_at: r.get(22),
        payment_status: LegacyPaymentStatus::Unpaid,
        checkout_session_id: None,
    };
    let mut stored = StoredSession {
        session,
        merchant_id: MerchantId::parse(&text(1)).map_err(|_| corrupt("merchant_id"))?,
        capture_method: CaptureMethod::parse(&text(7)).ok_or_else(|| corrupt("capture_method"))?,
        save_payment_method: SavePaymentMethod::parse(&text(8)).ok_or_else(|| corrupt("save_payment_method"))?,
        checkout_token: r.get(12),
        mandate_terms: r
            .get::<_, Option<serde_json::Value>>(20)
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| corrupt("mandate_terms"))?,
        payment_started: r.get(23),
        amounts: PaymentAmounts { authorised: r.get(24), paid: r.get(25), voided: r.get(26), refunded: r.get(27) },
        payment_card: r
            .get::<_, Option<serde_json::Value>>(28)
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| corrupt("payment_card"))?,
        branding: r.get::<_, Option<serde_json::Value>>(29).map(serde_json::from_value).transpose().map_err(|_| corrupt("branding"))?,
        cancel_requested: r.get(30),
        saved_cards: vec![],
        presentation_mode: ps_contract::branding::PresentationMode::parse(&text(31)).ok_or_else(|| corrupt("presentation_mode"))?,
        embed_origins: vec![],
        locale: r.get(32),
    };
    stored.show_payment();
    Ok(stored)
}

/// The customer asked to cancel at the checkout: marked (its page now says so
/// and takes no card) until lifecycle cancels it. The caller holds the lock.
pub async fn request_cancel(client: &impl GenericClient, id: &str) -> Result<(), HandlerError> {
    client
        .execute(
            &client.prepare_cached("UPDATE payment_sessions SET cancel_requested_at = now() WHERE id = $1 AND status = 'active'").await?,
            &[&id],
        )
        .await?;
    Ok(())
}

/// Loads and locks a session for change. `merchant` scopes the lookup: another
/// merchant's session is `None`, exactly as a missing one.
pub async fn lock(client: &impl GenericClient, id: &str, merchant: Option<&MerchantId>) -> Result<Option<StoredSession>, HandlerError> {
    let sql = format!("SELECT {COLUMNS} FROM payment_sessions WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2) FOR UPDATE");
    let stmt = client.prepare_cached(&sql).await?;
    let row = client.query_opt(&stmt, &[&id, &merchant.map(|m| m.as_str())]).await?;
    row.as_ref().map(from_row).transpose()
}

/// Reads a session without locking, for display.
pub async fn get(client: &impl GenericClient, id: &str) -> Result<Option<StoredSession>, HandlerError> {
    let sql = format!("SELECT {COLUMNS} FROM payment_sessions WHERE id = $1");
    let row = client.query_opt(sql.as_str(), &[&id]).await?;
    row.as_ref().map(from_row).transpose()
}

/// A merchant's sessions, newest first: ids sort by creation (UUIDv7), so a
/// page after `starting_after` stays the same while new sessions arrive.
/// Plain reads: no lock that would slow the write path.
pub async fn list(
    client: &impl GenericClient,
    merchant: &MerchantId,
    q: &ps_contract::commands::SessionList,
) -> Result<Vec<StoredSession>, HandlerError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_sessions
         WHERE merchant_id = $1 AND ($2::text IS NULL OR customer_id = $2) AND ($3::text IS NULL OR external_reference = $3)
           AND ($4::text IS NULL OR status = $4) AND ($5::timestamptz IS NULL OR created_at > $5) AND ($6::text IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7"
    );
    let rows = client
        .query(
            sql.as_str(),
            &[
                &merchant.as_str(),
                &q.customer_id.as_ref().map(|c| c.as_str()),
                &q.external_reference,
                &q.status.map(|s| s.as_str()),
                &q.created_after,
                &q.starting_after.as_ref().map(|s| s.as_str()),
                &(q.limit as i64 + 1),
            ],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Writes back what lifecycle and checkout change. Callers hold the row lock.
pub async fn save(client: &impl GenericClient, s: &StoredSession) -> Result<(), HandlerError> {
    let error = s.session.last_payment_error.as_ref().map(serde_json::to_value).transpose()?;
    let card = s.payment_card.as_ref().map(serde_json::to_value).transpose()?;
    let stmt = client
        .prepare_cached(
            "UPDATE payment_sessions SET status = $2, payment_outcome = $3, customer_id = $4, payment_method_id = $5,
                 mandate_id = $6, checkout_token = $7, session_url = $8, last_payment_error = $9, updated_at = $10,
                 payment_created_at = $11, authorised_amount = $12, paid_amount = $13, voided_amount = $14, refunded_amount = $15,
                 payment_card = $16, version = version + 1
             WHERE id = $1",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &s.session.id.as_str(),
                &s.session.status.as_str(),
                &s.session.payment_outcome.as_str(),
                &s.session.customer_id.as_ref().map(|c| c.as_str()),
                &s.session.payment_method_id.as_ref().map(|p| p.as_str()),
                &s.session.mandate_id.as_ref().map(|m| m.as_str()),
                &s.checkout_token,
                &s.session.session_url,
                &error,
                &s.session.updated_at,
                &s.payment_started,
                &s.amounts.authorised,
                &s.amounts.paid,
                &s.amounts.voided,
                &s.amounts.refunded,
                &card,
            ],
        )
        .await?;
    Ok(())
}

pub fn payment_error(error_code: &str, decline_code: Option<&str>, message: &str, at: DateTime<Utc>) -> LastPaymentError {
    LastPaymentError {
        error_code: error_code.to_owned(),
        decline_code: decline_code.map(str::to_owned),
        message: message.to_owned(),
        timestamp: at,
    }
}
