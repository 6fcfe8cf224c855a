//! The dashboard in a real headless Chromium, against a real `event_manager::http::serve` on
//! loopback with the in-memory bus and with Redis: asking for a token and refusing a bad one,
//! health and handlers with a read token, a published event in the tail and its chart within
//! 5 s, a dead letter refused to a reader and redriven by an admin, a stalled handler's row
//! turning red. Each state is saved as a screenshot under `target/dashboard-screenshots/`
//! (`redis-` before the name on Redis).
//!
//! Needs `chromedriver` (`EVENTBUS_TEST_CHROMEDRIVER`, else Debian's `/usr/bin/chromedriver`)
//! and, for the Redis tests, `EVENTBUS_TEST_REDIS_URL`; without them the tests print SKIPPED,
//! or fail when `EVENTBUS_REQUIRE_INTEGRATION=1`.

mod browser_harness;
mod flaky;
mod http_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use browser_harness::{Browser, call, chromedriver, request};
use event_core::{Event, EventType, HandlerError, SubscriptionSpec, handler_fn};
use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};
use event_manager::{BusType, EventBusManager, Settings};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";
/// How long the page may take to show a state it was asked for (a hang guard: the waits end
/// as soon as the state shows).
const PAGE: Duration = Duration::from_secs(20);
/// How soon a published event must show in the tail and its chart (issue 22).
const LIVE: Duration = Duration::from_secs(5);
/// The deadline of the live stream's waits (hang guards too: they end as soon as the state
/// shows).
const PATIENT: Duration = Duration::from_secs(60);

/// The bus behind the API.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    /// The server of `EVENTBUS_TEST_REDIS_URL`, under a key prefix of the test's own.
    Redis,
    /// The brokers of `EVENTBUS_TEST_KAFKA_BROKERS`, under a topic prefix and consumer group
    /// of the test's own.
    Kafka,
}

/// The API on loopback over a bus with four handlers: `counter` (succeeds), `flaky` (fails
/// permanently while `flaky_fails` is set), `blocker` (waits on `gate`) and `restarter`
/// (succeeds; named uniquely, for faults armed by name process-wide).
struct Server {
    addr: SocketAddr,
    /// Put before screenshot names: `""` on memory, `redis-` on Redis.
    shots: &'static str,
    flaky_fails: Arc<AtomicBool>,
    gate: Arc<Semaphore>,
    /// The name of the handler of `ops.restart_probe`, unique to this server.
    restarter: String,
    manager: Arc<EventBusManager>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Saves the browser's window as this backend's screenshot `name`.
    async fn screenshot(&self, b: &Browser, name: &str) -> anyhow::Result<()> {
        b.screenshot(&format!("{}{name}", self.shots))
            .await
            .map(drop)
    }

    async fn flaky_dead_letters(&self) -> anyhow::Result<Value> {
        let path = "/api/v1/events/dead-letters?handler=flaky";
        Ok(call(self.addr, "GET", path, ADMIN, None).await?.1)
    }

    async fn publish(&self, event: &Value) -> anyhow::Result<String> {
        let (status, body) = call(
            self.addr,
            "POST",
            "/api/v1/events/publish",
            ADMIN,
            Some(event),
        )
        .await?;
        ensure!(status == 200, "publishing: {status} {body}");
        Ok(body["event_id"]
            .as_str()
            .context("no event_id")?
            .to_string())
    }
}

/// `None` when the backend's server is not there (and the test is skipped).
async fn start_server(
    backend: Backend,
    tweak: impl FnOnce(&mut ApiConfig),
) -> anyhow::Result<Option<Server>> {
    start_server_with(backend, |_| {}, tweak).await
}

/// [`start_server`] with the manager's settings changed by `settings` (after the test's
/// own: domain handlers off, no retries).
async fn start_server_with(
    backend: Backend,
    settings: impl FnOnce(&mut Settings),
    tweak: impl FnOnce(&mut ApiConfig),
) -> anyhow::Result<Option<Server>> {
    let mut config = Settings::default();
    if backend == Backend::Redis {
        let Some(url) = event_testkit::test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
            return Ok(None);
        };
        config.bus_type = BusType::Redis;
        config.redis.url = url;
        config.redis.key_prefix = event_testkit::unique("dashboard");
    }
    if backend == Backend::Kafka {
        let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?
        else {
            return Ok(None);
        };
        config.bus_type = BusType::Kafka;
        config.kafka.bootstrap_servers = brokers.split(',').map(str::to_string).collect();
        config.kafka.topic_prefix = event_testkit::unique("dashboard");
        config.bus.consumer_group = event_testkit::unique("dashboard");
    }
    config.enable_event_handlers = false;
    config.bus.max_retries = 0;
    settings(&mut config);
    let flaky_fails = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Semaphore::new(0));
    let restarter = event_testkit::unique("restarter");
    let manager = EventBusManager::builder(config.clone())
        .handler(
            SubscriptionSpec::new("counter", [EventType::USER_REGISTERED]),
            handler_fn("counter", |_e| async { Ok::<(), HandlerError>(()) }),
        )
        .handler(
            SubscriptionSpec::new("flaky", [EventType::AGENT_ERROR]),
            flaky::failing_while("flaky", &flaky_fails, "cannot page anyone"),
        )
        .handler(
            SubscriptionSpec::new("blocker", [EventType::new("billing.slow_job")?]),
            handler_fn("blocker", {
                let gate = gate.clone();
                move |_e| {
                    let gate = gate.clone();
                    async move {
                        let _ = gate.acquire().await;
                        Ok::<(), HandlerError>(())
                    }
                }
            }),
        )
        .handler(
            SubscriptionSpec::new(restarter.clone(), [EventType::new("ops.restart_probe")?]),
            handler_fn(restarter.clone(), |_e| async { Ok::<(), HandlerError>(()) }),
        )
        .build()?;
    let manager = Arc::new(manager);
    manager.start().await?;
    let tokens = ApiTokens::none()
        .with(Role::Admin, ADMIN)
        .with(Role::Read, READER);
    let mut api = ApiConfig::new(&config.bus, tokens);
    tweak(&mut api);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(serve(listener, router(manager.clone(), api), async {
        let _ = stopped.await;
    }));
    Ok(Some(Server {
        addr,
        shots: match backend {
            Backend::Memory => "",
            Backend::Redis => "redis-",
            Backend::Kafka => "kafka-",
        },
        flaky_fails,
        gate,
        restarter,
        manager,
        stop,
        served,
    }))
}

