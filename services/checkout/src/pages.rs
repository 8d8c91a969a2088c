//! The checkout's pages: askama templates (`templates/`, one layout), checked
//! when the service is compiled, every value escaped for where it lands (HTML,
//! or JSON inside the challenge's script).

use crate::i18n::{Arg, Lang};
use crate::terms;
use askama::Template;
use ps_contract::branding::Branding;
use ps_contract::internal::{ActionKind, NextAction};
use ps_contract::lifecycle::{PaymentOutcome, SessionType, Status};
use ps_contract::session::{LastPaymentError, SavePaymentMethod};
use ps_store::sessions::StoredSession;

pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}\
h1{font-size:1.3rem}.amount{font-size:2rem;font-weight:600;margin:.5rem 0}.merchant{color:inherit;margin:0;font-weight:600}\
.brand{display:flex;align-items:center;gap:.75rem;padding:.75rem 1rem;margin:0 -1rem;border-radius:0}.logo{max-height:40px;width:auto}\
.box{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}.error{background:#fdecea;border-color:#f5c2c0}\
.terms{background:#f6f8fa;font-size:.9rem}label{display:block;margin:.7rem 0 .2rem}\
input[type=text]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}button{margin-top:1rem;width:100%;padding:.7rem;font-size:1rem}\
button.link{background:none;border:none;color:inherit;text-decoration:underline;padding:.5rem}\
.field-error{color:#b00020;margin:.3rem 0 0}.hint{color:#555;font-size:.9rem}";

/// What every page shows first: who is asking (the merchant's name and
/// logo, its id when it has set none), and for how much.
#[derive(Clone)]
struct Header {
    merchant: String,
    amount: String,
    logo: Option<String>,
}

impl Header {
    /// The header, and the stylesheet the merchant's look adds to ours.
    fn of(s: &StoredSession, t: &Lang) -> (Header, String) {
        let look = s.branding.clone().unwrap_or_default();
        let header = Header {
            merchant: look.display_name.clone().unwrap_or_else(|| s.merchant_id.as_str().to_owned()),
            amount: t.money(s.session.currency, s.session.amount),
            // An uploaded logo is served by this host, by its digest.
            logo: look.logo_url.clone().or_else(|| look.logo_image.as_ref().map(|d| format!("/logo/{d}"))),
        };
        (header, theme(&look))
    }
}

/// CSS from a merchant's look. Built only from checked values (`#rrggbb`
/// colours, our own font stacks and radii), never from text a merchant
/// wrote; each colour's text is black or white, whichever reads (WCAG AA).
fn theme(b: &Branding) -> String {
    let mut css = String::new();
    if let Some(f) = b.font {
        css.push_str(&format!("body{{font-family:{}}}", f.stack()));
    }
    if let Some(c) = b.brand_color {
        css.push_str(&format!(".brand{{background:{};color:{}}}", c.css(), c.text_on().css()));
    }
    if let Some(c) = b.button_color {
        css.push_str(&format!("button{{background:{};color:{};border:1px solid {}}}", c.css(), c.text_on().css(), c.text_on().css()));
    }
    if let Some(r) = b.border_style {
        css.push_str(&format!(".box,button,input[type=text],.brand{{border-radius:{}}}", r.radius()));
    }
    css
}

/// Renders a page; a template that fails to render is a bug, shown as a plain error page.
fn render(page: &impl Template) -> String {
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a checkout page did not render");
        "<!doctype html><title>Error</title><h1>Something went wrong</h1>".to_owned()
    })
}

#[derive(Template)]
#[template(path = "processing.html")]
struct ProcessingPage<'a> {
    /// The page's language: its words (`t.text`) and `<html lang>`.
    t: &'a Lang,
    title: String,
    heading: String,
    refresh: bool,
    header: Header,
    theme: String,
    lead: String,
    /// The challenge's action, when the customer may still give up on it.
    give_up: Option<&'a str>,
    csrf: &'a str,
    /// Allows the script that watches for the next state (CSP).
    nonce: &'a str,
}

