//! The dashboard under load in a real headless Chromium: 100 handlers on a memory bus while
//! events are published at up to 10,000 a second. The page must keep updating, show the
//! events of the load in its tail and its handler rows, and open an event when clicked.
//! How fast it does is measured by `cargo xtask bench dashboard` (`benches/dashboard.rs`, the
//! same rig); the figures of this run are printed (`--nocapture`), never bounded here.

mod browser_harness;
mod dashboard_rig;
mod http_client;

use anyhow::ensure;
use browser_harness::chromedriver;
use dashboard_rig::{HANDLERS, measure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_handlers_under_load_keep_the_page_live() -> anyhow::Result<()> {
    let Some(driver) = chromedriver()? else {
        return Ok(());
    };
    let f = measure(&driver).await?;
    ensure!(f.published_per_s > 0.0 && f.deliveries_per_s > 0.0, "{f:?}");
    ensure!(f.shown_processed > 0, "{f:?}");
    eprintln!(
        "under load: {:.0} events/s published, {:.0} deliveries/s to {HANDLERS} handlers; \
         the page updated every {:.2} s (idle: {:.2} s), fetch {:.0} ms and redraw {:.0} ms \
         at the last update (idle redraw {:.0} ms), largest redraw {:.0} ms, an event opened \
         {:.0} ms after its click",
        f.published_per_s,
        f.deliveries_per_s,
        f.load_update_s,
        f.idle_update_s,
        f.load_fetch_ms,
        f.load_render_ms,
        f.idle_render_ms,
        f.max_render_ms,
        f.click_ms
    );
    Ok(())
}
