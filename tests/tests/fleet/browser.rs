//! The checkout in a real headless Chromium (Debian's `chromium` and
//! `chromedriver`, installed by `scripts/ensure-browser.sh`).

use fantoccini::Locator;
use integration_tests::browser::Browser;
use integration_tests::{Command, TestEnv};
use serde_json::json;

/// The merchant's site the customer returns to.
async fn shop() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/return", axum::routing::get(|| async { axum::response::Html("<h1 id=\"shop\">Back at the shop</h1>") }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/return")
}

#[tokio::test]
async fn a_customer_pays_in_chromium_after_a_decline_and_returns_to_the_shop() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let return_url = shop().await;
    let body = json!({"type": "one_time", "amount": 12550, "currency": "ZAR", "return_url": return_url});
    let s = env.call(Command::create("shop", &body)).await.body;
    let browser = Browser::launch().await;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("amount").await, "ZAR 125.50");
    assert_eq!(browser.text("merchant").await, "shop");

    browser.pay("4000000000000002").await;
    browser.wait_for_text("error", "Your card was declined.").await;

    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;
    browser.c().find(Locator::Id("return")).await.unwrap().click().await.unwrap();
    assert_eq!(browser.text("shop").await, "Back at the shop");
    // Back at the merchant's return_url with the session named, as Moment's checkout does.
    assert_eq!(browser.c().current_url().await.unwrap().as_str(), format!("{return_url}?session_id={}", s["id"].as_str().unwrap()));
    assert_eq!(env.session(s["id"].as_str().unwrap()).await["payment_outcome"], "paid");
    browser.close().await;
    env.finish().await;
}

#[tokio::test]
async fn a_customer_accepts_a_mandate_in_chromium() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let return_url = shop().await;
    let body = json!({"type": "first_in_series", "amount": 19900, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
        "return_url": return_url,
        "mandate_options": {"type": "scheduled", "amount": 19900, "recurrence": {"type": "monthly", "interval_count": 1, "on": 1},
                            "validity_period": {"start_date": "2026-12-01", "end_date": "2027-11-30"}, "max_occurrences": 12, "total_amount": 238800}});
    let s = env.call(Command::create("gym", &body)).await.body;
    let browser = Browser::launch().await;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    let terms = browser.text("terms").await;
    assert!(terms.contains("You authorise gym to charge this card ZAR 199.00, once every month, on day 1 of the month."), "{terms}");
    // Chromium asks for en-US: dates as the US writes them (plain `en` would read "1 December 2026").
    assert!(terms.contains("from December 1, 2026 until November 30, 2027"), "{terms}");
    assert!(terms.contains("At most 12 charges, and no more than ZAR 2,388.00 in total."), "{terms}");
    assert_eq!(browser.text("pay").await, "Pay ZAR 199.00 and authorise");

    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;
    assert_eq!(browser.text("mandate").await, "Your authorisation for future payments is in place.");
    browser.c().find(Locator::Id("return")).await.unwrap().click().await.unwrap();
    assert_eq!(browser.text("shop").await, "Back at the shop");
    assert!(env.session(s["id"].as_str().unwrap()).await["mandate_id"].is_string());
    browser.close().await;
    env.finish().await;
}