#[derive(Template)]
#[template(path = "form.html")]
struct FormPage<'a> {
    /// The page's language: its words (`t.text`) and `<html lang>`.
    t: &'a Lang,
    title: String,
    refresh: bool,
    header: Header,
    theme: String,
    problem: Option<String>,
    terms: Option<Vec<String>>,
    save_prompt: bool,
    button: String,
    action: &'a str,
    cancel_action: &'a str,
    cancel_text: String,
    csrf: &'a str,
    /// Allows the page's own script (the card checks) by CSP.
    nonce: &'a str,
    /// A returning customer's saved cards: (payment method id, "Pay ZAR 10.00 with Visa •••• 4242 …").
    saved: Vec<(String, String)>,
    /// What the page's own checks say, as JSON for its script.
    checks: serde_json::Value,
}

#[derive(Template)]
#[template(path = "outcome.html")]
struct OutcomePage<'a> {
    /// The page's language: its words (`t.text`) and `<html lang>`.
    t: &'a Lang,
    title: String,
    refresh: bool,
    header: Header,
    theme: String,
    state: String,
    lead: Option<String>,
    charged: Option<String>,
    refunded: Option<String>,
    mandate: bool,
    return_url: Option<String>,
    return_text: String,
    /// Framed in the merchant's page: the outcome told to it (postMessage, to
    /// its registered origins only), and the way back opens in the top window.
    framed: Option<Framed>,
    nonce: &'a str,
}

/// What an embedded checkout tells the page that frames it.
struct Framed {
    message: serde_json::Value,
    origins: Vec<String>,
}

/// Where the customer goes back to: the merchant's `return_url` with the
/// session's id added (`?session_id=`, as Moment's checkout does), so the
/// merchant's page knows which session to look up.
fn return_to(url: &str, session: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("session_id", session);
            u.to_string()
        }
        // Checked when the session was made; kept as given if it no longer parses.
        Err(_) => url.to_owned(),
    }
}

/// How the customer's bank is asked.
enum Way<'a> {
    Sandbox,
    Stripe { js_url: &'a str, nonce: &'a str, publishable_key: &'a str, secret: &'a str, setup: bool },
    Unavailable,
}

#[derive(Template)]
#[template(path = "challenge.html")]
struct ChallengePage<'a> {
    /// The page's language: its words (`t.text`) and `<html lang>`.
    t: &'a Lang,
    title: String,
    refresh: bool,
    header: Header,
    theme: String,
    challenge_action: &'a str,
    csrf: &'a str,
    way: Way<'a>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    /// The page's language: its words (`t.text`) and `<html lang>`.
    t: &'a Lang,
    title: String,
    refresh: bool,
    theme: String,
    heading: String,
    text: Option<String>,
}

