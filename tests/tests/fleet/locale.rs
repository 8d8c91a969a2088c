//! The checkout's language (DESIGN §13): the create's `locale`, else the
//! customer's `Accept-Language`, among English, French and Portuguese; words,
//! amounts and dates as that locale writes them.

use fantoccini::Locator;
use integration_tests::browser::Browser;
use integration_tests::{Command, TestEnv};
use serde_json::json;

/// What Chromium shows, with the no-break spaces CLDR puts in numbers made plain.
fn plain(s: String) -> String {
    s.replace(['\u{a0}', '\u{202f}'], " ")
}

/// A French mandate checkout in Chromium: terms, amounts and dates in French,
/// the page's own card checks and a decline in French, the receipt in French.
/// Saved as a test artefact, with its Portuguese twin; axe-core finds nothing
/// serious in French either (the page's `lang` says what it speaks).
#[tokio::test]
async fn a_customer_reads_and_pays_a_checkout_in_french() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let body = |locale: &str| {
        json!({"type": "first_in_series", "amount": 19900, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
            "return_url": "https://gym.example/done", "options": {"checkout_options": {"locale": locale}},
            "mandate_options": {"type": "scheduled", "amount": 19900, "recurrence": {"type": "monthly", "interval_count": 1, "on": 1},
                                "validity_period": {"start_date": "2026-12-01", "end_date": "2027-11-30"}, "max_occurrences": 12, "total_amount": 238800}})
    };
    let fr = env.call(Command::create("gym", &body("fr-FR"))).await.body;
    let browser = Browser::launch().await;
    browser.c().goto(fr["session_url"].as_str().unwrap()).await.unwrap();
    let lang = browser.c().find(Locator::Css("html")).await.unwrap().attr("lang").await.unwrap();
    assert_eq!(lang.as_deref(), Some("fr"));
    assert_eq!(plain(browser.text("amount").await), "199,00 ZAR");
    let terms = plain(browser.text("terms").await);
    assert!(terms.contains("Vous autorisez gym à débiter cette carte de 199,00 ZAR, une fois par mois, le 1er du mois."), "{terms}");
    assert!(terms.contains("du 1 décembre 2026 au 30 novembre 2027"), "{terms}");
    assert!(terms.contains("Au plus 12 prélèvements, pour un total d'au plus 2 388,00 ZAR."), "{terms}");
    assert_eq!(plain(browser.text("pay").await), "Payer 199,00 ZAR et autoriser");
    assert_eq!(browser.text("cancel").await, "Annuler et retourner chez gym");
    browser.save_screenshot("checkout-fr-form").await;
    let found = browser.serious_a11y_violations().await;
    assert!(found.is_empty(), "the French form: {found:#?}");

    // The page's own checks speak French too.
    browser.c().find(Locator::Id("card_number")).await.unwrap().send_keys("4242424242424241").await.unwrap();
    browser.c().find(Locator::Id("expiry")).await.unwrap().send_keys("12/34").await.unwrap();
    browser.c().find(Locator::Id("cvc")).await.unwrap().send_keys("123").await.unwrap();
    browser.c().find(Locator::Id("pay")).await.unwrap().click().await.unwrap();
    assert_eq!(plain(browser.text("card_number_error").await), "Vérifiez le numéro de carte : ce n'est pas un numéro de carte valide.");
    browser.c().find(Locator::Id("card_number")).await.unwrap().clear().await.unwrap();
    for id in ["expiry", "cvc"] {
        browser.c().find(Locator::Id(id)).await.unwrap().clear().await.unwrap();
    }

    browser.pay("4000000000000002").await;
    browser.wait_for_text("error", "Votre carte a été refusée. Veuillez réessayer ou utiliser une autre carte.").await;
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Paiement réussi").await;
    assert_eq!(browser.text("mandate").await, "Votre autorisation de paiements futurs est en place.");
    assert_eq!(browser.text("return").await, "Retourner chez le marchand");
    browser.save_screenshot("checkout-fr-receipt").await;

    let pt = env.call(Command::create("gym", &body("pt"))).await.body;
    browser.c().goto(pt["session_url"].as_str().unwrap()).await.unwrap();
    let terms = plain(browser.text("terms").await);
    assert!(terms.contains("Autoriza gym a cobrar neste cartão 199,00 ZAR, uma vez por mês, no dia 1 do mês."), "{terms}");
    assert!(terms.contains("de 1 de dezembro de 2026 a 30 de novembro de 2027"), "{terms}");
    browser.save_screenshot("checkout-pt-form").await;
    browser.close().await;
    env.finish().await;
}

/// Without a `locale`, the customer's browser decides (`Accept-Language`, in
/// its order of preference, among the languages we have); a session's
/// `locale` outranks it; a language we lack falls through to the next; an
/// ill-formed tag is refused at the create, named as the sender wrote it.
#[tokio::test]
async fn the_sessions_locale_then_the_customers_accept_language_decides() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let page = async |url: &str, accept: &str| {
        let r = reqwest::Client::new().get(url).header("accept-language", accept).send().await.unwrap();
        assert_eq!(r.status(), 200);
        plain(r.text().await.unwrap())
    };
    let open = env.call(Command::create("shop", &json!({"amount": 4500, "currency": "ZAR"}))).await.body;
    let url = open["session_url"].as_str().unwrap();
    let pt = page(url, "de-DE,pt-PT;q=0.9,en;q=0.5").await;
    assert!(pt.contains(r#"<html lang="pt">"#) && pt.contains("Pagar 45,00 ZAR") && pt.contains("Número do cartão"), "{pt}");
    let en = page(url, "de-DE").await;
    assert!(en.contains(r#"<html lang="en">"#) && en.contains("Pay ZAR 45.00"), "{en}");

    let zu = env.call(Command::create("shop", &json!({"amount": 4500, "currency": "ZAR", "locale": "zu"}))).await.body;
    assert!(
        page(zu["session_url"].as_str().unwrap(), "fr-CA,fr;q=0.8").await.contains("Payer 45,00 ZAR"),
        "isiZulu we lack: the customer's French"
    );
    let fr = env.call(Command::create("shop", &json!({"amount": 4500, "currency": "ZAR", "locale": "fr"}))).await.body;
    assert!(page(fr["session_url"].as_str().unwrap(), "pt-PT").await.contains("Payer 45,00 ZAR"), "the session's locale first");
    // Unknown session: a 404 in the customer's language.
    let r =
        reqwest::Client::new().get(format!("{}x", url.split("?t=").next().unwrap())).header("accept-language", "fr").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Page introuvable"));

    for (body, param) in [
        (json!({"amount": 4500, "currency": "ZAR", "locale": "not a tag!"}), "locale"),
        (json!({"amount": 4500, "currency": "ZAR", "locale": "und"}), "locale"),
        (
            json!({"amount": 4500, "currency": "ZAR", "options": {"checkout_options": {"locale": "1234"}}}),
            "options.checkout_options.locale",
        ),
    ] {
        let r = env.call(Command::create("shop", &body)).await;
        assert_eq!(
            (r.error_code(), r.body["error"]["param"].as_str()),
            (Some("parameter_invalid_value"), Some(param)),
            "{body}: {}",
            r.body
        );
    }
    let r = env.call(Command::create("shop", &json!({"amount": 4500, "currency": "ZAR", "locale": 7}))).await;
    assert_eq!(r.error_code(), Some("parameter_invalid_type"), "{}", r.body);
    env.finish().await;
}
