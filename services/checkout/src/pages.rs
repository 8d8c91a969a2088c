//! The checkout's pages, rendered on the server. Every dynamic value is escaped.

use crate::terms;
use ps_contract::internal::{ActionKind, NextAction};
use ps_contract::lifecycle::{PaymentOutcome, SessionType, Status};
use ps_contract::session::{LastPaymentError, SavePaymentMethod};
use ps_store::sessions::StoredSession;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}\
h1{font-size:1.3rem}.amount{font-size:2rem;font-weight:600;margin:.5rem 0}.merchant{color:#555}\
.box{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}.error{background:#fdecea;border-color:#f5c2c0}\
.terms{background:#f6f8fa;font-size:.9rem}label{display:block;margin:.7rem 0 .2rem}\
input[type=text]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}button{margin-top:1rem;width:100%;padding:.7rem;font-size:1rem}";

fn layout(title: &str, body: &str, refresh: bool) -> String {
    let meta = if refresh { r#"<meta http-equiv="refresh" content="1">"# } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         {meta}<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

fn header(s: &StoredSession) -> String {
    format!(
        "<p class=\"merchant\" id=\"merchant\">{}</p><p class=\"amount\" id=\"amount\">{}</p>",
        escape(s.merchant_id.as_str()),
        escape(&terms::money(s.session.currency, s.session.amount))
    )
}

fn return_link(s: &StoredSession, text: &str) -> String {
    match &s.session.return_url {
        Some(url) => format!("<p><a id=\"return\" href=\"{}\">{}</a></p>", escape(url), escape(text)),
        None => String::new(),
    }
}

/// What a paid session's customer is owed an account of: a smaller capture
/// than the amount shown, and refunds that went through.
fn money_moved(s: &StoredSession) -> String {
    // Paid outright, or captured from a reservation.
    let Some(p) = s.session.payment.as_ref().filter(|p| p.paid_amount > 0) else { return String::new() };
    let money = |minor| escape(&terms::money(s.session.currency, minor));
    let mut out = String::new();
    if p.paid_amount != p.amount {
        out.push_str(&format!("<p id=\"charged\">Charged {}</p>", money(p.paid_amount)));
    }
    if p.refunded_amount > 0 {
        let whole = if p.refunded_amount == p.paid_amount { " (in full)" } else { "" };
        out.push_str(&format!("<p id=\"refunded\">Refunded {}{whole}</p>", money(p.refunded_amount)));
    }
    out
}

/// The page for a session in its current state; `error` is a card problem to
/// show above the form (the vault's, before any attempt).
pub fn session_page(s: &StoredSession, action: &str, csrf: &str, error: Option<&str>) -> String {
    let st = &s.session;
    match (st.status, st.payment_outcome) {
        (Status::Active, PaymentOutcome::Pending) => layout(
            "Processing payment",
            &format!(
                "{}<h1 id=\"state\">Processing your payment…</h1><p>This page updates by itself. Please do not pay again.</p>",
                header(s)
            ),
            true,
        ),
        (Status::Active, _) => form(s, action, csrf, error),
        (Status::Completed, outcome) => {
            let captured = st.payment.as_ref().is_some_and(|p| p.paid_amount > 0);
            let what = match outcome {
                PaymentOutcome::Paid => "Payment successful",
                // A reservation stays reserved once captured: the customer was charged.
                PaymentOutcome::Reserved if captured => "Payment successful",
                PaymentOutcome::Reserved => "Payment authorised",
                PaymentOutcome::PaymentMethodVerified => "Card verified",
                _ => "Payment not taken",
            };
            let mandate =
                if st.mandate_id.is_some() { "<p id=\"mandate\">Your authorisation for future payments is in place.</p>" } else { "" };
            let money = money_moved(s);
            layout(
                what,
                &format!("{}<h1 id=\"state\">{what}</h1>{money}{mandate}{}", header(s), return_link(s, "Return to the merchant")),
                false,
            )
        }
        (Status::Expired, _) => layout(
            "Link expired",
            &format!(
                "{}<h1 id=\"state\">This payment link has expired</h1><p>No payment was taken. Ask the merchant for a new link.</p>{}",
                header(s),
                return_link(s, "Back to the merchant")
            ),
            false,
        ),
        (Status::Cancelled, _) => layout(
            "Payment cancelled",
            &format!(
                "{}<h1 id=\"state\">This payment was cancelled</h1><p>No payment was taken.</p>{}",
                header(s),
                return_link(s, "Back to the merchant")
            ),
            false,
        ),
    }
}

/// What the customer is told of a decline: the reason only where they can act
/// on it. Anything else (a stolen card, a wrong security code, the issuer's
/// rules) reads as a plain decline, so the page is no oracle for card testing.
/// The merchant still gets the exact reason in `last_payment_error`.
pub fn decline_for_customer(e: &LastPaymentError) -> &'static str {
    match e.decline_code.as_deref() {
        Some("insufficient_funds") => "Your card has insufficient funds.",
        Some("expired_card") => "Your card has expired.",
        _ => "Your card was declined.",
    }
}

fn form(s: &StoredSession, action: &str, csrf: &str, vault_error: Option<&str>) -> String {
    let st = &s.session;
    let mut body = header(s);
    let problem = vault_error
        .map(str::to_owned)
        .or_else(|| st.last_payment_error.as_ref().map(|e| format!("{} Please try again or use another card.", decline_for_customer(e))));
    if let Some(p) = problem {
        body.push_str(&format!("<div class=\"box error\" id=\"error\" role=\"alert\">{}</div>", escape(&p)));
    }
    let verification = st.amount == 0;
    if st.session_type == SessionType::FirstInSeries {
        let terms = s.mandate_terms.clone().unwrap_or_else(|| ps_contract::mandate::MandateTerms::unconstrained(st.currency));
        let text: String = terms::describe(s.merchant_id.as_str(), &terms).iter().map(|p| format!("<p>{}</p>", escape(p))).collect();
        body.push_str(&format!("<div class=\"box terms\" id=\"terms\"><strong>Authorisation for future payments</strong>{text}</div>"));
    }
    let save = if st.session_type == SessionType::OneTime && s.save_payment_method == SavePaymentMethod::Prompt {
        "<label><input type=\"checkbox\" name=\"save_card\" id=\"save_card\" value=\"on\"> Save this card for future purchases</label>"
    } else {
        ""
    };
    let button = match (st.session_type, verification) {
        (SessionType::FirstInSeries, true) => "Verify card and authorise".to_owned(),
        (SessionType::FirstInSeries, false) => format!("Pay {} and authorise", terms::money(st.currency, st.amount)),
        (_, true) => "Verify card".to_owned(),
        _ => format!("Pay {}", terms::money(st.currency, st.amount)),
    };
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\" autocomplete=\"on\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"card_number\">Card number</label><input type=\"text\" id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" required>\
         <label for=\"expiry\">Expiry (MM/YY)</label><input type=\"text\" id=\"expiry\" name=\"expiry\" autocomplete=\"cc-exp\" placeholder=\"MM/YY\" required>\
         <label for=\"cvc\">Security code</label><input type=\"text\" id=\"cvc\" name=\"cvc\" inputmode=\"numeric\" autocomplete=\"cc-csc\" required>\
         {save}<button type=\"submit\" id=\"pay\">{}</button></form>",
        escape(action),
        escape(csrf),
        escape(&button)
    ));
    layout("Checkout", &body, false)
}

/// What the page needs to run a processor's challenge in the browser.
pub struct BrowserProcessor<'a> {
    /// Where Stripe.js is loaded from (`STRIPE_JS_URL`).
    pub js_url: &'a str,
    /// The publishable key Stripe.js is opened with.
    pub publishable_key: &'a str,
    /// Marks the page's own script as allowed (CSP).
    pub nonce: &'a str,
}

