//! An embedded checkout (DESIGN §13): framed in the merchant's own page by a
//! registered origin and nobody else, telling that page its outcome by
//! postMessage. Everything over https, as a framed checkout must be: the
//! checkout behind a TLS front (as behind production's ingress), the
//! merchant's pages on their own origins, the test CA's certificates.

use fantoccini::Locator;
use integration_tests::browser::Browser;
use integration_tests::tls::{TestCa, TlsFront};
use integration_tests::{Command, TestEnv};
use serde_json::json;

/// A merchant's page at `https://localhost:{port}` that frames `?u=` and lists
/// every message it receives (`origin data`) in `#messages`.
async fn merchant_page(ca: &TestCa) -> (TlsFront, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
            let src = q.get("u").cloned().unwrap_or_default().replace('"', "");
            axum::response::Html(format!(
                "<!doctype html><title>Shop</title><ul id=\"messages\"></ul>\
                 <iframe id=\"checkout\" src=\"{src}\" width=\"480\" height=\"720\"></iframe>\
                 <script>window.addEventListener('message', function (e) {{ const li = document.createElement('li');\
                 li.textContent = e.origin + ' ' + JSON.stringify(e.data); document.getElementById('messages').appendChild(li); }});</script>"
            ))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let front = TlsFront::start(&ca.leaf("shop"), addr).await;
    let port = front.port;
    (front, port)
}

#[tokio::test]
async fn an_embedded_checkout_is_framed_only_by_registered_origins_and_tells_them_the_outcome() {
    let ca = TestCa::new();
    let mut env = TestEnv::new().await;
    let checkout = env.start_fleet().await;
    let pay_front = TlsFront::start(&ca.leaf("checkout"), checkout.trim_start_matches("http://").parse().unwrap()).await;
    let over_https = |url: &str| url.replace(&checkout, &format!("https://localhost:{}", pay_front.port));
    let (_shop, shop_port) = merchant_page(&ca).await;
    let (_stranger, stranger_port) = merchant_page(&ca).await;
    let registered = format!("https://localhost:{shop_port}");
    let settings = json!({"display_name": "Shop", "embed_origins": [registered, "https://other.shop.example"]});
    assert!(env.call(Command::new("checkout_settings.update", &settings).header("merchant-id", "shop")).await.error_code().is_none());
    let create = |mode: &str| {
        Command::create(
            "shop",
            &json!({"amount": 12550, "currency": "ZAR", "return_url": "https://shop.example/r", "presentation_mode": mode}),
        )
    };
    let embedded = env.call(create("embedded_inline")).await.body;
    let redirect = env.call(create("redirect")).await.body;
    let url = over_https(embedded["session_url"].as_str().unwrap());

    // What the page says to browsers: its framers exactly, and no X-Frame-Options for them.
    let plain = reqwest::get(embedded["session_url"].as_str().unwrap()).await.unwrap();
    assert!(plain.headers().get("x-frame-options").is_none());
    let csp = plain.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains(&format!("frame-ancestors {registered} https://other.shop.example;")), "{csp}");
    let unframed = reqwest::get(redirect["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(unframed.headers()["x-frame-options"], "DENY");
    assert!(unframed.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));

    let browser = Browser::launch_with(&["--ignore-certificate-errors"]).await;
    let frame_of = |port: u16, checkout_url: &str| format!("https://localhost:{port}/?u={}", urlencode(checkout_url));

    // Another origin frames it: the browser refuses to show it.
    browser.c().goto(&frame_of(stranger_port, &url)).await.unwrap();
    browser.c().clone().enter_frame(0).await.unwrap();
    assert!(browser.c().find(Locator::Id("amount")).await.is_err(), "framed by an origin the merchant did not register");
    browser.c().clone().enter_parent_frame().await.unwrap();
    // A redirect session is framed by nobody, the registered origin included.
    browser.c().goto(&frame_of(shop_port, &over_https(redirect["session_url"].as_str().unwrap()))).await.unwrap();
    browser.c().clone().enter_frame(0).await.unwrap();
    assert!(browser.c().find(Locator::Id("amount")).await.is_err(), "a redirect session is never framed");
    browser.c().clone().enter_parent_frame().await.unwrap();

    // The registered origin frames it; the customer pays inside; the page hears the outcome.
    browser.c().goto(&frame_of(shop_port, &url)).await.unwrap();
    browser.c().clone().enter_frame(0).await.unwrap();
    assert_eq!(browser.text("amount").await, "ZAR 125.50");
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;
    assert_eq!(
        browser.c().find(Locator::Id("return")).await.unwrap().attr("target").await.unwrap().as_deref(),
        Some("_top"),
        "the way back leaves the frame"
    );
    browser.c().clone().enter_parent_frame().await.unwrap();
    browser.wait_for_text("messages", "\"payment_outcome\":\"paid\"").await;
    let heard = browser.text("messages").await;
    assert!(heard.starts_with(&format!("https://localhost:{} ", pay_front.port)), "from the checkout's origin: {heard}");
    assert!(heard.contains(embedded["id"].as_str().unwrap()) && heard.contains("\"status\":\"completed\""), "{heard}");
    assert_eq!(heard.lines().count(), 1, "once, to this origin only: {heard}");
    browser.close().await;
    env.finish().await;
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
