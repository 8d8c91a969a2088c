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
        Browser::launch_with(&[]).await
    }

    /// With extra Chromium flags: `--ignore-certificate-errors` lets a test
    /// serve pages over https with its own CA (the harness's, not the product's).
    pub async fn launch_with(extra: &[&str]) -> Browser {
        let port = crate::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/ensure-browser.sh installs it)");
        let profile = std::env::temp_dir().join(format!("ps-chromium-{}", uuid::Uuid::new_v4().simple()));
        let mut caps = serde_json::Map::new();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().map(|a| a.to_string()));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // No network beyond loopback here: keep Chromium from reaching for it.
                "args": args
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

    /// Saves what the window shows now as `target/test-artefacts/{name}.png`
    /// (kept by CI: how each page looks, in each look and language).
    pub async fn save_screenshot(&self, name: &str) {
        let shot = self.c().screenshot().await.unwrap();
        assert!(shot.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &shot).unwrap();
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

/// One rule axe-core found broken on a page.
#[derive(Debug, Clone)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    /// The elements, as CSS selectors.
    pub targets: Vec<String>,
}

impl Browser {
    /// Runs axe-core (tests/a11y, installed by scripts/ensure-browser.sh) on
    /// the page as it is now, against WCAG 2.0/2.1 A and AA, and returns the
    /// violations of `serious` or `critical` impact. Injected through
    /// WebDriver, so the page's own CSP (no scripts) is left as it is.
    pub async fn serious_a11y_violations(&self) -> Vec<Violation> {
        // A page that refreshes itself (processing) may go mid-run: run again on the new one.
        for _ in 0..5 {
            if let Some(found) = self.axe_once().await {
                return found;
            }
        }
        panic!("axe-core never finished on {:?}", self.c().current_url().await)
    }

    async fn axe_once(&self) -> Option<Vec<Violation>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/a11y/node_modules/axe-core/axe.min.js");
        let axe = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (scripts/ensure-browser.sh installs it)"));
        self.c().execute(&axe, vec![]).await.ok()?;
        let found = self
            .c()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                             targets: v.nodes.map(n => n.target.join(' '))}))))
                    .catch(e => done({error: String(e)}));",
                vec![],
            )
            .await
            .ok()?;
        assert!(found.get("error").is_none(), "axe-core failed: {found}");
        Some(
            found
                .as_array()
                .expect("a list of violations")
                .iter()
                .map(|v| Violation {
                    id: v["id"].as_str().unwrap_or_default().to_owned(),
                    impact: v["impact"].as_str().unwrap_or_default().to_owned(),
                    help: v["help"].as_str().unwrap_or_default().to_owned(),
                    targets: v["targets"]
                        .as_array()
                        .map(|t| t.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                })
                .filter(|v| matches!(v.impact.as_str(), "serious" | "critical"))
                .collect(),
        )
    }
}
