//! The dashboard under load, shared by its test (`tests/dashboard_load.rs`: the page keeps
//! working) and its benchmark (`benches/dashboard.rs`: how fast it does): 100 handlers on a
//! memory bus while events are published in the process at up to 10,000 a second (issue 22:
//! "the page stays responsive with 100 handlers and 10 k events/s flowing").
//!
//! Everything waits on conditions in the page with generous deadlines; the figures are what
//! the waits took, measured, never bounded here.

// The benchmark reads a part of the figures.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use event_core::{Event, EventType, HandlerError, SubscriptionSpec, handler_fn};
use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};
use event_manager::{EventBusManager, Settings};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::browser_harness::Browser;

const READER: &str = "read-token-0123456789";
/// Handlers on the bus, each on one of [`TYPES`] types.
pub(crate) const HANDLERS: usize = 100;
const TYPES: usize = 10;
/// The publishing rate aimed at, in events per second.
pub(crate) const TARGET_RATE: u64 = 10_000;
/// Page updates counted, idle and then under load.
const POLLS: u64 = 8;
/// The deadline of every wait: far above what any of them takes, even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(180);

/// What the page did, idle and under load.
#[derive(Debug)]
pub(crate) struct Figures {
    /// Seconds between two updates of the page with nothing flowing.
    pub(crate) idle_update_s: f64,
    /// Milliseconds of the last redraw with nothing flowing.
    pub(crate) idle_render_ms: f64,
    /// Seconds between two updates of the page under load.
    pub(crate) load_update_s: f64,
    /// Milliseconds of the last fetch and redraw under load.
    pub(crate) load_fetch_ms: f64,
    pub(crate) load_render_ms: f64,
    /// The longest redraw seen since the page opened.
    pub(crate) max_render_ms: f64,
    /// From clicking an event in the tail to its details showing.
    pub(crate) click_ms: f64,
    /// Events published, and delivered to the handlers, per second while the load ran.
    pub(crate) published_per_s: f64,
    pub(crate) deliveries_per_s: f64,
    /// Events the page showed handled, summed over its handler rows, at the end.
    pub(crate) shown_processed: u64,
}

/// Starts the bus, its API and a browser, measures the page idle and then under load, and
/// saves the loaded page as `under-load.png`.
pub(crate) async fn measure(driver: &std::path::PathBuf) -> anyhow::Result<Figures> {
    let mut config = Settings::default();
    config.enable_event_handlers = false;
    config.bus.event_ttl = Duration::from_secs(120);
    let types: Vec<EventType> = (0..TYPES)
        .map(|t| EventType::new(format!("load.type_{t}")))
        .collect::<Result<_, _>>()?;
    let handled = Arc::new(AtomicU64::new(0));
    let mut builder = EventBusManager::builder(config.clone());
    for h in 0..HANDLERS {
        let name = format!("handler_{h:03}");
        let counter = handled.clone();
        builder = builder.handler(
            SubscriptionSpec::new(name.clone(), [types[h % TYPES].clone()]),
            handler_fn(name, move |_e| {
                counter.fetch_add(1, Ordering::Relaxed);
                async { Ok::<(), HandlerError>(()) }
            }),
        );
    }
    let manager = Arc::new(builder.build()?);
    manager.start().await?;
    let api = ApiConfig::new(&config.bus, ApiTokens::none().with(Role::Read, READER));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router(manager.clone(), api), async {
        let _ = stopped.await;
    }));

    let b = Browser::start(driver).await?;
    let flowing = Arc::new(AtomicBool::new(true));
    let published = Arc::new(AtomicU64::new(0));
    let outcome = async {
        b.open(&format!("http://{addr}/")).await?;
        b.until_present("#token", DEADLINE).await?;
        b.type_into("#token", READER).await?;
        b.click("#login-submit").await?;
        b.until(
            "the 100 handlers",
            DEADLINE,
            "return document.querySelectorAll('#handlers tr[data-handler]').length === arguments[0]",
            vec![json!(HANDLERS)],
        )
        .await?;
        let idle_update_s = seconds_per_update(&b).await?;
        let idle_render_ms = dataset_ms(&b, "renderMs").await?;

        let bus = manager.bus()?;
        let load = tokio::spawn(publish_at_rate(
            bus,
            types.clone(),
            flowing.clone(),
            published.clone(),
        ));
        let started = Instant::now();
        let handled_before = handled.load(Ordering::Relaxed);
        let load_update_s = seconds_per_update(&b).await?;
        let (load_fetch_ms, load_render_ms) = (
            dataset_ms(&b, "fetchMs").await?,
            dataset_ms(&b, "renderMs").await?,
        );
        // The tail shows events of the load, and one opens when clicked: the page answers
        // input while it redraws.
        b.until_present("#tail tr[data-event-id]", DEADLINE).await?;
        let clicked = Instant::now();
        open_an_event(&b).await?;
        let click_ms = clicked.elapsed().as_secs_f64() * 1000.0;
        // The handler rows count what was handled under load.
        let shown_processed = shown_processed(&b, handled_before).await?;
        b.screenshot("under-load").await?;
        let load_seconds = started.elapsed().as_secs_f64();
        flowing.store(false, Ordering::Relaxed);
        load.await??;
        let delivered = handled.load(Ordering::Relaxed) - handled_before;
        anyhow::Ok(Figures {
            idle_update_s,
            idle_render_ms,
            load_update_s,
            load_fetch_ms,
            load_render_ms,
            max_render_ms: dataset_ms(&b, "maxRenderMs").await?,
            click_ms,
            published_per_s: published.load(Ordering::Relaxed) as f64 / load_seconds,
            deliveries_per_s: delivered as f64 / load_seconds,
            shown_processed,
        })
    }
    .await;
    flowing.store(false, Ordering::Relaxed);
    let closed = b.close().await;
    let figures = outcome?;
    closed?;
    manager.stop().await?;
    Ok(figures)
}

