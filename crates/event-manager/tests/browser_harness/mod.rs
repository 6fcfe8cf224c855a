//! The harness of the dashboard's browser tests: a `chromedriver` started per test, a headless
//! Chromium session driven through it with `fantoccini`, waits on conditions in the page with
//! a deadline, screenshots under `target/dashboard-screenshots/`, and the test's own calls to
//! the API (through the API tests' `http_client`).

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::http_client::{self, Reply, parse};

/// Where `cargo xtask test` says chromedriver is.
const CHROMEDRIVER_VAR: &str = "EVENTBUS_TEST_CHROMEDRIVER";
/// Where Debian's `chromium-driver` puts it, used when the variable is unset.
const DEBIAN_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time: two Chromiums on a loaded 2-core machine make every wait slower.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The chromedriver to use; `None` means skip the test (after saying so), and an error means
/// it is missing although `EVENTBUS_REQUIRE_INTEGRATION=1` asks for the browser tests.
pub(crate) fn chromedriver() -> anyhow::Result<Option<PathBuf>> {
    if let Ok(path) = std::env::var(CHROMEDRIVER_VAR)
        && !path.is_empty()
    {
        return Ok(Some(PathBuf::from(path)));
    }
    let debian = PathBuf::from(DEBIAN_CHROMEDRIVER);
    if debian.is_file() {
        return Ok(Some(debian));
    }
    let how = "install Chromium and its driver (Debian/Ubuntu: `sudo apt-get install chromium \
               chromium-driver`; `cargo xtask test` does it itself when run as root, and \
               `eval \"$(cargo xtask services up browser)\"` sets EVENTBUS_TEST_CHROMEDRIVER)";
    if event_testkit::integration_required() {
        bail!(
            "chromedriver not found ({CHROMEDRIVER_VAR} unset, no {DEBIAN_CHROMEDRIVER}), and \
             EVENTBUS_REQUIRE_INTEGRATION=1 requires the dashboard's browser tests: {how}"
        );
    }
    eprintln!("SKIPPED: no chromedriver for the dashboard's browser tests; {how}");
    Ok(None)
}

/// A headless Chromium session, its chromedriver, and where its screenshots go.
pub(crate) struct Browser {
    client: Client,
    driver: Child,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session (1280×900). A start
    /// that fails (chromedriver gone between listening and the session request, seen once on
    /// a loaded machine) is tried again with a new chromedriver, three times in all.
    pub(crate) async fn start(chromedriver: &PathBuf) -> anyhow::Result<Self> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_once(chromedriver).await {
                Ok(browser) => return Ok(browser),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!("three starts failed: {}", failures.join("; "))
    }

    async fn start_once(chromedriver: &PathBuf) -> anyhow::Result<Self> {
        let turn = ONE_AT_A_TIME.acquire().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let ready = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = driver.try_wait()? {
                bail!("chromedriver exited at start ({status})");
            }
            if Instant::now() > ready {
                let _ = driver.kill();
                bail!("chromedriver did not listen on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,900"]}),
        );
        let client = match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
        {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                bail!("opening a Chromium session through chromedriver: {e}");
            }
        };
        Ok(Self {
            client,
            driver,
            _turn: turn,
        })
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        drop(self);
        closed.context("closing the browser session")
    }

    /// Opens `url`.
    pub(crate) async fn open(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client.goto(url).await?)
    }

    /// Runs `script` (a function body; `arguments[0]`... are `args`) in the page.
    pub(crate) async fn run(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Waits until `script` returns something other than `null`, `false` or `""`, and
    /// returns it; after `within`, an error naming `what` (and a screenshot of the page).
    pub(crate) async fn until(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.run(script, args.clone()).await?;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value.as_str() != Some("") {
                return Ok(value);
            }
            if Instant::now() > deadline {
                let _ = self.screenshot("timed-out").await;
                bail!("timed out after {within:?} waiting for {what} (screenshot: timed-out.png)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an element matches `css`.
    pub(crate) async fn until_present(&self, css: &str, within: Duration) -> anyhow::Result<()> {
        self.until(
            &format!("an element matching {css}"),
            within,
            "return document.querySelector(arguments[0]) !== null",
            vec![json!(css)],
        )
        .await
        .map(drop)
    }

    /// Waits until no element matches `css`.
    pub(crate) async fn until_absent(&self, css: &str, within: Duration) -> anyhow::Result<()> {
        self.until(
            &format!("no element matching {css}"),
            within,
            "return document.querySelector(arguments[0]) === null",
            vec![json!(css)],
        )
        .await
        .map(drop)
    }

    /// Waits until the text of the element `#id` contains `needle`; returns the text.
    pub(crate) async fn until_text(
        &self,
        id: &str,
        needle: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let script = "const e = document.getElementById(arguments[0]); \
                      return e && !e.hidden && e.textContent.includes(arguments[1]) \
                          ? e.textContent : null";
        let text = self
            .until(
                &format!("#{id} to say {needle:?}"),
                within,
                script,
                vec![json!(id), json!(needle)],
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// Clicks the first element matching `css` (waiting for it), as a user would. A page that
    /// redraws under load can replace or cover the element between finding and clicking it
    /// (WebDriver's "stale element reference", "no such element", "element click intercepted"
    /// or "element not interactable"); the click is then aimed again at the element matching
    /// `css` now, as a user clicks again on the row that moved, for up to 10 s.
    pub(crate) async fn click(&self, css: &str) -> anyhow::Result<()> {
        let within = Duration::from_secs(10);
        let deadline = Instant::now() + within;
        loop {
            self.until_present(css, within).await?;
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return Ok(()),
                Err(e) if moved(&e) && Instant::now() < deadline => continue,
                Err(e) => return Err(e).with_context(|| format!("clicking {css}")),
            }
        }
    }

    /// Types `text` into the field `css` (after clearing it).
    pub(crate) async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.client.find(Locator::Css(css)).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Scrolls the first element matching `css` to the middle of the window.
    pub(crate) async fn scroll_to(&self, css: &str) -> anyhow::Result<()> {
        self.run(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
            vec![json!(css)],
        )
        .await
        .map(drop)
    }

    /// Saves a PNG of the window as `target/dashboard-screenshots/{name}.png`.
    pub(crate) async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Drop for Browser {
    /// A test that failed before [`Browser::close`] still stops its chromedriver.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/dashboard-screenshots/` of the workspace (or of `CARGO_TARGET_DIR`).
pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("dashboard-screenshots")
}

/// One HTTP/1.1 request without a token, with extra `Name: value` header lines (the
/// client of the other API tests sends none).
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

/// `method path` with a bearer token and an optional JSON body; the status and JSON body.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let stream = TcpStream::connect(addr).await?;
    let reply = http_client::request(stream, method, path, Some(token), body).await?;
    Ok((reply.status, reply.json()?))
}

/// Whether a click failed because the page moved under it: the element was replaced, removed,
/// covered or not yet interactable, so that aiming again can succeed.
fn moved(e: &CmdError) -> bool {
    e.is_stale_element_reference()
        || e.is_no_such_element()
        || e.is_element_not_interactable()
        || matches!(e, CmdError::Standard(w) if w.error == ErrorStatus::ElementClickIntercepted)
}
