//! Benchmark of the dashboard under load, in a real headless Chromium: 100 handlers on a
//! memory bus while events are published at up to 10,000 a second (issue 22: "the page stays
//! responsive with 100 handlers and 10 k events/s flowing"). The same page with nothing
//! flowing, measured in the same run, is the reference.
//!
//! Run it with `cargo xtask bench dashboard`, which finds or installs Chromium and
//! chromedriver and writes `docs/benchmarks.md` from the `RESULT` lines printed here (format
//! in `xtask/src/bench.rs`). The rig is shared with `tests/dashboard_load.rs`.

#[path = "../tests/browser_harness/mod.rs"]
mod browser_harness;
#[path = "../tests/dashboard_rig/mod.rs"]
mod dashboard_rig;
#[path = "../tests/http_client/mod.rs"]
mod http_client;

use anyhow::Context as _;
use dashboard_rig::{HANDLERS, TARGET_RATE, measure};

fn main() -> anyhow::Result<()> {
    let driver = browser_harness::chromedriver()?.context(
        "the dashboard benchmark needs Chromium and chromedriver: run it through \
         `cargo xtask bench dashboard`",
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let f = runtime.block_on(measure(&driver))?;
    println!("{f:#?}");
    let load = format!("{HANDLERS} handlers, {TARGET_RATE} events/s aimed at");
    result(
        "bus",
        "update",
        f.load_update_s,
        "s",
        "<=2",
        &format!("time between two updates of the page ({load})"),
    );
    result(
        "bus",
        "fetch",
        f.load_fetch_ms,
        "ms",
        "-",
        &format!("the API calls of the last update, 0 when the stream pushed it ({load})"),
    );
    result(
        "bus",
        "render",
        f.load_render_ms,
        "ms",
        "<500",
        &format!("one redraw ({load})"),
    );
    result(
        "bus",
        "max_render",
        f.max_render_ms,
        "ms",
        "<500",
        "the longest redraw since the page opened",
    );
    result(
        "bus",
        "click",
        f.click_ms,
        "ms",
        "<1000",
        &format!("from clicking an event in the tail to its details ({load})"),
    );
    result(
        "bus",
        "published",
        f.published_per_s,
        "events/s",
        &format!(">={}", TARGET_RATE * 9 / 10),
        "events published while the page was watched",
    );
    result(
        "bus",
        "deliveries",
        f.deliveries_per_s,
        "deliveries/s",
        "-",
        &format!("events handled, summed over the {HANDLERS} handlers"),
    );
    result(
        "reference",
        "idle_update",
        f.idle_update_s,
        "s",
        "-",
        "time between two updates of the same page, nothing flowing",
    );
    result(
        "reference",
        "idle_render",
        f.idle_render_ms,
        "ms",
        "-",
        "one redraw of the same page, nothing flowing",
    );
    println!(
        "RESULT\tnote\tChromium and the bus share the machine's cores; the page is updated by \
         the API's event stream, which pushes stats and health about every second and new \
         events as they are stored."
    );
    Ok(())
}

fn result(group: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{group}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}