/// A string as a JavaScript literal inside a `<script>`: JSON's quoting, and
/// no `</` that could end the script early.
fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()).replace("</", "<\\/")
}

/// An attempt waiting for the customer to authenticate (3-D Secure). The
/// sandbox's issuer asks on a page of ours (no script needed); Stripe's through
/// Stripe.js with the intent's client secret. Either way the outcome comes
/// back here (`challenge_action`) and the gateway asks the processor what it was.
pub fn challenge_page(
    s: &StoredSession,
    challenge_action: &str,
    csrf: &str,
    action: &NextAction,
    browser: Option<&BrowserProcessor<'_>>,
) -> String {
    let form = |result: &str, id: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"result\" value=\"{result}\"><button type=\"submit\" id=\"{id}\">{label}</button></form>",
            escape(challenge_action),
            escape(csrf)
        )
    };
    let mut body = header(s);
    body.push_str("<h1 id=\"state\">Confirm this payment with your bank</h1>");
    match (action.kind, browser, action.client_secret.as_deref()) {
        (ActionKind::SandboxChallenge, _, _) => {
            body.push_str(
                "<div class=\"box\" id=\"challenge\"><p>Test mode: this is the sandbox's 3-D Secure page, standing in for your bank's.</p>",
            );
            body.push_str(&form("complete", "authenticate", "Authenticate"));
            body.push_str(&form("fail", "fail_authentication", "Fail authentication"));
            body.push_str("</div>");
        }
        (kind @ (ActionKind::StripePayment | ActionKind::StripeSetup), Some(b), Some(secret)) => {
            // The outcome is only reported: the gateway asks Stripe what it was.
            let confirm = match kind {
                ActionKind::StripeSetup => {
                    "stripe.handleNextAction ? stripe.handleNextAction({clientSecret: secret}) : stripe.confirmCardSetup(secret)"
                }
                _ => "stripe.confirmCardPayment(secret)",
            };
            body.push_str(&format!(
                "<div class=\"box\" id=\"challenge\"><p id=\"waiting\">Your bank's check opens here. Keep this page open.</p>\
                 <noscript><p>Your bank's check needs JavaScript. Turn it on and reload this page, or use another card.</p></noscript>\
                 <form id=\"done\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"result\" id=\"result\" value=\"complete\"></form>{}</div>\
                 <script src=\"{}\" nonce=\"{}\"></script>\
                 <script nonce=\"{}\">(async function () {{\
                   const stripe = Stripe({}); const secret = {};\
                   let failed = true;\
                   try {{ const r = await ({confirm}); failed = !r || !!r.error; }} catch (e) {{ failed = true; }}\
                   document.getElementById('result').value = failed ? 'fail' : 'complete';\
                   document.getElementById('done').submit();\
                 }})();</script>",
                escape(challenge_action),
                escape(csrf),
                form("fail", "other_card", "Use another card"),
                escape(b.js_url),
                escape(b.nonce),
                escape(b.nonce),
                js_string(b.publishable_key),
                js_string(secret),
            ));
        }
        _ => {
            // A Stripe challenge with nothing configured to run it: the customer can only start again.
            body.push_str("<div class=\"box error\" id=\"error\" role=\"alert\">Your bank's check cannot be shown right now.</div>");
            body.push_str(&form("fail", "other_card", "Use another card"));
        }
    }
    layout("Confirm with your bank", &body, false)
}