/// A merchant's look (DESIGN §13), set with psctl through
/// `checkout_settings.update`, overridden by a session's `branding`, as
/// Chromium renders it; hostile values are refused at the edge. The branded
/// page is saved as a test artefact (`target/test-artefacts/`).
#[tokio::test]
async fn a_merchants_name_logo_and_colours_reach_its_checkout() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let logo = "https://cdn.koffie.example/logo.png";
    // Run beside the fleet's tasks: psctl waits for lifecycle's reply.
    let set = env
        .psctl_async(&[
            "--json",
            "checkout-settings",
            "set",
            "--merchant",
            "koffie",
            "--display-name",
            "Kaapse Koffie",
            "--logo-url",
            logo,
            "--brand-color",
            "#6F4E37",
            "--button-color",
            "#ffcc00",
            "--border-style",
            "pill",
            "--font",
            "serif",
        ])
        .await;
    let settings: serde_json::Value = serde_json::from_str(&set).unwrap_or_else(|e| panic!("{e}: {set}"));
    assert_eq!((settings["object"].as_str(), settings["brand_color"].as_str()), (Some("checkout_settings"), Some("#6f4e37")), "{settings}");

    // Nothing a merchant writes becomes CSS or markup.
    let update = |body: serde_json::Value| Command::new("checkout_settings.update", &body).header("merchant-id", "koffie");
    for (body, code, param) in [
        (json!({"brand_color": "red;}body{display:none"}), "parameter_invalid_value", "brand_color"),
        (json!({"logo_url": "javascript:alert(1)"}), "url_invalid", "logo_url"),
        (json!({"logo_url": "http://cdn.koffie.example/logo.png"}), "url_invalid", "logo_url"),
        (json!({"font": "Comic Sans MS"}), "parameter_invalid_value", "font"),
        (json!({"embed_origins": ["https://shop.example/*"]}), "url_invalid", "embed_origins[0]"),
        (json!({"css": "body{}"}), "parameter_unknown", "css"),
    ] {
        let r = env.call(update(body.clone())).await;
        assert_eq!((r.error_code(), r.body["error"]["param"].as_str()), (Some(code), Some(param)), "{body}: {}", r.body);
    }
    let hostile = json!({"amount": 500, "currency": "ZAR", "branding": {"button_color": "#fff; background-image:url(//evil)"}});
    let r = env.call(Command::create("koffie", &hostile)).await;
    assert_eq!((r.error_code(), r.body["error"]["param"].as_str()), (Some("parameter_invalid_value"), Some("branding.button_color")));
    let kept = env.call(Command::new("checkout_settings.retrieve", &json!({})).header("merchant-id", "koffie")).await.body;
    assert_eq!(kept, settings, "a refused update changed nothing");

    // The merchant's look, and a session's own name over it.
    let plain = env.call(Command::create("koffie", &json!({"amount": 4500, "currency": "ZAR"}))).await.body;
    let special = json!({"amount": 4500, "currency": "ZAR", "branding": {"display_name": "Kaapse Koffie — Black Friday", "border_style": "rectangular"}});
    let special = env.call(Command::create("koffie", &special)).await.body;
    let browser = Browser::launch().await;
    let style = |id: &'static str, prop: &'static str| {
        let c = browser.c().clone();
        async move {
            let e = c.find(Locator::Id(id)).await.unwrap();
            e.css_value(prop).await.unwrap()
        }
    };
    browser.c().goto(plain["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("merchant").await, "Kaapse Koffie", "its name, not its id");
    assert_eq!(browser.c().find(Locator::Id("logo")).await.unwrap().attr("src").await.unwrap().as_deref(), Some(logo));
    assert_eq!(style("brand", "background-color").await, "rgba(111, 78, 55, 1)");
    assert_eq!(style("brand", "color").await, "rgba(255, 255, 255, 1)", "white reads on coffee brown");
    assert_eq!(style("pay", "background-color").await, "rgba(255, 204, 0, 1)");
    assert_eq!(style("pay", "color").await, "rgba(0, 0, 0, 1)", "black text on yellow");
    assert_eq!(style("pay", "border-top-left-radius").await, "999px");
    assert!(style("merchant", "font-family").await.contains("Georgia"));
    browser.save_screenshot("checkout-branded").await;

    browser.c().goto(special["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("merchant").await, "Kaapse Koffie — Black Friday");
    assert_eq!(style("pay", "border-top-left-radius").await, "0px", "the session's field over the merchant's");
    assert_eq!(style("pay", "background-color").await, "rgba(255, 204, 0, 1)", "the rest is the merchant's");
    browser.close().await;

    // Cleared, a field is ours again.
    let cleared = env.call(update(json!({"display_name": null}))).await.body;
    assert!(cleared["display_name"].is_null() && cleared["font"] == "serif", "{cleared}");
    env.finish().await;
}

/// "Cancel and return": the customer cancels on the checkout, the session
/// ends `cancelled` and the merchant hears of it as of any cancel; the page
/// leads back to `return_url` with the session named, and takes no card.
#[tokio::test]
async fn a_customer_cancels_in_chromium_and_returns_to_the_shop() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let return_url = shop().await;
    let s = env.call(Command::create("shop", &json!({"amount": 12550, "currency": "ZAR", "return_url": return_url}))).await.body;
    let id = s["id"].as_str().unwrap();
    let browser = Browser::launch().await;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("cancel").await, "Cancel and return to shop");
    // The same checkout open in another tab, its form loaded before the cancel.
    let other_tab = integration_tests::CheckoutClient::new();
    let url = s["session_url"].as_str().unwrap();
    let (csrf, cookie) = other_tab.form_tokens(url).await;
    browser.c().find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("state", "This payment was cancelled").await;
    let updated = env.event_about("payment_session.updated", id).await;
    assert_eq!(updated["data"]["status"], "cancelled", "announced as any cancel is: {updated}");
    // The form is gone here, and the other tab's card starts nothing.
    assert!(browser.c().find(Locator::Id("pay")).await.is_err());
    other_tab.submit(url, &csrf, Some(&cookie), "4242424242424242").await;
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 0, "no card taken after the cancel");
    browser.c().find(Locator::Id("return")).await.unwrap().click().await.unwrap();
    assert_eq!(browser.text("shop").await, "Back at the shop");
    assert_eq!(browser.c().current_url().await.unwrap().as_str(), format!("{return_url}?session_id={id}"));
    browser.close().await;
    env.finish().await;
}

