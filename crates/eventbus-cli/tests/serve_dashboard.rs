//! The dashboard of the `eventbus serve` binary in a real headless Chromium, on memory and on
//! Redis: the page refuses a wrong token and opens with a right one, and an event published
//! through the API shows in its live tail and the handler rows count it. (The page's other
//! behaviours are tested against the same router in `event-manager`'s `tests/dashboard.rs`.)

#[path = "../../event-manager/tests/browser_harness/mod.rs"]
mod browser_harness;
mod common;
#[path = "../../event-manager/tests/http_client/mod.rs"]
mod http_client;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use browser_harness::{Browser, call, chromedriver};
use event_testkit::test_server;
use serde_json::json;

const READER: &str = "read-token-for-the-binary-0001";
const ADMIN: &str = "admin-token-for-the-binary-0001";
/// Every wait's deadline: far above what it takes, even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// `eventbus serve` on a free port with both tokens, and the address it serves on.
fn serve(vars: &[(&str, &str)]) -> anyhow::Result<(Child, SocketAddr)> {
    let tokens = format!("read:{READER},admin:{ADMIN}");
    let mut all = vec![("EVENT_API_TOKENS", tokens.as_str())];
    all.extend_from_slice(vars);
    common::serve(&all, &[])
}

async fn the_served_page_shows_what_is_published(vars: &[(&str, &str)]) -> anyhow::Result<()> {
    let Some(driver) = chromedriver()? else {
        return Ok(());
    };
    let (mut child, addr) = serve(vars)?;
    let outcome = async {
        let b = Browser::start(&driver).await?;
        let checked = async {
            b.open(&format!("http://{addr}/")).await?;
            b.until_present("#token", DEADLINE).await?;
            b.type_into("#token", "not-a-token-of-this-server").await?;
            b.click("#login-submit").await?;
            b.until_text("login-error", "token", DEADLINE).await?;
            b.type_into("#token", READER).await?;
            b.click("#login-submit").await?;
            b.until(
                "the dashboard",
                DEADLINE,
                "return !document.getElementById('app').hidden",
                vec![],
            )
            .await?;
            let event = json!({
                "event_type": "user.registered",
                "payload": {"user_id": "u-binary", "email": "binary@example.com"},
                "source": "user_service",
                "correlation_id": "req-binary",
            });
            let (status, body) =
                call(addr, "POST", "/api/v1/events/publish", ADMIN, Some(&event)).await?;
            ensure!(status == 200, "publishing: {status} {body}");
            let id = body["event_id"].as_str().context("no event_id")?;
            b.until_present(&format!("#tail tr[data-event-id='{id}']"), DEADLINE)
                .await?;
            // The domain handlers of user.registered count it in their rows.
            b.until(
                "a handler row to count the event",
                DEADLINE,
                "const heads = [...document.querySelectorAll('#handlers thead th')] \
                   .map((th) => th.textContent.trim()); \
                 const i = heads.indexOf('processed'); \
                 return i >= 0 && [...document.querySelectorAll('#handlers tr[data-handler]')] \
                   .some((row) => row.textContent.includes('user.registered') \
                     && row.cells[i]?.textContent.trim() === '1')",
                vec![],
            )
            .await?;
            b.screenshot(&format!("binary-{}", vars[0].1)).await?;
            anyhow::Ok(())
        }
        .await;
        b.close().await?;
        checked
    }
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait()?;
    outcome?;
    ensure!(exit.success(), "eventbus serve exited with {exit}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_memory_shows_a_published_event() -> anyhow::Result<()> {
    the_served_page_shows_what_is_published(&[("EVENT_BUS_TYPE", "memory")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_redis_shows_a_published_event() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-dashboard");
    the_served_page_shows_what_is_published(&[
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ])
    .await
}