/// A challenge the customer has answered: the processor's word is awaited
/// (the page refreshes itself); the customer may still give up and use another card.
pub fn challenge_answered(s: &StoredSession, challenge_action: &str, csrf: &str) -> String {
    let body = format!(
        "{}<h1 id=\"state\">Processing your payment…</h1><p>Your bank's answer is on its way. This page updates by itself.</p>\
         <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"result\" value=\"fail\"><button type=\"submit\" id=\"other_card\">Use another card</button></form>",
        header(s),
        escape(challenge_action),
        escape(csrf)
    );
    layout("Processing payment", &body, true)
}

pub fn not_found() -> String {
    layout("Not found", "<h1>Page not found</h1>", false)
}

pub fn message(title: &str, text: &str) -> String {
    layout(title, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declines_a_customer_can_act_on_are_named() {
        let e = |code: &str| LastPaymentError {
            error_code: "card_declined".into(),
            decline_code: Some(code.into()),
            message: "exact".into(),
            timestamp: chrono::Utc::now(),
        };
        assert_eq!(decline_for_customer(&e("insufficient_funds")), "Your card has insufficient funds.");
        assert_eq!(decline_for_customer(&e("expired_card")), "Your card has expired.");
        for code in ["incorrect_cvc", "stolen_card", "generic_decline", "processing_error", "fraudulent"] {
            assert_eq!(decline_for_customer(&e(code)), "Your card was declined.", "{code}");
        }
    }

    #[test]
    fn a_js_string_cannot_end_its_script() {
        assert_eq!(js_string("pi_1_secret_x"), "\"pi_1_secret_x\"");
        assert!(!js_string("</script><script>alert(1)").contains("</"));
        assert_eq!(js_string("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