/// WCAG 2.1 AA as axe-core checks it: no serious or critical violation on
/// any checkout page (the form, with a decline shown, the 3-D Secure
/// challenge, processing, the receipt, cancelled, expired), plain and in a
/// merchant's colours, and at 320 px wide.
#[tokio::test]
async fn every_checkout_page_passes_axe_core() {
    let mut env = TestEnv::new().await;
    // A slow processor keeps the processing page up long enough to check it.
    env.start_gateway(&[("SANDBOX_LATENCY_MS", "3000")]).await;
    env.start_lifecycle(&[]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    env.start_webhooks(&[]).await;
    let look = json!({"display_name": "Kaapse Koffie", "brand_color": "#ffcc00", "button_color": "#6f4e37", "border_style": "pill"});
    assert!(env.call(Command::new("checkout_settings.update", &look).header("merchant-id", "koffie")).await.error_code().is_none());
    let browser = Browser::launch().await;
    let mut seen = vec![];
    for merchant in ["shop", "koffie"] {
        // Each page checked, and saved as it looks (target/test-artefacts/checkout-<merchant>-<page>.png).
        let check = async |page: &'static str| {
            let found = browser.serious_a11y_violations().await;
            assert!(found.is_empty(), "{page}: {found:#?}");
            browser.save_screenshot(&format!("checkout-{merchant}-{}", page.replace(' ', "-"))).await;
            page
        };
        let session =
            |amount: i64| Command::create(merchant, &json!({"amount": amount, "currency": "ZAR", "return_url": "https://shop.example/r"}));
        let s = env.call(session(12550)).await.body;
        browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
        seen.push(check("form").await);
        browser.c().set_window_size(320, 640).await.unwrap();
        seen.push(check("form at 320 px").await);
        browser.c().set_window_size(1024, 768).await.unwrap();
        browser.pay("4000000000009995").await;
        browser.wait_for_text("error", "insufficient funds").await;
        seen.push(check("form with a decline").await);
        browser.pay("4000002760003184").await;
        browser.wait_for_text("state", "Confirm this payment with your bank").await;
        seen.push(check("3-D Secure challenge").await);
        browser.c().find(fantoccini::Locator::Id("authenticate")).await.unwrap().click().await.unwrap();
        browser.wait_for_text("state", "Processing").await;
        seen.push(check("processing").await);
        browser.wait_for_text("state", "Payment successful").await;
        seen.push(check("receipt").await);

        let c = env.call(session(500)).await.body;
        browser.c().goto(c["session_url"].as_str().unwrap()).await.unwrap();
        browser.c().find(fantoccini::Locator::Id("cancel")).await.unwrap().click().await.unwrap();
        browser.wait_for_text("state", "This payment was cancelled").await;
        seen.push(check("cancelled").await);

        let e = env.call(session(500)).await.body;
        let past = "UPDATE payment_sessions SET expires_at = now() - interval '1 minute' WHERE id = $1";
        env.pool.get().await.unwrap().execute(past, &[&e["id"].as_str().unwrap()]).await.unwrap();
        browser.c().goto(e["session_url"].as_str().unwrap()).await.unwrap();
        browser.wait_for_text("state", "This payment link has expired").await;
        seen.push(check("expired").await);
    }
    assert_eq!(seen.len(), 16, "eight pages, plain and branded");
    browser.close().await;
    env.finish().await;
}

