//! A real headless Chromium, driven through chromedriver's W3C WebDriver
//! protocol (fantoccini over plain HTTP on loopback), with bounded waits
//! for DOM state and screenshots under `target/console-screens/`.
//!
//! Chromium and chromedriver come from Debian's packages (`.ci/run`
//! installs them). Without them a test says so and passes, except under
//! CI (`CI` set), where that is a failure.

// The test binary and the benchmark use different parts of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest any DOM condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    shots: PathBuf,
}

/// Where screenshots go: `target/console-screens/<name>/`.
pub fn screens_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    target.join("console-screens").join(name)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session of `width`×900,
    /// or `None` when they are not installed (outside CI).
    pub async fn start(name: &str, width: u32) -> Option<Browser> {
        if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists()
        {
            if std::env::var_os("CI").is_some() {
                panic!("{CHROMEDRIVER} or {CHROMIUM} is missing under CI: .ci/run installs them");
            }
            eprintln!("SKIPPED: chromium and chromium-driver are not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    format!("--window-size={width},900"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "chromedriver did not start a session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let shots = screens_dir(name);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            client,
            driver,
            shots,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Writes `<n>.png` of the viewport.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs `script` (a function body) with `args`.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap()
    }

    /// Polls `script` (a function body answering a boolean) until it is
    /// true, for at most [`WAIT`]; the failure names `what` and the page's
    /// errors.
    pub async fn until(&self, what: &str, script: &str, args: Vec<Value>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.js(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let errors = self.js("return window.outpostErrors || []", vec![]).await;
                let _ = self.shot("failed").await;
                panic!("timed out waiting for {what} (page errors: {errors})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element matching `css` to exist.
    pub async fn until_css(&self, what: &str, css: &str) {
        self.until(
            what,
            "return !!document.querySelector(arguments[0])",
            vec![json!(css)],
        )
        .await;
    }

    /// The text of the first element matching `css` ("" when none).
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                vec![json!(css)],
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the element `css`. A live view may re-render between a wait
    /// and the click (a notice arrived), so a missing or stale element is
    /// looked up again until the usual wait is over.
    pub async fn click(&self, css: &str) {
        self.with_element(css, async |el| el.click().await.map(|_| ()))
            .await;
    }

    /// Replaces the value of the input `css` by typing `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        self.with_element(css, async |el| {
            el.clear().await?;
            el.send_keys(text).await
        })
        .await;
    }

    async fn with_element(
        &self,
        css: &str,
        act: impl AsyncFn(fantoccini::elements::Element) -> Result<(), fantoccini::error::CmdError>,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let outcome = match self.client.find(Locator::Css(css)).await {
                Ok(el) => act(el).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let _ = self.shot("failed").await;
                    panic!("{css}: {e}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}