/// The page for a session in its current state, in `t`'s language; `error`
/// is a card problem to show above the form (a message id: the vault's,
/// before any attempt).
pub fn session_page(
    s: &StoredSession,
    t: &Lang,
    action: &str,
    cancel_action: &str,
    csrf: &str,
    nonce: &str,
    error: Option<&str>,
) -> String {
    let st = &s.session;
    let (header, theme) = Header::of(s, t);
    let outcome = |state: &str, heading: &str, lead: Option<&str>, return_text: &str| {
        // Paid outright, or captured from a reservation: what was charged and given back.
        let paid = st.payment.as_ref().filter(|p| p.paid_amount > 0);
        let money = |minor| Arg::Text(t.money(st.currency, minor));
        render(&OutcomePage {
            t,
            title: t.text(state),
            refresh: false,
            header: header.clone(),
            theme: theme.clone(),
            state: t.text(heading),
            lead: lead.map(|l| t.text(l)),
            charged: paid.filter(|p| p.paid_amount != p.amount).map(|p| t.text_with("charged", &[("amount", money(p.paid_amount))])),
            refunded: paid.filter(|p| p.refunded_amount > 0).map(|p| {
                let id = if p.refunded_amount == p.paid_amount { "refunded-in-full" } else { "refunded" };
                t.text_with(id, &[("amount", money(p.refunded_amount))])
            }),
            mandate: st.status == Status::Completed && st.mandate_id.is_some(),
            return_url: st.return_url.as_deref().map(|u| return_to(u, st.id.as_str())),
            return_text: t.text(return_text),
            framed: (s.presentation_mode.embedded() && !s.embed_origins.is_empty()).then(|| Framed {
                message: serde_json::json!({"type": "payment_session.outcome", "payment_session_id": st.id, "status": st.status,
                                            "payment_outcome": st.payment_outcome}),
                origins: s.embed_origins.clone(),
            }),
            nonce,
        })
    };
    let processing = |title: &str, heading: &str, lead: &str| {
        render(&ProcessingPage {
            t,
            title: t.text(title),
            heading: t.text(heading),
            refresh: true,
            header: header.clone(),
            theme: theme.clone(),
            lead: t.text(lead),
            give_up: None,
            csrf,
            nonce,
        })
    };
    match (st.status, st.payment_outcome) {
        (Status::Active, PaymentOutcome::Pending) => processing("title-processing", "heading-processing", "lead-processing"),
        // Asked to cancel: lifecycle cancels it in a moment; no card is taken meanwhile.
        (Status::Active, _) if s.cancel_requested => processing("title-cancelling", "heading-cancelling", "lead-cancelling"),
        (Status::Active, _) => form(s, t, action, cancel_action, csrf, nonce, error),
        (Status::Completed, result) => {
            let captured = st.payment.as_ref().is_some_and(|p| p.paid_amount > 0);
            let what = match result {
                PaymentOutcome::Paid => "outcome-paid",
                // A reservation stays reserved once captured: the customer was charged.
                PaymentOutcome::Reserved if captured => "outcome-paid",
                PaymentOutcome::Reserved => "outcome-authorised",
                PaymentOutcome::PaymentMethodVerified => "outcome-verified",
                _ => "outcome-not-taken",
            };
            outcome(what, what, None, "return-to-merchant")
        }
        (Status::Expired, _) => outcome("title-expired", "heading-expired", Some("lead-expired"), "back-to-merchant"),
        (Status::Cancelled, _) => outcome("title-cancelled", "heading-cancelled", Some("lead-cancelled"), "back-to-merchant"),
    }
}

/// A card brand as people write it; an unknown one is "Card" in the page's language.
fn brand_name(t: &Lang, brand: &str) -> String {
    match brand {
        "visa" => "Visa".to_owned(),
        "mastercard" => "Mastercard".to_owned(),
        "amex" => "American Express".to_owned(),
        "discover" => "Discover".to_owned(),
        _ => t.text("brand-card"),
    }
}

/// What the customer is told of a decline (a message id): the reason only
/// where they can act on it. Anything else (a stolen card, a wrong security
/// code, the issuer's rules) reads as a plain decline, so the page is no
/// oracle for card testing. The merchant still gets the exact reason in
/// `last_payment_error`.
pub fn decline_for_customer(e: &LastPaymentError) -> &'static str {
    match e.decline_code.as_deref() {
        Some("insufficient_funds") => "decline-insufficient-funds",
        Some("expired_card") => "decline-expired",
        _ => "decline-other",
    }
}

/// The vault's refusal of a card (its `code`) as a message id. Codes a
/// processor adds (a wrong CVC, a stolen card) read as one plain refusal.
pub fn card_problem(code: &str) -> &'static str {
    match code {
        "incorrect_number" => "card-incorrect-number",
        "invalid_expiry" => "card-invalid-expiry",
        "expired_card" => "card-expired",
        "invalid_cvc" => "card-invalid-cvc",
        _ => "card-refused",
    }
}