/// The card form checks what it can before anything is sent: the number
/// grouped as typed with its brand named, Luhn and expiry refused in the page
/// with the error tied to its field; nothing reaches the vault until they pass.
#[tokio::test]
async fn the_card_form_checks_the_number_and_expiry_in_the_page() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = env.call(Command::create("shop", &json!({"amount": 700, "currency": "ZAR"}))).await.body;
    let browser = Browser::launch().await;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    let field = |id: &'static str| {
        let c = browser.c().clone();
        async move { c.find(Locator::Id(id)).await.unwrap() }
    };
    field("card_number").await.send_keys("4242424242424241").await.unwrap();
    assert_eq!(field("card_number").await.prop("value").await.unwrap().as_deref(), Some("4242 4242 4242 4241"));
    assert_eq!(browser.text("card_brand").await, "(Visa)");
    assert_eq!(browser.text("merchant").await, "shop", "the brand hint is the field's own, the header keeps the merchant");
    field("expiry").await.send_keys("01/20").await.unwrap();
    field("cvc").await.send_keys("123").await.unwrap();
    field("pay").await.click().await.unwrap();
    assert_eq!(browser.text("card_number_error").await, "Check the card number: it is not a valid card number.");
    assert_eq!(browser.text("expiry_error").await, "This card has expired.");
    assert_eq!(field("card_number").await.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    assert_eq!(field("card_number").await.attr("aria-describedby").await.unwrap().as_deref(), Some("card_number_error"));
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 0, "nothing sent");

    field("card_number").await.clear().await.unwrap();
    field("card_number").await.send_keys("4242424242424242").await.unwrap();
    field("expiry").await.clear().await.unwrap();
    field("expiry").await.send_keys("12/34").await.unwrap();
    field("pay").await.click().await.unwrap();
    browser.wait_for_text("state", "Payment successful").await;
    browser.close().await;
    env.finish().await;
}