/// Runs `scenario` with a fresh server and browser; the browser is closed whatever happens.
/// Without chromedriver or the backend's server (and outside an integration run), does
/// nothing.
async fn in_browser(
    backend: Backend,
    scenario: impl AsyncFnOnce(&Browser, &Server) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    in_browser_with(backend, |_| {}, scenario).await
}

/// [`in_browser`] with the API's settings changed by `tweak`.
async fn in_browser_with(
    backend: Backend,
    tweak: impl FnOnce(&mut ApiConfig),
    scenario: impl AsyncFnOnce(&Browser, &Server) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    in_browser_full(backend, |_| {}, tweak, scenario).await
}

/// [`in_browser`] with the manager's settings changed by `settings` and the API's by
/// `tweak`.
async fn in_browser_full(
    backend: Backend,
    settings: impl FnOnce(&mut Settings),
    tweak: impl FnOnce(&mut ApiConfig),
    scenario: impl AsyncFnOnce(&Browser, &Server) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(driver) = chromedriver()? else {
        return Ok(());
    };
    let Some(server) = start_server_with(backend, settings, tweak).await? else {
        return Ok(());
    };
    let browser = Browser::start(&driver).await?;
    let outcome = scenario(&browser, &server).await;
    // Whatever blocked, let it go, so the bus can stop.
    server.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let closed = browser.close().await;
    outcome.and(closed)
}

