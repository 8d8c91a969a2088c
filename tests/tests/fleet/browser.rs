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