/// A returning customer is offered the card they saved for their own
/// checkouts (brand and last4, never the number) and pays with it in one
/// press; a saved card the page did not offer them is refused.
#[tokio::test]
async fn a_returning_customer_pays_with_a_saved_card() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let first = json!({"amount": 1500, "currency": "ZAR", "customer": {"name": "Ada", "email": "ada@example.com"}, "save_payment_method": "always"});
    let s = env.call(Command::create("shop", &first)).await.body;
    let browser = Browser::launch().await;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    assert!(browser.c().find(Locator::Id("saved")).await.is_err(), "nothing saved yet");
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    let customer = done["data"]["customer_id"].as_str().unwrap().to_owned();

    let again = env.call(Command::create("shop", &json!({"amount": 900, "currency": "ZAR", "customer_id": customer}))).await.body;
    browser.c().goto(again["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("saved_1").await, "Pay ZAR 9.00 with Visa •••• 4242 (expires 12/34)");
    browser.c().find(Locator::Id("saved_1")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("state", "Payment successful").await;
    let c = env.pool.get().await.unwrap();
    let attempt = c
        .query_one("SELECT payment_method_id, card_token FROM payment_attempts WHERE session_id = $1", &[&again["id"].as_str().unwrap()])
        .await
        .unwrap();
    assert!(attempt.get::<_, Option<String>>(0).is_some_and(|pm| pm.starts_with("pm_")), "charged the saved method");
    assert_eq!(attempt.get::<_, Option<String>>(1), None, "no card entered");
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 1, "the one card, vaulted once");
    browser.close().await;

    // Someone else's saved card, or a made-up one, is not taken.
    let stranger = env.call(Command::create("shop", &json!({"amount": 900, "currency": "ZAR"}))).await.body;
    let url = stranger["session_url"].as_str().unwrap();
    let pm: String = attempt.get(0);
    let tab = integration_tests::CheckoutClient::new();
    let (csrf, cookie) = tab.form_tokens(url).await;
    let r = reqwest::Client::new()
        .post(url)
        .header("cookie", cookie)
        .form(&[("csrf", csrf.as_str()), ("payment_method_id", pm.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("That saved card cannot be used here."));
    let none =
        c.query_one("SELECT count(*) FROM payment_attempts WHERE session_id = $1", &[&stranger["id"].as_str().unwrap()]).await.unwrap();
    assert_eq!(none.get::<_, i64>(0), 0);
    drop(c);
    env.finish().await;
}

/// A merchant uploads its logo (psctl `--logo-file`, the `logo_image` of
/// `checkout_settings.update`): kept by its digest, served by the checkout
/// from its own host as the type its bytes are (never sniffed, never
/// script), shown on its pages; a session's own `logo_url` is over it, and
/// setting a URL later clears it. What is not a PNG, JPEG or WebP, or is
/// too large, is refused, named.
#[tokio::test]
async fn a_merchant_uploads_its_logo_and_its_checkout_serves_it() {
    use base64::Engine;
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    // A 1×1 PNG.
    let png = base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
        .unwrap();
    let file = std::env::temp_dir().join(format!("ps-logo-{}.png", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, &png).unwrap();
    let set = env.psctl_async(&["--json", "checkout-settings", "set", "--merchant", "koffie", "--logo-file", file.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&file);
    let settings: serde_json::Value = serde_json::from_str(&set).unwrap_or_else(|e| panic!("{e}: {set}"));
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&png));
    assert_eq!(settings["logo_image"].as_str(), Some(digest.as_str()), "{settings}");
    assert!(settings["logo_url"].is_null(), "{settings}");

    // Hostile or oversized uploads are refused at the edge.
    let update = |body: serde_json::Value| Command::new("checkout_settings.update", &body).header("merchant-id", "koffie");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let svg = b64(br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#);
    let html_as_png = b64(b"<html><script>alert(1)</script></html>");
    let mut huge = png.clone();
    huge.resize(200 * 1024, 0);
    for (body, code) in [
        (json!({"logo_image": svg}), "parameter_invalid_value"),
        (json!({"logo_image": html_as_png}), "parameter_invalid_value"),
        (json!({"logo_image": "not base64!"}), "parameter_invalid_value"),
        (json!({"logo_image": b64(&huge)}), "string_too_long"),
        (json!({"logo_image": b64(&png), "logo_url": "https://cdn.example/l.png"}), "parameter_conflict"),
    ] {
        let r = env.call(update(body)).await;
        assert_eq!((r.error_code(), r.body["error"]["param"].as_str()), (Some(code), Some("logo_image")), "{}", r.body);
    }

    let plain = env.call(Command::create("koffie", &json!({"amount": 4500, "currency": "ZAR"}))).await.body;
    let page_url = plain["session_url"].as_str().unwrap();
    let origin = page_url.split("/pay/").next().unwrap().to_owned();
    let served = reqwest::get(format!("{origin}/logo/{digest}")).await.unwrap();
    assert_eq!(served.status(), 200);
    let header = |name: &str| served.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("content-type"), "image/png");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(header("content-security-policy").contains("sandbox"));
    assert!(header("cache-control").contains("immutable"));
    assert_eq!(served.bytes().await.unwrap().as_ref(), png.as_slice());
    for wrong in
        [format!("{origin}/logo/{}", "0".repeat(64)), format!("{origin}/logo/{}", digest.to_uppercase()), format!("{origin}/logo/x")]
    {
        assert_eq!(reqwest::get(&wrong).await.unwrap().status(), 404, "{wrong}");
    }

    // Chromium shows it on the merchant's page, under the page's CSP.
    let browser = Browser::launch().await;
    browser.c().goto(page_url).await.unwrap();
    let logo = browser.c().find(Locator::Id("logo")).await.unwrap();
    assert_eq!(logo.attr("src").await.unwrap(), Some(format!("/logo/{digest}")));
    let width = browser.c().execute("return document.getElementById('logo').naturalWidth", vec![]).await.unwrap();
    assert_eq!(width, json!(1), "loaded and decoded, not blocked");

    // A session's own logo URL is over the upload; a URL set later replaces it.
    let own = json!({"amount": 4500, "currency": "ZAR", "branding": {"logo_url": "https://cdn.koffie.example/sale.png"}});
    let own = env.call(Command::create("koffie", &own)).await.body;
    browser.c().goto(own["session_url"].as_str().unwrap()).await.unwrap();
    let src = browser.c().find(Locator::Id("logo")).await.unwrap().attr("src").await.unwrap();
    assert_eq!(src.as_deref(), Some("https://cdn.koffie.example/sale.png"));
    browser.close().await;
    let replaced = env.call(update(json!({"logo_url": "https://cdn.koffie.example/logo.png"}))).await.body;
    assert!(replaced["logo_image"].is_null() && replaced["logo_url"] == "https://cdn.koffie.example/logo.png", "{replaced}");
    env.finish().await;
}