/// Two tests of `$scenario` in a browser, `$memory` on the memory bus and `$redis` on Redis,
/// with the manager's settings changed by `$settings` (none by default).
macro_rules! on_memory_and_redis {
    ($memory:ident, $redis:ident, $scenario:expr) => {
        on_memory_and_redis!($memory, $redis, $scenario, |_: &mut Settings| {});
    };
    ($memory:ident, $redis:ident, $scenario:expr, $settings:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() -> anyhow::Result<()> {
            in_browser_full(Backend::Memory, $settings, |_| {}, $scenario).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() -> anyhow::Result<()> {
            in_browser_full(Backend::Redis, $settings, |_| {}, $scenario).await
        }
    };
}

/// Opens the page and signs in with `token`; waits until the dashboard shows.
async fn sign_in(b: &Browser, s: &Server, token: &str) -> anyhow::Result<()> {
    b.open(&s.url()).await?;
    b.until(
        "the login form",
        PAGE,
        "return !document.getElementById('login').hidden",
        vec![],
    )
    .await?;
    b.type_into("#token", token).await?;
    b.click("#login-submit").await?;
    b.until(
        "the dashboard",
        PAGE,
        "return !document.getElementById('app').hidden",
        vec![],
    )
    .await?;
    Ok(())
}

fn user_registered(n: u32) -> Value {
    json!({
        "event_type": "user.registered",
        "payload": {"user_id": format!("u-{n}"), "email": format!("u{n}@example.com")},
        "source": "user_service",
        "correlation_id": format!("req-{n}"),
        "partition_key": format!("u-{n}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_public_static_and_locked_down() -> anyhow::Result<()> {
    let s = start_server(Backend::Memory, |_| {})
        .await?
        .context("memory")?;
    for path in ["/", "/dashboard", "/dashboard/assets/app.js"] {
        let r = request(s.addr, "GET", path, &[]).await?;
        ensure!(r.status == 200, "{path}: {}", r.status);
        let csp = r.header("content-security-policy").unwrap_or_default();
        ensure!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
        ensure!(!csp.contains("unsafe"), "{csp}");
        ensure!(r.header("x-content-type-options") == Some("nosniff"));
        ensure!(r.header("cache-control") == Some("no-cache"));
        let tag = r.header("etag").context("no ETag")?.to_string();
        let again = request(s.addr, "GET", path, &[("If-None-Match", &tag)]).await?;
        ensure!(again.status == 304, "{path} revalidated: {}", again.status);
    }
    let page = request(s.addr, "GET", "/", &[]).await?;
    ensure!(page.header("content-type") == Some("text/html; charset=utf-8"));
    let script = request(s.addr, "GET", "/dashboard/assets/charts.js", &[]).await?;
    ensure!(script.header("content-type") == Some("text/javascript; charset=utf-8"));
    let missing = request(s.addr, "GET", "/dashboard/assets/../Cargo.toml", &[]).await?;
    ensure!(missing.status == 404, "{}", missing.status);
    // The data stays behind the tokens, and the page's routes take no other method.
    let stats = request(s.addr, "GET", "/api/v1/events/stats", &[]).await?;
    ensure!(stats.status == 401, "{}", stats.status);
    let posted = request(s.addr, "POST", "/", &[]).await?;
    ensure!(posted.status == 405, "{}", posted.status);
    // Turned off, `/` is the application's again.
    let off = start_server(Backend::Memory, |api| api.dashboard = false)
        .await?
        .context("memory")?;
    ensure!(request(off.addr, "GET", "/", &[]).await?.status == 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_and_refuses_a_bad_one() -> anyhow::Result<()> {
    in_browser(Backend::Memory, async |b, s| {
        b.open(&s.url()).await?;
        b.until(
            "the login form",
            PAGE,
            "return !document.getElementById('login').hidden \
             && document.getElementById('app').hidden",
            vec![],
        )
        .await?;
        b.screenshot("login").await?;
        b.type_into("#token", "not-a-token-of-this-server").await?;
        b.click("#login-submit").await?;
        let refusal = b.until_text("login-error", "refused (401)", PAGE).await?;
        ensure!(refusal.contains("token"), "{refusal}");
        let app_hidden = b
            .run("return document.getElementById('app').hidden", vec![])
            .await?;
        ensure!(app_hidden == true, "the dashboard showed for a bad token");
        b.screenshot("login-refused").await?;
        Ok(())
    })
    .await
}

/// With a read token: health, the handlers running, then a published event in the tail and its type's chart within 5 s; the tail's filter and the event as JSON.
async fn shows_health_handlers_and_each_new_event(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    b.until_present("#health[data-status='healthy'] tr[data-component]", PAGE)
        .await?;
    for handler in ["counter", "flaky", "blocker"] {
        let row = format!("#handlers tr[data-handler='{handler}'][data-state='running']");
        b.until_present(&row, PAGE).await?;
    }
    let stored = b
        .run("return sessionStorage.getItem('eventbus.token')", vec![])
        .await?;
    ensure!(stored == READER, "the token is kept in session storage");
    let kept_elsewhere = b.run("return localStorage.length", vec![]).await?;
    ensure!(kept_elsewhere == 0, "nothing in local storage");

    let published = Instant::now();
    let id = s.publish(&user_registered(7)).await?;
    b.until_present(&format!("#tail tr[data-event-id='{id}']"), LIVE)
        .await?;
    b.until(
        "the chart of user.registered to draw the event",
        LIVE.saturating_sub(published.elapsed()),
        "const svg = document.querySelector(arguments[0]); \
         return svg !== null && Number(svg.dataset.peak) > 0 && svg.dataset.total === '1'",
        vec![json!("#charts svg[data-series='type:user.registered']")],
    )
    .await?;
    eprintln!(
        "the event showed in the tail and the chart {:.2} s after it was published",
        published.elapsed().as_secs_f64()
    );
    b.until_present("#charts svg[data-series='handler:counter']", PAGE)
        .await?;

    // The tail filters by correlation id, and an event opens as JSON.
    let row = format!("#tail tr[data-event-id='{id}']");
    b.type_into("#filter-correlation", "req-8").await?;
    b.until_absent(&row, PAGE).await?;
    b.type_into("#filter-correlation", "req-7").await?;
    b.until_present(&row, PAGE).await?;
    b.click(&row).await?;
    let shown = b
        .until(
            "the event as JSON",
            PAGE,
            "const d = document.getElementById('details'); \
             return d.open ? document.getElementById('details-json').textContent : null",
            vec![],
        )
        .await?;
    let event: Value = serde_json::from_str(shown.as_str().unwrap_or_default())?;
    ensure!(event["id"] == id.as_str() && event["correlation_id"] == "req-7");
    s.screenshot(b, "event-details").await?;
    b.click("#details-close").await?;
    b.type_into("#filter-correlation", "").await?;
    s.screenshot(b, "dashboard").await?;
    Ok(())
}

on_memory_and_redis!(
    a_read_token_shows_health_handlers_and_each_new_event_within_5_s,
    on_redis_shows_health_handlers_and_each_new_event,
    shows_health_handlers_and_each_new_event
);

/// A dead letter listed with its provenance; redriving it with a read token shows the API's 403, with an admin token it goes.
async fn redrives_a_dead_letter_with_an_admin_token(b: &Browser, s: &Server) -> anyhow::Result<()> {
    let alert = json!({"event_type": "agent.error", "payload": {"agent_id": "a-1",
        "agent_type": "monitor", "error_message": "boom"}, "source": "agents"});
    let event_id = s.publish(&alert).await?;
    sign_in(b, s, READER).await?;
    let letter = "#dead-letters tr[data-letter-id][data-handler='flaky']";
    b.until_present(letter, PAGE).await?;
    let shown = b
        .run(
            "return document.querySelector(arguments[0]).textContent",
            vec![json!(letter)],
        )
        .await?;
    let shown = shown.as_str().unwrap_or_default();
    ensure!(
        shown.contains("agent.error") && shown.contains("cannot page anyone"),
        "{shown}"
    );
    b.scroll_to("#dead-letters-section").await?;
    s.screenshot(b, "dead-letter").await?;

    // A read token: the confirmation, then the API's 403 as a message; the letter stays.
    b.click(&format!("{letter} .redrive")).await?;
    answer_confirmation(b, true).await?;
    let refused = b.until_text("message", "403", PAGE).await?;
    ensure!(refused.contains("admin token"), "{refused}");
    s.screenshot(b, "redrive-refused").await?;
    let letters = s.flaky_dead_letters().await?;
    ensure!(letters["count"] == 1, "{letters}");
    ensure!(letters["dead_letters"][0]["event"]["id"] == event_id.as_str());

    // An admin token, the pager back: redriven, handled, and gone from the page.
    s.flaky_fails.store(false, Ordering::SeqCst);
    b.click("#logout").await?;
    sign_in(b, s, ADMIN).await?;
    b.click(&format!("{letter} .redrive")).await?;
    answer_confirmation(b, true).await?;
    b.until_text("message", "Redriven: 1 dead letter", PAGE)
        .await?;
    b.until_absent(letter, PAGE).await?;
    b.until(
        "the redriven event handled",
        PAGE,
        "const row = document.querySelector(\"#handlers tr[data-handler='flaky']\"); \
         return row !== null && row.children[5].textContent === '1'",
        vec![],
    )
    .await?;
    let letters = s.flaky_dead_letters().await?;
    ensure!(letters["count"] == 0, "{letters}");
    b.scroll_to("#dead-letters-section").await?;
    s.screenshot(b, "redriven").await?;
    Ok(())
}

on_memory_and_redis!(
    a_dead_letter_is_refused_to_a_reader_and_redriven_by_an_admin,
    on_redis_redrives_a_dead_letter_with_an_admin_token,
    redrives_a_dead_letter_with_an_admin_token
);

/// A handler blocked on its first event turns `stalled`, its row red, health degraded; released, it runs again.
async fn marks_a_stalled_handler(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    b.until_present(
        "#handlers tr[data-handler='blocker'][data-state='running']",
        PAGE,
    )
    .await?;
    // The first job blocks the handler; the ones behind it (same key) are its lag.
    for n in 0..5 {
        s.publish(
            &json!({"event_type": "billing.slow_job", "payload": {"job": n},
            "source": "billing", "partition_key": "jobs"}),
        )
        .await?;
    }
    let row = "#handlers tr[data-handler='blocker'][data-state='stalled']";
    b.until_present(row, PAGE).await?;
    let colour = b
        .run(
            "const cell = document.querySelector(arguments[0] + ' td'); \
             return getComputedStyle(cell).backgroundColor",
            vec![json!(row)],
        )
        .await?;
    ensure!(
        colour == "rgb(255, 235, 233)",
        "the stalled row is {colour}, not red"
    );
    let health = "#health[data-status='degraded'] tr.bad[data-component='consumer blocker']";
    b.until_present(health, PAGE).await?;
    b.until(
        "the chart of billing.slow_job to draw its 5 events",
        PAGE,
        "const svg = document.querySelector(arguments[0]); \
         return svg !== null && Number(svg.dataset.peak) > 0 && svg.dataset.total === '5'",
        vec![json!("#charts svg[data-series='type:billing.slow_job']")],
    )
    .await?;
    // A custom type's first events make the tail's filter offer it.
    b.until_present("#filter-type option[value='billing.slow_job']", PAGE)
        .await?;
    s.screenshot(b, "stalled").await?;
    // Released, it catches up and runs again.
    s.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    b.until_present(
        "#handlers tr[data-handler='blocker'][data-state='running']",
        PAGE,
    )
    .await?;
    Ok(())
}

on_memory_and_redis!(
    a_stalled_handler_turns_its_row_red,
    on_redis_marks_a_stalled_handler,
    marks_a_stalled_handler,
    |config: &mut Settings| config.bus.stall_timeout = Duration::from_millis(500)
);

/// Reads the open stream `conn` into `seen` until `done(seen)` holds; an error after
/// [`PATIENT`] or if the server closes first.
async fn read_stream_until(
    conn: &mut TcpStream,
    seen: &mut String,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let deadline = Instant::now() + PATIENT;
    let mut chunk = vec![0u8; 64 * 1024];
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "timed out waiting for {what}; read: {seen}"
        );
        let n = tokio::time::timeout(left, conn.read(&mut chunk))
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for {what}; read: {seen}"))??;
        ensure!(n > 0, "the stream closed before {what}; read: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    Ok(())
}

/// Opens `GET /api/v1/events/stream` with `token` and reads until its `ready` message.
async fn open_stream(addr: SocketAddr, token: &str) -> anyhow::Result<(TcpStream, String)> {
    use tokio::io::AsyncWriteExt as _;
    let mut conn = TcpStream::connect(addr).await?;
    let head = format!(
        "GET /api/v1/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await?;
    let mut seen = String::new();
    read_stream_until(&mut conn, &mut seen, "the stream's ready message", |s| {
        s.contains("event: ready")
    })
    .await?;
    ensure!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    ensure!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    Ok((conn, seen))
}

/// The stream: a token needed, a cap on open streams (503 with `Retry-After` beyond), no
/// request slot held and no request deadline (it outlives `EVENT_API_TIMEOUT_MS` while a
/// cap of one request at once still serves others), each new event pushed, a snapshot about
/// every second, and an `end` message on shutdown, after which the server stops.
/// The request deadline of the stream test's server: generous for its plain requests on a
/// loaded machine, and well below the stream's life.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_guarded_bounded_and_ends_on_shutdown() -> anyhow::Result<()> {
    let s = start_server(Backend::Memory, |api| {
        api.limits.max_streams = 1;
        api.limits.max_concurrent = 1;
        api.limits.timeout = REQUEST_DEADLINE;
    })
    .await?
    .context("memory")?;
    let path = "/api/v1/events/stream";
    ensure!(request(s.addr, "GET", path, &[]).await?.status == 401);

    let opened = Instant::now();
    let (mut conn, mut seen) = open_stream(s.addr, READER).await?;
    let auth = format!("Bearer {READER}");
    let second = request(s.addr, "GET", path, &[("Authorization", &auth)]).await?;
    ensure!(second.status == 503, "a second stream: {}", second.status);
    ensure!(second.error_code()? == "too_many_streams");
    ensure!(second.header("retry-after").is_some());
    // The open stream holds none of the one request slot, and is counted.
    let (status, _) = call(s.addr, "GET", "/api/v1/events/health", READER, None).await?;
    ensure!(status == 200, "health beside the stream: {status}");
    let metrics = request(s.addr, "GET", "/metrics", &[("Authorization", &auth)]).await?;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("eventbus_http_streams_open ")),
        "no eventbus_http_streams_open in /metrics"
    );

    let id = s.publish(&user_registered(1)).await?;
    read_stream_until(&mut conn, &mut seen, "the event pushed", |seen| {
        seen.contains(&format!("\"id\":\"{id}\""))
    })
    .await?;
    // Snapshots keep coming well past the request deadline.
    read_stream_until(&mut conn, &mut seen, "8 snapshots", |seen| {
        seen.matches("event: snapshot").count() >= 8
    })
    .await?;
    let lasted = opened.elapsed();
    ensure!(lasted > REQUEST_DEADLINE, "{lasted:?}");
    eprintln!(
        "8 snapshots after {:.1} s of stream (request deadline {REQUEST_DEADLINE:?})",
        lasted.as_secs_f64()
    );
    let snapshot = seen
        .split("event: snapshot\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .context("a snapshot's data")?;
    let snapshot: Value = serde_json::from_str(snapshot)?;
    ensure!(
        snapshot["stats"]["handlers"]["counter"].is_object(),
        "{snapshot}"
    );
    ensure!(snapshot["health"]["consumers"].is_array(), "{snapshot}");

    // Shutdown: the stream says so and ends, and the server stops.
    let Server { stop, served, .. } = s;
    let _ = stop.send(());
    read_stream_until(&mut conn, &mut seen, "the end message", |seen| {
        seen.contains("event: end")
    })
    .await?;
    tokio::time::timeout(PATIENT, served)
        .await
        .context("the server did not stop within a minute of its shutdown")???;
    Ok(())
}

/// 300 events of three types stored at once: the stream pushes them, the tail shows its 200
/// newest, the charts and the handler row count them; the page calls neither `/recent` nor
/// `/stats` meanwhile (the stream brings both).
async fn streams_the_tail_and_the_stats(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    b.until(
        "the stream to be live",
        PATIENT,
        "return document.getElementById('app').dataset.live === 'stream' \
         && document.querySelector(\"#handlers tr[data-handler='counter']\") !== null",
        vec![],
    )
    .await?;
    // The tail's calls (`/recent?limit=`; the alerts read `/recent?event_type=` now and then).
    let calls = "return performance.getEntriesByType('resource') \
                 .filter((e) => e.name.includes(arguments[0])).length";
    // The tail's first fill, once the stream is ready, has finished.
    b.until(
        "the tail's first fill",
        PATIENT,
        &format!("return (() => {{ {calls} }})() >= 1"),
        vec![json!("/recent?limit=")],
    )
    .await?;
    let recent_before = b.run(calls, vec![json!("/recent?limit=")]).await?;
    let stats_before = b.run(calls, vec![json!("/stats")]).await?;
    let updates_before = b
        .run(
            "return Number(document.getElementById('app').dataset.polls)",
            vec![],
        )
        .await?;

    let types = [
        EventType::USER_REGISTERED,
        EventType::new("shop.order_placed")?,
        EventType::new("shop.order_shipped")?,
    ];
    // A millisecond apart: the order the tail must show is theirs, with no ties.
    let base = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(300);
    let events = (0..300)
        .map(|n| {
            Event::builder(types[n % 3].clone(), "shop")
                .field("n", n as u64)
                .correlation_id(format!("order-{}", n / 3))
                .timestamp(base + time::Duration::milliseconds(n as i64))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let newest = events.last().context("events")?.id.to_string();
    let newest_200: Vec<String> = events[100..]
        .iter()
        .rev()
        .map(|e| e.id.to_string())
        .collect();
    let published = Instant::now();
    for result in s.manager.bus()?.publish_batch(events).await {
        result?;
    }
    b.until_present(&format!("#tail tr[data-event-id='{newest}']"), PATIENT)
        .await?;
    eprintln!(
        "the newest of 300 events showed in the tail {:.2} s after they were stored",
        published.elapsed().as_secs_f64()
    );
    b.until(
        "the tail to hold its 200 newest events, newest first",
        PATIENT,
        "const ids = [...document.querySelectorAll('#tail tr[data-event-id]')] \
           .map((r) => r.dataset.eventId); \
         return JSON.stringify(ids) === JSON.stringify(arguments[0])",
        vec![json!(newest_200)],
    )
    .await?;
    b.until(
        "the charts and the counter's row to count them",
        PATIENT,
        "const placed = document.querySelector(\"#charts svg[data-series='type:shop.order_placed']\"); \
         const row = document.querySelector(\"#handlers tr[data-handler='counter']\"); \
         return placed !== null && placed.dataset.total === '100' \
             && row !== null && row.children[5].textContent === '100'",
        vec![],
    )
    .await?;
    ensure!(b.run(calls, vec![json!("/recent?limit=")]).await? == recent_before);
    ensure!(b.run(calls, vec![json!("/stats")]).await? == stats_before);
    let updates = b
        .run(
            "return Number(document.getElementById('app').dataset.polls)",
            vec![],
        )
        .await?;
    ensure!(
        updates.as_u64() > updates_before.as_u64(),
        "no update pushed: {updates}"
    );
    ensure!(
        b.run("return document.getElementById('live').textContent", vec![])
            .await?
            == "live"
    );
    // The correlation filter applies to pushed events as they are.
    b.type_into("#filter-correlation", "order-99").await?;
    b.until(
        "the tail filtered to order-99's three events",
        PATIENT,
        "return document.querySelectorAll('#tail tr[data-event-id]').length === 3",
        vec![],
    )
    .await?;
    // Cleared, the whole tail shows again.
    b.type_into("#filter-correlation", "").await?;
    b.until(
        "the tail unfiltered",
        PATIENT,
        "return document.querySelectorAll('#tail tr[data-event-id]').length === 200",
        vec![],
    )
    .await?;
    s.screenshot(b, "live-stream").await?;
    Ok(())
}

on_memory_and_redis!(
    the_stream_pushes_the_tail_and_the_stats,
    on_redis_the_stream_pushes_the_tail_and_the_stats,
    streams_the_tail_and_the_stats
);

/// With no stream to be had (`EVENT_API_MAX_STREAMS=0`), the page says it polls, and still
/// shows each new event and the handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stream_the_page_polls() -> anyhow::Result<()> {
    in_browser_with(
        Backend::Memory,
        |api| api.limits.max_streams = 0,
        async |b, s| {
            sign_in(b, s, READER).await?;
            let why = b
                .until(
                    "the page to fall back to polling",
                    PATIENT,
                    "const live = document.getElementById('live'); \
                     return document.getElementById('app').dataset.live === 'polling' \
                         && live.textContent === 'polling' ? live.title : null",
                    vec![],
                )
                .await?;
            ensure!(
                why.as_str()
                    .unwrap_or_default()
                    .contains("EVENT_API_MAX_STREAMS"),
                "{why}"
            );
            b.until_present(
                "#handlers tr[data-handler='counter'][data-state='running']",
                PATIENT,
            )
            .await?;
            // Without the domain handlers, the alerts say that none can be raised here.
            b.until_present("#alerts[data-state='off'] .note:not([hidden])", PATIENT)
                .await?;
            b.until_text("alerts", "not raised here", PATIENT).await?;
            let id = s.publish(&user_registered(3)).await?;
            b.until_present(&format!("#tail tr[data-event-id='{id}']"), PATIENT)
                .await?;
            s.screenshot(b, "polling").await?;
            Ok(())
        },
    )
    .await
}

/// A consumer loop that panics (`event_core::fault::panic_loop_once`) is restarted by the
/// bus: its row shows `restarting` (the loop failed within the last minute), its health row
/// the failure, and it goes on handling events. On a bus without group members (memory,
/// Redis) the row's members cell says so.
async fn marks_a_restarting_handler(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    let name = s.restarter.as_str();
    let running = format!("#handlers tr[data-handler='{name}'][data-state='running']");
    b.until_present(&running, PATIENT).await?;
    let members = b
        .run(
            "return document.querySelector(arguments[0] + ' td.members').dataset.members",
            vec![json!(running)],
        )
        .await?;
    ensure!(
        members == "0",
        "members on a bus without a coordinator: {members}"
    );
    let probe =
        |n: u32| json!({"event_type": "ops.restart_probe", "payload": {"n": n}, "source": "ops"});
    event_core::fault::panic_loop_once(name);
    // The memory bus's loop waits for an event before its next iteration; Redis's reads on.
    s.publish(&probe(1)).await?;
    let outcome = async {
        let restarting = format!("#handlers tr[data-handler='{name}'][data-state='restarting']");
        b.until_present(&restarting, PATIENT).await?;
        let failure = b
            .until(
                "the health row to tell the loop's failure",
                PATIENT,
                "const row = document.querySelector(arguments[0]); \
                 return row === null ? null : row.textContent",
                vec![json!(format!(
                    "#health tr[data-component='consumer {name}']"
                ))],
            )
            .await?;
        eprintln!("health row of the restarted consumer: {failure}");
        s.screenshot(b, "restarting").await?;
        // Restarted, it handles what it missed and what comes next.
        s.publish(&probe(2)).await?;
        b.until(
            "the restarted handler to handle both probes",
            PATIENT,
            "const row = document.querySelector(arguments[0]); \
             return row !== null && row.children[5].textContent === '2'",
            vec![json!(format!("#handlers tr[data-handler='{name}']"))],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    event_core::fault::clear(name);
    outcome
}

on_memory_and_redis!(
    a_restarted_consumer_loop_shows_restarting,
    on_redis_a_restarted_consumer_loop_shows_restarting,
    marks_a_restarting_handler
);

/// On Kafka each handler row lists the processes of its group with the partitions each owns,
/// as `GET /stats` reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_each_handler_row_shows_its_group_members() -> anyhow::Result<()> {
    in_browser(Backend::Kafka, async |b, s| {
        sign_in(b, s, READER).await?;
        let cell = "#handlers tr[data-handler='counter'] td.members div[data-member]";
        let shown = b
            .until(
                "the counter's group member with its partitions",
                Duration::from_secs(120),
                "const m = document.querySelector(arguments[0]); \
                 return m !== null && m.textContent.includes('[') ? m.textContent : null",
                vec![json!(cell)],
            )
            .await?;
        let (status, stats) = call(s.addr, "GET", "/api/v1/events/stats", READER, None).await?;
        ensure!(status == 200, "{status}");
        let members = &stats["handlers"]["counter"]["members"];
        let member = members
            .as_array()
            .and_then(|m| m.first())
            .context("no member")?;
        let shown = shown.as_str().unwrap_or_default();
        ensure!(
            shown.contains(member["host"].as_str().unwrap_or("?")),
            "{shown} / {member}"
        );
        let partitions = member["partitions"].as_object().context("partitions")?;
        for topic in partitions.keys() {
            ensure!(shown.contains(topic.as_str()), "{shown} lacks {topic}");
        }
        b.scroll_to("#handlers").await?;
        s.screenshot(b, "group-members").await?;
        // The stream works on Kafka too, whose reads by time are the slowest.
        let id = s.publish(&user_registered(5)).await?;
        b.until(
            "the event pushed on Kafka",
            Duration::from_secs(120),
            "return document.getElementById('app').dataset.live === 'stream' \
                 && document.querySelector(arguments[0]) !== null",
            vec![json!(format!("#tail tr[data-event-id='{id}']"))],
        )
        .await?;
        Ok(())
    })
    .await
}

/// Five failures of one agent within the window (the default policy: 5 outcomes, 50%) make
/// the agent handler raise an error-rate alert: it shows beside health, with its rate and
/// outcomes, as alerting; more successes than failures afterwards end the episode and the
/// row says so.
async fn shows_the_agent_alerts(b: &Browser, s: &Server) -> anyhow::Result<()> {
    s.flaky_fails.store(false, Ordering::SeqCst);
    sign_in(b, s, READER).await?;
    b.until_present("#alerts[data-state='on'][data-count='0']", PATIENT)
        .await?;
    let error = |n: u32| {
        json!({"event_type": "agent.error", "source": "agents",
            "payload": {"agent_id": "agent-7", "agent_type": "scraper",
                        "error_message": format!("timeout {n}")}})
    };
    for n in 0..5 {
        s.publish(&error(n)).await?;
    }
    let row = "#alerts tr[data-agent='agent-7'][data-alerting='true']";
    b.until_present(row, PATIENT).await?;
    let shown = b
        .run(
            "return document.querySelector(arguments[0]).textContent",
            vec![json!(row)],
        )
        .await?;
    let shown = shown.as_str().unwrap_or_default();
    ensure!(
        shown.contains("100%") && shown.contains("5 of 5") && shown.contains("scraper"),
        "{shown}"
    );
    b.until_text("alerts", "1 alerting", PATIENT).await?;
    s.screenshot(b, "alert").await?;
    // Six successful tasks bring the agent's share of failures under 50%: the episode ends.
    for n in 0..6 {
        s.publish(
            &json!({"event_type": "agent.task_completed", "source": "agents",
            "payload": {"agent_id": "agent-7", "task_id": format!("t-{n}"),
                        "task_type": "scrape", "success": true, "duration_seconds": 1.5}}),
        )
        .await?;
    }
    b.until_present(
        "#alerts tr[data-agent='agent-7'][data-alerting='false']",
        PATIENT,
    )
    .await?;
    b.until_text("alerts", "none now", PATIENT).await?;
    // Reloaded (the token stays in the tab), the page reads the alerts raised before.
    b.open(&s.url()).await?;
    b.until_present(
        "#alerts[data-count='1'] tr[data-agent='agent-7'][data-alerting='false']",
        PATIENT,
    )
    .await?;
    Ok(())
}

fn with_domain_handlers(config: &mut Settings) {
    config.enable_event_handlers = true;
}

on_memory_and_redis!(
    the_agent_alerts_show_beside_health,
    on_redis_the_agent_alerts_show_beside_health,
    shows_the_agent_alerts,
    with_domain_handlers
);

/// Chooses `value` in the `<select>` `#id`, as a user would (the page hears `change`).
async fn choose(b: &Browser, id: &str, value: &str) -> anyhow::Result<()> {
    b.until(
        &format!("#{id} to offer {value}"),
        PATIENT,
        "const s = document.getElementById(arguments[0]); \
         if (![...s.options].some((o) => o.value === arguments[1])) return false; \
         s.value = arguments[1]; s.dispatchEvent(new Event('change')); return true",
        vec![json!(id), json!(value)],
    )
    .await
    .map(drop)
}

/// Confirms (or cancels) the `#confirm` dialog once it shows.
async fn answer_confirmation(b: &Browser, yes: bool) -> anyhow::Result<()> {
    b.until(
        "the confirmation",
        PATIENT,
        "return document.getElementById('confirm').open",
        vec![],
    )
    .await?;
    b.click(if yes { "#confirm-yes" } else { "#confirm-no" })
        .await
}

/// Waits until the details dialog shows JSON, returns it, and closes the dialog.
async fn details_json(b: &Browser) -> anyhow::Result<Value> {
    let shown = b
        .until(
            "the details dialog",
            PATIENT,
            "const d = document.getElementById('details'); \
             return d.open ? document.getElementById('details-json').textContent : null",
            vec![],
        )
        .await?;
    let value = serde_json::from_str(shown.as_str().unwrap_or_default())?;
    b.click("#details-close").await?;
    Ok(value)
}

/// The catalog with each type's schema and example, the domain views (the users after three
/// registrations, each record on click; the signal funnel), and the publish form: refused
/// to a reader with the API's 403, an invalid payload answered with the API's 400, a
/// cancelled confirmation publishing nothing, then a published event in the tail.
async fn shows_views_catalog_and_publishes(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    let row = "#catalog tr[data-type='user.registered']";
    b.click(&format!("{row} .schema")).await?;
    let schema = details_json(b).await?;
    ensure!(schema["properties"]["email"].is_object(), "{schema}");
    b.click(&format!("{row} .example")).await?;
    let example = details_json(b).await?;
    ensure!(example["user_id"].is_string(), "{example}");

    for n in 1..=3 {
        s.publish(&user_registered(n)).await?;
    }
    choose(b, "view-name", "user").await?;
    b.until(
        "the users view to count three registrations",
        PATIENT,
        "const n = document.querySelector(\"#view[data-view='user'] [data-field='registered'] b\"); \
         return n !== null && n.textContent === '3' \
             && document.querySelectorAll(\"#view [data-field='users'] tbody tr\").length === 3",
        vec![],
    )
    .await?;
    b.click("#view [data-field='users'] tr[data-key='u-2']")
        .await?;
    let user = details_json(b).await?;
    ensure!(user["email"] == "u2@example.com", "{user}");
    s.screenshot(b, "views").await?;
    choose(b, "view-name", "market_signal").await?;
    b.until_present(
        "#view[data-view='market_signal'] .facts div[data-field]",
        PATIENT,
    )
    .await?;

    // A reader: the confirmation, then the API's 403.
    b.click(&format!("{row} .use")).await?;
    b.click("#publish-submit").await?;
    answer_confirmation(b, true).await?;
    let refused = b.until_text("publish-result", "403", PATIENT).await?;
    ensure!(refused.contains("admin token"), "{refused}");

    // An admin: an invalid payload, a cancelled one, then one published.
    b.click("#logout").await?;
    sign_in(b, s, ADMIN).await?;
    b.click(&format!("{row} .use")).await?;
    b.type_into("#publish-payload", r#"{"user_id": "u-9"}"#)
        .await?;
    b.click("#publish-submit").await?;
    answer_confirmation(b, true).await?;
    let invalid = b.until_text("publish-result", "400", PATIENT).await?;
    ensure!(
        invalid.contains("invalid_payload") && invalid.contains("email"),
        "{invalid}"
    );
    b.type_into(
        "#publish-payload",
        r#"{"user_id": "u-10", "email": "u10@example.com"}"#,
    )
    .await?;
    b.click("#publish-submit").await?;
    answer_confirmation(b, false).await?;
    b.until_text("publish-result", "Not published", PATIENT)
        .await?;
    b.type_into("#publish-correlation", "from-the-form").await?;
    b.click("#publish-submit").await?;
    answer_confirmation(b, true).await?;
    b.until_text("publish-result", "Published user.registered", PATIENT)
        .await?;
    let id = b
        .run(
            "return document.getElementById('publish-result').dataset.eventId",
            vec![],
        )
        .await?;
    let id = id.as_str().context("the published event's id")?.to_string();
    b.until_present(&format!("#tail tr[data-event-id='{id}']"), PATIENT)
        .await?;
    let (_, recent) = call(
        s.addr,
        "GET",
        "/api/v1/events/recent?event_type=user.registered&limit=10",
        READER,
        None,
    )
    .await?;
    let published = recent
        .as_array()
        .and_then(|events| events.iter().find(|e| e["id"] == id.as_str()))
        .context("the published event stored")?;
    ensure!(
        published["correlation_id"] == "from-the-form"
            && published["payload"]["email"] == "u10@example.com",
        "{published}"
    );
    b.scroll_to("#publish-form").await?;
    s.screenshot(b, "catalog-published").await?;
    Ok(())
}

on_memory_and_redis!(
    the_views_and_the_catalog_show_and_an_admin_publishes,
    on_redis_the_views_and_the_catalog_show_and_an_admin_publishes,
    shows_views_catalog_and_publishes,
    with_domain_handlers
);

/// Publishes `event_type` caused by `cause` (an event id), in correlation `signup`.
async fn publish_caused(
    s: &Server,
    event_type: &str,
    cause: Option<&str>,
    n: u32,
) -> anyhow::Result<String> {
    let mut event = json!({"event_type": event_type, "source": "signup",
        "payload": {"user_id": format!("u-{n}"), "email": format!("u{n}@example.com")},
        "correlation_id": "signup-100"});
    if let Some(cause) = cause {
        event["causation_id"] = json!(cause);
    }
    s.publish(&event).await
}

/// The chain shown in `#chain` once it is read for `id`: `(event id, relation, depth)`.
async fn shown_chain(b: &Browser, id: &str) -> anyhow::Result<Vec<(String, String, i64)>> {
    let items = b
        .until(
            &format!("the causation chain of {id}"),
            PATIENT,
            "const c = document.getElementById('chain'); \
             if (c.hidden || c.dataset.state !== 'ready' || c.dataset.for !== arguments[0]) \
               return null; \
             return [...c.querySelectorAll('li')].map((li) => \
               [li.dataset.eventId, li.dataset.relation, Number(li.dataset.depth)])",
            vec![json!(id)],
        )
        .await?;
    Ok(serde_json::from_value(items)?)
}

/// Among 300 unrelated events, a signup `a` caused `b` and `d`, and `b` caused `c`.
/// Clicking `b` in the tail shows `a` above it and `c` below; clicking `a` in the chain
/// opens it with `b` and `d` below it and `c` below `b`.
async fn shows_the_causation_chain(b: &Browser, s: &Server) -> anyhow::Result<()> {
    sign_in(b, s, READER).await?;
    let noise = (0..300)
        .map(|n| {
            Event::builder(EventType::new("shop.order_placed")?, "shop")
                .field("n", n)
                .correlation_id(format!("order-{n}"))
                .causation_id(format!("checkout-{n}"))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for result in s.manager.bus()?.publish_batch(noise).await {
        result?;
    }
    let a = publish_caused(s, "user.registered", None, 100).await?;
    let bb = publish_caused(s, "billing.account_opened", Some(&a), 100).await?;
    let c = publish_caused(s, "billing.invoice_sent", Some(&bb), 100).await?;
    let d = publish_caused(s, "mail.welcome_sent", Some(&a), 100).await?;

    b.click(&format!("#tail tr[data-event-id='{bb}']")).await?;
    let chain = shown_chain(b, &bb).await?;
    let expected = vec![
        (a.clone(), "ancestor".to_string(), -1),
        (bb.clone(), "self".to_string(), 0),
        (c.clone(), "descendant".to_string(), 1),
    ];
    ensure!(chain == expected, "the chain of b: {chain:?}");
    s.screenshot(b, "causation-chain").await?;

    b.click(&format!("#chain li[data-event-id='{a}']")).await?;
    let mut chain = shown_chain(b, &a).await?;
    // Breadth first: b and d (in either order: ids made in one millisecond may sort either
    // way), then c.
    if chain.len() == 4 && chain[1].0 == d {
        chain.swap(1, 2);
    }
    let expected = vec![
        (a.clone(), "self".to_string(), 0),
        (bb.clone(), "descendant".to_string(), 1),
        (d.clone(), "descendant".to_string(), 1),
        (c.clone(), "descendant".to_string(), 2),
    ];
    ensure!(chain == expected, "the chain of a: {chain:?}");
    let title = b
        .run(
            "return document.getElementById('details-title').textContent",
            vec![],
        )
        .await?;
    ensure!(
        title.as_str().unwrap_or_default().contains(&a),
        "the dialog shows a: {title}"
    );
    b.click("#details-close").await?;
    Ok(())
}

on_memory_and_redis!(
    clicking_an_event_shows_its_causation_chain,
    on_redis_clicking_an_event_shows_its_causation_chain,
    shows_the_causation_chain
);

/// `GET /chain/{id}`: a read token needed, the window bounded (1 to 24 hours), 404 for an
/// event not in it, and a root's chain with its effects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_endpoint_is_guarded_and_bounded() -> anyhow::Result<()> {
    let s = start_server(Backend::Memory, |_| {})
        .await?
        .context("memory")?;
    let a = publish_caused(&s, "user.registered", None, 1).await?;
    let b = publish_caused(&s, "billing.account_opened", Some(&a), 1).await?;
    let path = format!("/api/v1/events/chain/{a}");
    ensure!(request(s.addr, "GET", &path, &[]).await?.status == 401);
    let (status, chain) = call(s.addr, "GET", &path, READER, None).await?;
    ensure!(status == 200, "{status} {chain}");
    ensure!(chain["event"]["id"] == a.as_str() && chain["ancestors"] == json!([]));
    ensure!(
        chain["descendants"][0]["event"]["id"] == b.as_str(),
        "{chain}"
    );
    ensure!(chain["descendants"][0]["parent"] == a.as_str() && chain["complete"] == true);
    let (status, _) = call(s.addr, "GET", &format!("{path}?hours=25"), READER, None).await?;
    ensure!(status == 400, "hours=25: {status}");
    let unknown = "/api/v1/events/chain/0190f2a0-0000-7000-8000-000000000000";
    let (status, body) = call(s.addr, "GET", unknown, READER, None).await?;
    ensure!(
        status == 404 && body["error"]["code"] == "not_found",
        "{status} {body}"
    );
    Ok(())
}

/// With replay turned off (`ENABLE_EVENT_REPLAY=false`) the tail cannot follow the store: the
/// stream says why once, and the page shows it, while the stats still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_that_cannot_read_the_store_says_why() -> anyhow::Result<()> {
    in_browser_full(
        Backend::Memory,
        |config| config.bus.enable_event_replay = false,
        |_| {},
        async |b, s| {
            sign_in(b, s, READER).await?;
            let said = b
                .until_text("message", "The live tail cannot read the events", PATIENT)
                .await?;
            ensure!(said.contains("ENABLE_EVENT_REPLAY"), "{said}");
            b.until_present(
                "#app[data-live='stream'] #handlers tr[data-handler='counter']",
                PATIENT,
            )
            .await?;
            Ok(())
        },
    )
    .await
}
