//! A real headless Chromium (Debian's `chromium` and `chromedriver`, installed
//! by `scripts/ensure-browser.sh`) driving the checkout.

use crate::WAIT;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::process::{Child, Stdio};
use std::time::Duration;

/// chromedriver and a browser session on it; both go away on drop.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    pub async fn launch() -> Browser {
        let port = crate::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/ensure-browser.sh installs it)");
        let profile = std::env::temp_dir().join(format!("ps-chromium-{}", uuid::Uuid::new_v4().simple()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // No network beyond loopback here: keep Chromium from reaching for it.
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.display())]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.clone());
            match builder.connect(&url).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a Chromium session: {e}"),
            }
        };
        Browser { client: Some(client), driver, profile }
    }

    pub fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub async fn text(&self, id: &str) -> String {
        self.c().wait().at_most(WAIT).for_element(Locator::Id(id)).await.unwrap_or_else(|e| panic!("#{id}: {e}")).text().await.unwrap()
    }

    /// Waits until the element `id` shows `expected` (the processing page refreshes itself meanwhile).
    pub async fn wait_for_text(&self, id: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.c().find(Locator::Id(id)).await {
                if e.text().await.is_ok_and(|t| t.contains(expected)) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "#{id} never showed {expected:?}: {}",
                self.c().source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn pay(&self, card: &str) {
        let c = self.c();
        c.wait().at_most(WAIT).for_element(Locator::Id("card_number")).await.unwrap().send_keys(card).await.unwrap();
        c.find(Locator::Id("expiry")).await.unwrap().send_keys("12/34").await.unwrap();
        c.find(Locator::Id("cvc")).await.unwrap().send_keys("123").await.unwrap();
        c.find(Locator::Id("pay")).await.unwrap().click().await.unwrap();
    }

    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Browser {
    /// Clicks the button whose text is `text` once it is there (a dialog a script opens, say).
    pub async fn click_button(&self, text: &str) {
        let xpath = format!("//button[normalize-space(text())='{text}']");
        self.c()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("button {text:?}: {e}"))
            .click()
            .await
            .unwrap();
    }
}
