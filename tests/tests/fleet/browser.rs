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
    assert!(terms.contains("from 1 December 2026 until 30 November 2027"), "{terms}");
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
    let shot = browser.c().screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("checkout-branded.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a screenshot of the branded page");

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