/// Publishes every 10 ms the events due by then: [`TARGET_RATE`] a second if the machine
/// keeps up, fewer (never a burst to catch up beyond what is due) if not.
async fn publish_at_rate(
    bus: Arc<dyn event_core::EventBus>,
    types: Vec<EventType>,
    flowing: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while flowing.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = started.elapsed().as_millis() as u64 * TARGET_RATE / 1000;
        while published.load(Ordering::Relaxed) < due && flowing.load(Ordering::Relaxed) {
            let n = published.fetch_add(1, Ordering::Relaxed);
            let t = types[(n % TYPES as u64) as usize].clone();
            let event = Event::builder(t, "load").payload(json!({"n": n})).build()?;
            bus.publish(event).await?;
        }
    }
    Ok(())
}

/// Clicks the first event of the tail until its details open. Under load the row can be
/// redrawn away between the click's aim and its landing (the click then reaches no row), and
/// a user clicks again.
async fn open_an_event(b: &Browser) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        b.click("#tail tr[data-event-id]").await?;
        let opened = b
            .until(
                "the clicked event to open",
                Duration::from_secs(10),
                "return document.getElementById('details').open",
                vec![],
            )
            .await;
        match opened {
            Err(_) if Instant::now() < deadline => continue,
            opened => return opened.map(drop),
        }
    }
}

/// Waits for [`POLLS`] more updates of the page and returns the mean time between two.
async fn seconds_per_update(b: &Browser) -> anyhow::Result<f64> {
    let before = polls(b).await?;
    let started = Instant::now();
    b.until(
        "the page to update",
        DEADLINE,
        "return Number(document.getElementById('app').dataset.polls ?? '0') >= arguments[0]",
        vec![json!(before + POLLS)],
    )
    .await?;
    let updates = polls(b).await? - before;
    Ok(started.elapsed().as_secs_f64() / updates as f64)
}

async fn polls(b: &Browser) -> anyhow::Result<u64> {
    let value = dataset(b, "polls").await?;
    Ok(value.as_str().unwrap_or("0").parse()?)
}

/// A figure the page keeps in `#app`'s dataset, in milliseconds.
async fn dataset_ms(b: &Browser, key: &str) -> anyhow::Result<f64> {
    let value = dataset(b, key).await?;
    value
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("#app has no data-{key} number: {value}"))
}

async fn dataset(b: &Browser, key: &str) -> anyhow::Result<Value> {
    b.run(
        "return document.getElementById('app').dataset[arguments[0]] ?? null",
        vec![json!(key)],
    )
    .await
}

/// Waits until the handler rows together show more handled than `before` and returns it.
async fn shown_processed(b: &Browser, before: u64) -> anyhow::Result<u64> {
    // The column headed "processed", wherever it is.
    let sum = "const heads = [...document.querySelectorAll('#handlers thead th')] \
                 .map((th) => th.textContent.trim()); \
               const i = heads.indexOf('processed'); \
               if (i < 0) return -1; \
               let n = 0; \
               for (const row of document.querySelectorAll('#handlers tr[data-handler]')) \
                 n += Number(row.cells[i]?.textContent ?? '0'); \
               return n";
    let probe = b.run(sum, vec![]).await?;
    ensure!(
        probe.as_i64() != Some(-1),
        "#handlers has no column headed \"processed\""
    );
    b.until(
        "the handler rows to count the load",
        DEADLINE,
        &format!("return (() => {{ {sum} }})() > arguments[0]"),
        vec![json!(before)],
    )
    .await?;
    let shown = b.run(sum, vec![]).await?;
    let shown = shown.as_u64().context("the handler rows' sum")?;
    ensure!(
        shown > before,
        "{shown} handled shown, {before} before the load"
    );
    Ok(shown)
}