fn form(s: &StoredSession, t: &Lang, action: &str, cancel_action: &str, csrf: &str, nonce: &str, vault_error: Option<&str>) -> String {
    let st = &s.session;
    let (header, theme) = Header::of(s, t);
    let problem = vault_error.map(|id| t.text(id)).or_else(|| {
        st.last_payment_error.as_ref().map(|e| t.text_with("decline-retry", &[("reason", t.text(decline_for_customer(e)).into())]))
    });
    let terms = (st.session_type == SessionType::FirstInSeries).then(|| {
        let terms = s.mandate_terms.clone().unwrap_or_else(|| ps_contract::mandate::MandateTerms::unconstrained(st.currency));
        terms::describe(t, &header.merchant, &terms)
    });
    let amount = || Arg::Text(t.money(st.currency, st.amount));
    let button = match (st.session_type, st.amount == 0) {
        (SessionType::FirstInSeries, true) => t.text("button-verify-authorise"),
        (SessionType::FirstInSeries, false) => t.text_with("button-pay-authorise", &[("amount", amount())]),
        (_, true) => t.text("button-verify"),
        _ => t.text_with("button-pay", &[("amount", amount())]),
    };
    let cancel_text = if st.return_url.is_some() {
        t.text_with("cancel-and-return", &[("merchant", header.merchant.as_str().into())])
    } else {
        t.text("cancel-payment")
    };
    let saved = s
        .saved_cards
        .iter()
        .map(|c| {
            let card = t.text_with(
                "saved-card",
                &[
                    ("brand", brand_name(t, &c.brand).into()),
                    ("last4", c.last4.as_str().into()),
                    ("expiry", format!("{:02}/{:02}", c.exp_month, c.exp_year % 100).into()),
                ],
            );
            (c.id.clone(), t.text_with("saved-pay", &[("action", button.as_str().into()), ("card", card.into())]))
        })
        .collect();
    let checks = serde_json::json!({
        "number": t.text("check-number"), "format": t.text("check-expiry-format"), "expired": t.text("check-expired"),
    });
    render(&FormPage {
        t,
        title: t.text("title-checkout"),
        refresh: false,
        header,
        theme,
        problem,
        terms,
        save_prompt: st.session_type == SessionType::OneTime && s.save_payment_method == SavePaymentMethod::Prompt,
        button,
        action,
        cancel_action,
        cancel_text,
        csrf,
        nonce,
        saved,
        checks,
    })
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

/// An attempt waiting for the customer to authenticate (3-D Secure). The
/// sandbox's issuer asks on a page of ours (no script needed); Stripe's through
/// Stripe.js with the intent's client secret. Either way the outcome comes
/// back here (`challenge_action`) and the gateway asks the processor what it was.
pub fn challenge_page(
    s: &StoredSession,
    t: &Lang,
    challenge_action: &str,
    csrf: &str,
    action: &NextAction,
    browser: Option<&BrowserProcessor<'_>>,
) -> String {
    let way = match (action.kind, browser, action.client_secret.as_deref()) {
        (ActionKind::SandboxChallenge, _, _) => Way::Sandbox,
        // The outcome is only reported: the gateway asks Stripe what it was.
        (kind @ (ActionKind::StripePayment | ActionKind::StripeSetup), Some(b), Some(secret)) => Way::Stripe {
            js_url: b.js_url,
            nonce: b.nonce,
            publishable_key: b.publishable_key,
            secret,
            setup: kind == ActionKind::StripeSetup,
        },
        // A Stripe challenge with nothing configured to run it: the customer can only start again.
        _ => Way::Unavailable,
    };
    let (header, theme) = Header::of(s, t);
    render(&ChallengePage { t, title: t.text("title-challenge"), refresh: false, header, theme, challenge_action, csrf, way })
}

/// A challenge the customer has answered: the processor's word is awaited
/// (the page refreshes itself); the customer may still give up and use another card.
pub fn challenge_answered(s: &StoredSession, t: &Lang, challenge_action: &str, csrf: &str, nonce: &str) -> String {
    let (header, theme) = Header::of(s, t);
    render(&ProcessingPage {
        t,
        title: t.text("title-processing"),
        heading: t.text("heading-processing"),
        refresh: true,
        header,
        theme,
        lead: t.text("lead-bank-answer"),
        give_up: Some(challenge_action),
        csrf,
        nonce,
    })
}

pub fn not_found(t: &Lang) -> String {
    render(&MessagePage {
        t,
        title: t.text("title-not-found"),
        refresh: false,
        theme: String::new(),
        heading: t.text("title-not-found"),
        text: None,
    })
}

/// A page that only says something: a title and a text, both message ids.
pub fn message(t: &Lang, title: &str, text: &str) -> String {
    render(&MessagePage { t, title: t.text(title), refresh: false, theme: String::new(), heading: t.text(title), text: Some(t.text(text)) })
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
        let t = Lang::default();
        assert_eq!(t.text(decline_for_customer(&e("insufficient_funds"))), "Your card has insufficient funds.");
        assert_eq!(t.text(decline_for_customer(&e("expired_card"))), "Your card has expired.");
        for code in ["incorrect_cvc", "stolen_card", "generic_decline", "processing_error", "fraudulent"] {
            assert_eq!(decline_for_customer(&e(code)), "decline-other", "{code}");
        }
        assert_eq!(card_problem("incorrect_cvc"), "card-refused", "a processor's exact reason is not the page's to give");
    }

    #[test]
    fn a_hostile_value_cannot_end_the_script_or_add_markup() {
        let page = render(&ChallengePage {
            t: &Lang::default(),
            title: "Confirm with your bank".into(),
            refresh: false,
            header: Header {
                merchant: "<b>shop</b>".into(),
                amount: "ZAR 1.00".into(),
                logo: Some("https://x.example/\"><script>".into()),
            },
            theme: String::new(),
            challenge_action: "/pay/x\"><script>",
            csrf: "c",
            way: Way::Stripe {
                js_url: "https://js.stripe.com/v3",
                nonce: "n",
                publishable_key: "pk_test_x",
                secret: "pi_1_secret_</script><script>alert(1)</script>",
                setup: false,
            },
        });
        assert!(!page.contains("</script><script>alert"), "{page}");
        assert!(!page.contains("<b>") && !page.contains("\"><script>"), "{page}");
        // JSON inside the script, with no `<` that could end it.
        assert!(page.contains(r#"const secret = "pi_1_secret_\u003c/script\u003e"#), "{page}");
        assert!(page.contains("stripe.confirmCardPayment(secret)"));
    }

    #[test]
    fn the_way_back_names_the_session() {
        assert_eq!(return_to("https://shop.example/r", "ps_1"), "https://shop.example/r?session_id=ps_1");
        assert_eq!(return_to("https://shop.example/r?order=7#top", "ps_1"), "https://shop.example/r?order=7&session_id=ps_1#top");
    }

    #[test]
    fn a_merchants_look_becomes_css_from_checked_values_only() {
        use ps_contract::branding::{BorderStyle, Color, Font};
        let b = Branding {
            display_name: Some("</style><script>".into()),
            brand_color: Color::parse("#ffcc00"),
            button_color: Color::parse("#0a2540"),
            border_style: Some(BorderStyle::Pill),
            font: Some(Font::Serif),
            ..Branding::default()
        };
        let css = theme(&b);
        assert!(css.contains(".brand{background:#ffcc00;color:#000000}"), "black text on yellow: {css}");
        assert!(css.contains("button{background:#0a2540;color:#ffffff"), "white text on navy: {css}");
        assert!(css.contains("border-radius:999px") && css.contains("Georgia"), "{css}");
        assert!(!css.contains('<'), "the name never reaches the stylesheet: {css}");
        assert_eq!(theme(&Branding::default()), "");
    }

    #[test]
    fn every_page_escapes_what_it_is_given() {
        let t = Lang::default();
        let page = render(&MessagePage {
            t: &t,
            title: "<i>x</i>".into(),
            refresh: false,
            theme: String::new(),
            heading: "<i>x</i>".into(),
            text: Some("a & 'b'".into()),
        });
        assert!(!page.contains("<i>") && !page.contains("'b'") && page.contains("a &#38; "), "{page}");
        assert!(page.starts_with("<!doctype html>") && page.contains("<style>body{"), "{page}");
        assert!(page.contains(r#"<html lang="en">"#), "{page}");
        let fr = message(&Lang::negotiate(Some("fr-CA"), None), "title-not-found", "cannot-load");
        assert!(fr.contains(r#"<html lang="fr">"#) && fr.contains("<h1>Page introuvable</h1>"), "{fr}");
    }
}
