//! The HTTP API against a real server on loopback, spoken to over plain TCP: auth, every
//! endpoint, bad input (each a 4xx with a JSON error, and the bus unharmed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use event_core::{EventType, HandlerError, SubscriptionSpec, handler_fn};
use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};
use event_manager::{EventBusManager, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

mod flaky;
mod http_client;

use http_client::{Reply, exchange, parse};

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";

/// One HTTP/1.1 request on a fresh connection, read to the end.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<Reply> {
    exchange(TcpStream::connect(addr).await?, method, path, token, body).await
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<Reply> {
    call(addr, "GET", path, token, None).await
}

async fn post(addr: SocketAddr, path: &str, token: &str, body: &Value) -> anyhow::Result<Reply> {
    let bytes = serde_json::to_vec(body)?;
    call(
        addr,
        "POST",
        path,
        Some(token),
        Some(("application/json", &bytes)),
    )
    .await
}

struct Server {
    addr: SocketAddr,
    manager: Arc<EventBusManager>,
    counted: Arc<AtomicU64>,
    /// While set, the `flaky` handler fails permanently.
    flaky_fails: Arc<AtomicBool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(max_page: usize) -> anyhow::Result<Server> {
    start_server_with(|api| api.max_page = max_page).await
}

async fn start_server_with(tweak: impl FnOnce(&mut ApiConfig)) -> anyhow::Result<Server> {
    let mut config = Settings::default();
    config.enable_event_handlers = false;
    config.bus.max_event_bytes = 4096;
    config.bus.max_retries = 0;
    let counted = Arc::new(AtomicU64::new(0));
    let flaky_fails = Arc::new(AtomicBool::new(true));
    let manager = Arc::new(
        EventBusManager::builder(config.clone())
            .handler(
                SubscriptionSpec::new("counter", [EventType::USER_REGISTERED]),
                handler_fn("counter", {
                    let counted = counted.clone();
                    move |_e| {
                        let counted = counted.clone();
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), HandlerError>(())
                        }
                    }
                }),
            )
            .handler(
                SubscriptionSpec::new("flaky", [EventType::AGENT_ERROR]),
                flaky::failing_while("flaky", &flaky_fails, "cannot page anyone"),
            )
            .build()?,
    );
    manager.start().await?;
    let tokens = ApiTokens::none()
        .with(Role::Admin, ADMIN)
        .with(Role::Read, READER);
    let mut api = ApiConfig::new(&config.bus, tokens);
    tweak(&mut api);
    let app = router(manager.clone(), api);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, app, async {
        let _ = rx.await;
    }));
    Ok(Server {
        addr,
        manager,
        counted,
        flaky_fails,
        _stop: tx,
    })
}

/// Publishes an `agent.error` and waits until `handler`, which fails it, has one dead letter.
async fn alert_dead_lettered(addr: SocketAddr, handler: &str) -> anyhow::Result<()> {
    let alert = json!({"event_type": "agent.error", "payload": {"agent_id": "a-1", "agent_type": "monitor", "error_message": "boom"}, "source": "agents"});
    let published = post(addr, "/api/v1/events/publish", ADMIN, &alert).await?;
    ensure!(
        published.status == 200,
        "publishing the alert: {}",
        published.status
    );
    let path = format!("/api/v1/events/dead-letters?handler={handler}");
    wait_for("the dead letter", async || {
        Ok(get(addr, &path, Some(ADMIN)).await?.json()?["count"] == 1)
    })
    .await
}

async fn wait_for(
    what: &str,
    mut condition: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await? {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn user_registered(n: usize) -> Value {
    json!({
        "event_type": "user.registered",
        "payload": {"user_id": format!("u-{n}"), "email": format!("u{n}@example.com")},
        "source": "user_service",
        "correlation_id": format!("req-{n}"),
        "partition_key": format!("u-{n}"),
    })
}

#[tokio::test]
async fn auth_roles_and_errors() -> anyhow::Result<()> {
    let s = start_server(1000).await?;
    // No token, a wrong token, a wrong scheme: 401 with a JSON body and a challenge.
    for token in [None, Some("not-a-valid-token-at-all")] {
        let r = get(s.addr, "/api/v1/events/stats", token).await?;
        assert_eq!(r.status, 401);
        assert_eq!(r.error_code()?, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let mut stream = TcpStream::connect(s.addr).await?;
    stream
        .write_all(format!("GET /api/v1/events/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {READER}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    assert_eq!(parse(&raw)?.status, 401);

    // A read token reads, and is refused (403) where an admin token is needed.
    assert_eq!(
        get(s.addr, "/api/v1/events/stats", Some(READER))
            .await?
            .status,
        200
    );
    let r = post(
        s.addr,
        "/api/v1/events/publish",
        READER,
        &user_registered(1),
    )
    .await?;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code()?, "forbidden");
    for (method, path) in [
        ("POST", "/api/v1/events/replay"),
        ("DELETE", "/api/v1/events/handlers/counter"),
        ("POST", "/api/v1/events/dead-letters/redrive"),
        ("POST", "/api/v1/events/dead-letters/purge"),
    ] {
        let r = call(
            s.addr,
            method,
            path,
            Some(READER),
            Some(("application/json", b"{}")),
        )
        .await?;
        assert_eq!(r.status, 403, "{method} {path}");
    }
    // /metrics needs a token too.
    assert_eq!(get(s.addr, "/metrics", None).await?.status, 401);
    // Admin tokens do everything; nothing was published by the refused requests.
    let r = post(s.addr, "/api/v1/events/publish", ADMIN, &user_registered(2)).await?;
    assert_eq!(r.status, 200);
    let stats = get(s.addr, "/api/v1/events/stats", Some(ADMIN))
        .await?
        .json()?;
    assert_eq!(stats["total_events"], 1);
    // Unknown paths and methods: JSON too.
    let r = get(s.addr, "/api/v2/nothing", Some(ADMIN)).await?;
    assert_eq!((r.status, r.error_code()?.as_str()), (404, "not_found"));
    let r = call(s.addr, "PUT", "/api/v1/events/stats", Some(ADMIN), None).await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code()?, "method_not_allowed");
    Ok(())
}

#[tokio::test]
async fn publish_stats_types_health_recent_and_remove() -> anyhow::Result<()> {
    let s = start_server(1000).await?;
    let r = post(s.addr, "/api/v1/events/publish", ADMIN, &user_registered(1)).await?;
    assert_eq!(r.status, 200);
    let published = r.json()?;
    assert_eq!(published["success"], true);
    assert_eq!(published["event_type"], "user.registered");
    let id = published["event_id"].as_str().context("no id")?.to_string();

    wait_for("the counter to handle it", async || {
        Ok(s.counted.load(Ordering::SeqCst) == 1)
    })
    .await?;

    // The event as stored, with the timestamp the response gave.
    let recent = get(s.addr, "/api/v1/events/recent?limit=5", Some(READER))
        .await?
        .json()?;
    assert_eq!(recent[0]["id"], id.as_str());
    assert_eq!(recent[0]["timestamp"], published["timestamp"]);
    assert_eq!(recent[0]["correlation_id"], "req-1");
    assert_eq!(recent[0]["metadata"]["publisher_source"], "user_service");

    // A custom type is accepted and listed in /types beside the 20 standard ones.
    let custom = json!({"event_type": "billing.invoice_paid", "payload": {"invoice": "i-1"}, "source": "billing"});
    assert_eq!(
        post(s.addr, "/api/v1/events/publish", ADMIN, &custom)
            .await?
            .status,
        200
    );
    let types = get(s.addr, "/api/v1/events/types", Some(READER))
        .await?
        .json()?;
    let types: Vec<&str> = types
        .as_array()
        .context("not a list")?
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(types.len(), 21, "{types:?}");
    assert!(types.contains(&"opportunity.created") && types.contains(&"billing.invoice_paid"));

    let stats = get(s.addr, "/api/v1/events/stats", Some(READER))
        .await?
        .json()?;
    assert_eq!(stats["backend"], "memory");
    assert_eq!(stats["total_events"], 2);
    assert_eq!(stats["handlers"]["counter"]["processed"], 1);
    assert_eq!(stats["handlers"]["counter"]["origin"], "custom");
    assert_eq!(stats["config"]["EVENT_BUS_TYPE"], "memory");
    assert!(
        stats["registered_handlers"]
            .as_array()
            .is_some_and(|h| h.len() == 2)
    );

    let health = get(s.addr, "/api/v1/events/health", Some(READER)).await?;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()?["status"], "healthy");

    // /recent is newest first across types, and limited.
    for n in 0..6 {
        let event = if n % 2 == 0 {
            user_registered(100 + n)
        } else {
            json!({"event_type": "system.health_check", "payload": {"component": format!("c{n}"), "status": "healthy"}, "source": "system"})
        };
        assert_eq!(
            post(s.addr, "/api/v1/events/publish", ADMIN, &event)
                .await?
                .status,
            200
        );
    }
    let recent = get(
        s.addr,
        "/api/v1/events/recent?limit=4&hours=1",
        Some(READER),
    )
    .await?
    .json()?;
    let recent = recent.as_array().context("not a list")?;
    assert_eq!(recent.len(), 4);
    let stamps: Vec<&str> = recent
        .iter()
        .filter_map(|e| e["timestamp"].as_str())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{stamps:?}");
    assert_eq!(recent[0]["payload"]["component"], "c5");
    assert_eq!(recent[1]["payload"]["user_id"], "u-104");
    let only = get(
        s.addr,
        "/api/v1/events/recent?event_type=system.health_check",
        Some(READER),
    )
    .await?
    .json()?;
    assert_eq!(only.as_array().map(Vec::len), Some(3));
    for bad in [
        "limit=0",
        "limit=501",
        "hours=169",
        "limit=abc",
        "event_type=EventType.USER_REGISTERED",
    ] {
        let r = get(
            s.addr,
            &format!("/api/v1/events/recent?{bad}"),
            Some(READER),
        )
        .await?;
        assert_eq!(r.status, 400, "{bad}");
        r.error_code()?;
    }

    // DELETE really unsubscribes: later events do not reach the handler.
    wait_for("the counter to catch up", async || {
        Ok(s.counted.load(Ordering::SeqCst) == 4)
    })
    .await?;
    let r = call(
        s.addr,
        "DELETE",
        "/api/v1/events/handlers/counter",
        Some(ADMIN),
        None,
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["remaining_handlers"], json!(["flaky"]));
    assert!(!s.manager.is_subscribed("counter"));
    let r = call(
        s.addr,
        "DELETE",
        "/api/v1/events/handlers/counter",
        Some(ADMIN),
        None,
    )
    .await?;
    assert_eq!((r.status, r.error_code()?.as_str()), (404, "not_found"));
    assert_eq!(
        post(s.addr, "/api/v1/events/publish", ADMIN, &user_registered(9))
            .await?
            .status,
        200
    );
    // The flaky handler still runs: publish to it and wait for its dead letter, then check
    // the removed handler saw nothing more.
    alert_dead_lettered(s.addr, "flaky").await?;
    assert_eq!(s.counted.load(Ordering::SeqCst), 4);
    Ok(())
}

#[tokio::test]
async fn replay_is_paged_not_refused() -> anyhow::Result<()> {
    let s = start_server(10).await?;
    let from =
        event_core::timestamp::format(time::OffsetDateTime::now_utc() - time::Duration::minutes(1));
    let mut published = Vec::new();
    for n in 0..25 {
        let r = post(s.addr, "/api/v1/events/publish", ADMIN, &user_registered(n)).await?;
        published.push(r.json()?["event_id"].as_str().context("no id")?.to_string());
    }
    // Another type, not asked for.
    let other = json!({"event_type": "system.health_check", "payload": {"component": "db"}, "source": "system"});
    post(s.addr, "/api/v1/events/publish", ADMIN, &other).await?;

    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let body = json!({"event_type": "user.registered", "from_timestamp": from, "limit": 5000, "cursor": cursor});
        let r = post(s.addr, "/api/v1/events/replay", ADMIN, &body).await?;
        assert_eq!(r.status, 200);
        let page = r.json()?;
        pages += 1;
        let events = page["events"].as_array().context("no events")?;
        assert!(events.len() <= 10);
        assert_eq!(page["count"], events.len());
        seen.extend(
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string)),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
        ensure!(pages < 10, "too many pages");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, published, "every event once, in publish order");

    // A window: to_timestamp before everything gives nothing; a small limit gives one page.
    let body =
        json!({"event_type": "user.registered", "from_timestamp": from, "to_timestamp": from});
    let page = post(s.addr, "/api/v1/events/replay", ADMIN, &body)
        .await?
        .json()?;
    assert_eq!(page["count"], 0);
    let body = json!({"event_types": ["user.registered", "system.health_check"], "from_timestamp": from, "limit": 3});
    let page = post(s.addr, "/api/v1/events/replay", ADMIN, &body)
        .await?
        .json()?;
    assert_eq!(page["count"], 3);
    assert!(page["next_cursor"].is_string());
    Ok(())
}

#[tokio::test]
async fn dead_letters_redrive_views_schema_and_metrics() -> anyhow::Result<()> {
    let s = start_server(1000).await?;
    alert_dead_lettered(s.addr, "flaky").await?;
    let dl = get(
        s.addr,
        "/api/v1/events/dead-letters?handler=flaky&limit=10",
        Some(READER),
    )
    .await?
    .json()?;
    let letter = &dl["dead_letters"][0];
    assert_eq!(letter["handler"], "flaky");
    assert_eq!(letter["reason"], "permanent_failure");
    assert_eq!(letter["last_error"], "cannot page anyone");
    let r = get(
        s.addr,
        "/api/v1/events/dead-letters?handler=nobody",
        Some(READER),
    )
    .await?;
    assert_eq!(r.status, 404);

    // Redrive needs ids or all; the handler now works, so the redriven event succeeds.
    let r = post(
        s.addr,
        "/api/v1/events/dead-letters/redrive",
        ADMIN,
        &json!({"handler": "flaky"}),
    )
    .await?;
    assert_eq!(r.status, 400);
    s.flaky_fails.store(false, Ordering::SeqCst);
    let r = post(
        s.addr,
        "/api/v1/events/dead-letters/redrive",
        ADMIN,
        &json!({"handler": "flaky", "all": true}),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["redriven"], 1);
    wait_for("the redriven event to be handled", async || {
        let stats = get(s.addr, "/api/v1/events/stats", Some(READER))
            .await?
            .json()?;
        Ok(stats["handlers"]["flaky"]["processed"] == 1)
    })
    .await?;
    let dl = get(
        s.addr,
        "/api/v1/events/dead-letters?handler=flaky",
        Some(READER),
    )
    .await?
    .json()?;
    assert_eq!(dl["count"], 0);

    // Purge: the same selection; a failing handler's new dead letter is deleted, not handled.
    s.flaky_fails.store(true, Ordering::SeqCst);
    alert_dead_lettered(s.addr, "flaky").await?;
    const PURGE: &str = "/api/v1/events/dead-letters/purge";
    assert_eq!(
        post(
            s.addr,
            PURGE,
            ADMIN,
            &json!({"handler": "flaky", "ids": []})
        )
        .await?
        .status,
        400
    );
    let r = post(
        s.addr,
        PURGE,
        ADMIN,
        &json!({"handler": "flaky", "all": true}),
    )
    .await?;
    assert_eq!((r.status, r.json()?["purged"].clone()), (200, json!(1)));
    let dl = get(
        s.addr,
        "/api/v1/events/dead-letters?handler=flaky",
        Some(READER),
    )
    .await?
    .json()?;
    assert_eq!(dl["count"], 0);

    // The catalog: every typed event with its schema.
    let schema = get(s.addr, "/api/v1/events/schema", Some(READER))
        .await?
        .json()?;
    let entries = schema.as_array().context("not a list")?;
    assert_eq!(entries.len(), 21);
    let created = entries
        .iter()
        .find(|e| e["event_type"] == "opportunity.created")
        .context("no opportunity.created")?;
    assert_eq!(created["partition_key"], "opportunity_id");
    assert!(
        created["schema"]["properties"]["title"].is_object(),
        "{created}"
    );

    // Views: these custom handlers keep none.
    assert_eq!(
        get(s.addr, "/api/v1/events/views", Some(READER))
            .await?
            .json()?,
        json!([])
    );
    let r = get(s.addr, "/api/v1/events/views/flaky", Some(READER)).await?;
    assert_eq!((r.status, r.error_code()?.as_str()), (404, "not_found"));

    let metrics = get(s.addr, "/metrics", Some(READER)).await?;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body)?;
    assert!(text.contains("eventbus_up 1"), "{text}");
    assert!(
        text.contains("eventbus_handler_lag{handler=\"flaky\"}"),
        "{text}"
    );
    assert!(text.contains("eventbus_http_requests_total"), "{text}");
    // The consumer's state, for the alerting rules (docker/prometheus/); the values are the
    // process's, which other tests' scrapes also set, so only the series are checked.
    for gauge in ["eventbus_handler_alive", "eventbus_handler_stalled"] {
        assert!(
            text.contains(&format!("{gauge}{{handler=\"flaky\"}}")),
            "{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_json_4xx_and_leaves_the_bus_unharmed() -> anyhow::Result<()> {
    let s = start_server(1000).await?;
    let publish = "/api/v1/events/publish";
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"event_type\": ".to_vec(),
            400,
        ),
        (
            "not JSON at all",
            "application/json",
            b"hello".to_vec(),
            400,
        ),
        (
            "no content type",
            "",
            serde_json::to_vec(&user_registered(1))?,
            415,
        ),
        (
            "missing source",
            "application/json",
            br#"{"event_type":"user.registered","payload":{}}"#.to_vec(),
            422,
        ),
        (
            "enum-style type",
            "application/json",
            br#"{"event_type":"EventType.USER_REGISTERED","payload":{},"source":"s"}"#.to_vec(),
            400,
        ),
        (
            "unknown type",
            "application/json",
            br#"{"event_type":"Not A Type","payload":{},"source":"s"}"#.to_vec(),
            400,
        ),
        (
            "array payload",
            "application/json",
            br#"{"event_type":"user.registered","payload":[1],"source":"s"}"#.to_vec(),
            400,
        ),
        (
            "empty source",
            "application/json",
            br#"{"event_type":"user.registered","payload":{},"source":" "}"#.to_vec(),
            400,
        ),
        (
            "event over EVENT_MAX_PAYLOAD_BYTES",
            "application/json",
            serde_json::to_vec(
                &json!({"event_type":"billing.blob","payload":{"blob":"x".repeat(10_000)},"source":"s"}),
            )?,
            413,
        ),
        (
            "a typed payload without its email",
            "application/json",
            br#"{"event_type":"user.registered","payload":{"user_id":"u-1"},"source":"s"}"#.to_vec(),
            400,
        ),
        (
            "a confidence out of range",
            "application/json",
            br#"{"event_type":"signal.detected","payload":{"signal_id":"s-1","source":"reddit","signal_type":"pain_point","content":"c","confidence":7.5},"source":"s"}"#.to_vec(),
            400,
        ),
        (
            "body over the limit",
            "application/json",
            serde_json::to_vec(
                &json!({"event_type":"user.registered","payload":{"blob":"x".repeat(200_000)},"source":"s"}),
            )?,
            413,
        ),
    ];
    for (what, content_type, body, status) in cases {
        let r = call(
            s.addr,
            "POST",
            publish,
            Some(ADMIN),
            Some((content_type, &body)),
        )
        .await?;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let code = r.error_code().with_context(|| what.to_string())?;
        let text = String::from_utf8_lossy(&r.body).to_string();
        for internal in ["src/", "panicked", "Backtrace", "memory backend error"] {
            assert!(!text.contains(internal), "{what} leaks {internal}: {text}");
        }
        if what == "enum-style type" || what == "unknown type" {
            assert_eq!(code, "invalid_event_type", "{what}");
        }
        if what.starts_with("a typed") || what.starts_with("a confidence") {
            assert_eq!(code, "invalid_payload", "{what}");
            let field = if what.starts_with("a typed") {
                "`email`"
            } else {
                "`confidence`"
            };
            assert!(text.contains(field), "{what}: {text}");
        }
    }
    let replay = "/api/v1/events/replay";
    for (what, body) in [
        (
            "bad from",
            json!({"event_type":"user.registered","from_timestamp":"yesterday"}),
        ),
        (
            "bad to",
            json!({"event_type":"user.registered","from_timestamp":"2026-01-01T00:00:00Z","to_timestamp":"2026-13-01T00:00:00Z"}),
        ),
        (
            "window ends before it starts",
            json!({"event_type":"user.registered","from_timestamp":"2026-01-02T00:00:00Z","to_timestamp":"2026-01-01T00:00:00Z"}),
        ),
        (
            "zero limit",
            json!({"event_type":"user.registered","from_timestamp":"2026-01-01T00:00:00Z","limit":0}),
        ),
        (
            "bad cursor",
            json!({"event_type":"user.registered","from_timestamp":"2026-01-01T00:00:00Z","cursor":"page-2"}),
        ),
        (
            "unknown type",
            json!({"event_type":"EventType.USER_REGISTERED","from_timestamp":"2026-01-01T00:00:00Z"}),
        ),
    ] {
        let r = post(s.addr, replay, ADMIN, &body).await?;
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.error_code()?;
    }
    // Nothing was published, the bus is healthy and still works.
    let stats = get(s.addr, "/api/v1/events/stats", Some(READER))
        .await?
        .json()?;
    assert_eq!(stats["total_events"], 0);
    assert_eq!(
        get(s.addr, "/api/v1/events/health", Some(READER))
            .await?
            .json()?["status"],
        "healthy"
    );
    assert_eq!(
        post(s.addr, publish, ADMIN, &user_registered(7))
            .await?
            .status,
        200
    );
    wait_for("the event after the bad ones", async || {
        Ok(s.counted.load(Ordering::SeqCst) == 1)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn rates_concurrency_and_deadlines_are_bounded() -> anyhow::Result<()> {
    let s = start_server_with(|api| {
        api.limits.rate_per_token = 5;
        api.limits.max_concurrent = 1;
        api.limits.timeout = Duration::from_secs(5);
    })
    .await?;
    // A token may make a burst of twice its rate, then gets 429 with Retry-After; the other
    // token has a bucket of its own.
    let mut statuses = Vec::new();
    // Refills add a request every 200 ms: 400 requests cannot all find one.
    while statuses.len() < 400 {
        let r = get(s.addr, "/api/v1/events/types", Some(READER)).await?;
        let limited = r.status == 429;
        statuses.push(r);
        if limited {
            break;
        }
    }
    ensure!(
        statuses.len() > 10
            && statuses[..10].iter().all(|r| r.status == 200)
            && statuses.last().is_some_and(|r| r.status == 429),
        "expected at least 10 answers, then 429: {:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let refused = statuses
        .iter()
        .find(|r| r.status == 429)
        .context("no 429")?;
    assert_eq!(refused.error_code()?, "rate_limited");
    ensure!(
        refused
            .header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1)),
        "no Retry-After on a 429"
    );
    assert_eq!(
        get(s.addr, "/api/v1/events/types", Some(ADMIN))
            .await?
            .status,
        200
    );

    // A publish whose body never comes holds the one slot: the next request is refused at
    // once with 503 `overloaded`, and the stalled one is stopped at the deadline.
    let mut stalled = TcpStream::connect(s.addr).await?;
    stalled
        .write_all(
            format!(
                "POST /api/v1/events/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{",
                s.addr
            )
            .as_bytes(),
        )
        .await?;
    let mut overloaded = None;
    wait_for("a request refused while the slot is held", async || {
        let r = get(s.addr, "/api/v1/events/health", Some(ADMIN)).await?;
        let refused = r.status == 503;
        if refused {
            overloaded = Some(r);
        }
        Ok(refused)
    })
    .await?;
    let overloaded = overloaded.context("no refusal kept")?;
    assert_eq!(overloaded.error_code()?, "overloaded");
    assert_eq!(overloaded.header("retry-after"), Some("1"));
    let mut raw = Vec::new();
    stalled.read_to_end(&mut raw).await?;
    let stopped = parse(&raw)?;
    assert_eq!(
        (stopped.status, stopped.error_code()?.as_str()),
        (503, "timeout")
    );
    // The slot is free again (the admin token may be over its rate by now: 429 is fine).
    let after = get(s.addr, "/api/v1/events/health", Some(ADMIN)).await?;
    ensure!(after.status != 503, "still refused: {}", after.status);
    Ok(())
}

/// The `eventbus_http_*` series of a `/metrics` text: the line up to its value.
fn http_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("eventbus_http_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

#[tokio::test]
async fn a_flood_of_junk_requests_adds_no_metric_series() -> anyhow::Result<()> {
    // No rate limit here: the flood is hundreds of requests with the read token.
    let s = start_server_with(|api| api.limits.rate_per_token = 0).await?;
    // The routes a series may name, and the methods.
    let routes = [
        "stats",
        "types",
        "health",
        "recent",
        "dead-letters",
        "views",
        "views/{handler}",
        "schema",
        "publish",
        "replay",
        "handlers/{name}",
        "dead-letters/redrive",
        "dead-letters/purge",
        "/metrics",
        "other",
    ];
    let methods = ["GET", "POST", "DELETE", "other"];
    // Some legitimate traffic first, so there are series to check.
    get(s.addr, "/api/v1/events/stats", Some(READER)).await?;

    // 600 junk requests: made-up methods, unknown paths (some with a valid token), bad and
    // missing tokens, and a read token on admin routes.
    for n in 0..600 {
        let junk_token = format!("junk-token-{n:020}");
        let (method, path, token): (String, String, Option<&str>) = match n % 6 {
            0 => (format!("M{n}"), "/api/v1/events/stats".into(), None),
            1 => ("GET".into(), format!("/api/v1/events/x{n}"), Some(READER)),
            2 => (format!("X{n}"), format!("/junk/{n}"), Some(&junk_token)),
            3 => ("GET".into(), "/metrics".into(), Some(&junk_token)),
            4 => (
                format!("P{n}"),
                "/api/v1/events/publish".into(),
                Some(READER),
            ),
            _ => (
                "DELETE".into(),
                format!("/api/v1/events/handlers/h{n}"),
                Some(READER),
            ),
        };
        let r = call(s.addr, &method, &path, token, None).await?;
        ensure!(
            (400..500).contains(&r.status),
            "{method} {path}: expected a 4xx, got {}",
            r.status
        );
    }

    let after = http_series(&String::from_utf8(
        get(s.addr, "/metrics", Some(READER)).await?.body,
    )?);
    ensure!(
        after
            .iter()
            .any(|l| l.contains("endpoint=\"stats\"") && l.contains("status=\"200\""))
            && after.contains(&"eventbus_http_unauthorized_total".to_string()),
        "the counters are missing, so the check below would prove nothing: {after:?}"
    );
    for series in &after {
        let Some(labels) = series
            .strip_prefix("eventbus_http_requests_total{")
            .and_then(|l| l.strip_suffix('}'))
        else {
            ensure!(
                series == "eventbus_http_unauthorized_total",
                "an unexpected HTTP series: {series}"
            );
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        ensure!(methods.contains(&label("method").as_str()), "{series}");
        ensure!(routes.contains(&label("endpoint").as_str()), "{series}");
    }
    // Other tests of this binary run meanwhile and may add series of their own, but only of
    // the closed sets checked above: the junk requests made none.
    ensure!(
        !after
            .iter()
            .any(|l| l.contains("junk") || l.contains("\"M1\"") || l.contains("/x1")),
        "{after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn no_tokens_means_no_access_and_a_stopped_bus_is_503() -> anyhow::Result<()> {
    let config = Settings::default();
    let manager = Arc::new(EventBusManager::builder(config.clone()).build()?);
    let app = router(
        manager.clone(),
        ApiConfig::new(&config.bus, ApiTokens::none()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));
    let r = get(
        addr,
        "/api/v1/events/stats",
        Some("anything-long-enough-123"),
    )
    .await?;
    assert_eq!(r.status, 401);

    let tokens = ApiTokens::none().with(Role::Read, READER);
    let app = router(manager, ApiConfig::new(&config.bus, tokens));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));
    let r = get(addr, "/api/v1/events/stats", Some(READER)).await?;
    assert_eq!((r.status, r.error_code()?.as_str()), (503, "unavailable"));
    let r = get(addr, "/api/v1/events/health", Some(READER)).await?;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()?["status"], "unhealthy");
    Ok(())
}

#[tokio::test]
async fn views_of_the_domain_handlers() -> anyhow::Result<()> {
    let config = Settings::from_vars([("ENABLED_EVENT_HANDLERS", "opportunity,user")])?;
    let manager = Arc::new(EventBusManager::builder(config.clone()).build()?);
    manager.start().await?;
    let tokens = ApiTokens::none().with(Role::Admin, ADMIN);
    let app = router(manager.clone(), ApiConfig::new(&config.bus, tokens));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));

    assert_eq!(
        get(addr, "/api/v1/events/views", Some(ADMIN))
            .await?
            .json()?,
        json!(["opportunity", "user"])
    );
    let created = json!({
        "event_type": "opportunity.created",
        "payload": {"opportunity_id": "opp-123", "title": "AI-Powered Customer Service",
                    "description": "Automated customer support using NLP", "ai_solution_type": "nlp"},
        "source": "opportunity_service",
    });
    assert_eq!(
        post(addr, "/api/v1/events/publish", ADMIN, &created)
            .await?
            .status,
        200
    );
    wait_for("the catalogue view", async || {
        let view = get(addr, "/api/v1/events/views/opportunity", Some(ADMIN))
            .await?
            .json()?;
        Ok(view["snapshot"]["opportunities"]["opp-123"]["title"] == "AI-Powered Customer Service")
    })
    .await?;
    let stats = get(addr, "/api/v1/events/stats", Some(ADMIN))
        .await?
        .json()?;
    assert_eq!(stats["handlers"]["opportunity"]["origin"], "domain");
    assert_eq!(stats["handlers"]["opportunity"]["has_view"], true);
    // The domain handlers run inside event-handlers' metrics layer: /metrics shows them.
    let metrics = String::from_utf8(get(addr, "/metrics", Some(ADMIN)).await?.body)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eventbus_handler_events_handled_total")
                && l.contains("handler=\"opportunity\"")
                && l.contains("event_type=\"opportunity.created\"")),
        "{metrics}"
    );
    // Removing a domain handler removes its view too.
    let r = call(
        addr,
        "DELETE",
        "/api/v1/events/handlers/user",
        Some(ADMIN),
        None,
    )
    .await?;
    assert_eq!(r.status, 200);
    let r = get(addr, "/api/v1/events/views/user", Some(ADMIN)).await?;
    assert_eq!(r.status, 404);
    manager.stop().await?;
    Ok(())
}

/// The API over a Redis or Kafka bus: publish, paged replay, recent, stats, health, a dead
/// letter and its redrive.
async fn api_on(config: Settings) -> anyhow::Result<()> {
    let backend = config.bus_type.to_string();
    let fails = Arc::new(AtomicBool::new(true));
    let manager = Arc::new(
        EventBusManager::builder(config.clone())
            .handler(
                SubscriptionSpec::new("alerting", [EventType::AGENT_ERROR]),
                flaky::failing_while("alerting", &fails, "pager down"),
            )
            .build()?,
    );
    manager.start().await?;
    let tokens = ApiTokens::none().with(Role::Admin, ADMIN);
    let mut api = ApiConfig::new(&config.bus, tokens);
    api.max_page = 2;
    let app = router(manager.clone(), api);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));

    let from =
        event_core::timestamp::format(time::OffsetDateTime::now_utc() - time::Duration::minutes(1));
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = post(addr, "/api/v1/events/publish", ADMIN, &user_registered(n)).await?;
        assert_eq!(r.status, 200, "{backend}");
        ids.push(r.json()?["event_id"].as_str().context("no id")?.to_string());
    }
    // Paged replay: 3 events in pages of 2.
    let body = json!({"event_type": "user.registered", "from_timestamp": from, "limit": 10});
    let first = post(addr, "/api/v1/events/replay", ADMIN, &body)
        .await?
        .json()?;
    assert_eq!(first["count"], 2, "{backend}: {first}");
    let body = json!({"event_type": "user.registered", "from_timestamp": from, "limit": 10, "cursor": first["next_cursor"]});
    let second = post(addr, "/api/v1/events/replay", ADMIN, &body)
        .await?
        .json()?;
    assert_eq!(second["count"], 1, "{backend}: {second}");
    assert!(second["next_cursor"].is_null());
    let replayed: Vec<&str> = first["events"]
        .as_array()
        .into_iter()
        .chain(second["events"].as_array())
        .flatten()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(replayed, ids, "{backend}");
    // Recent: newest first.
    let recent = get(
        addr,
        "/api/v1/events/recent?event_type=user.registered&limit=2",
        Some(ADMIN),
    )
    .await?
    .json()?;
    assert_eq!(recent[0]["id"], ids[2].as_str(), "{backend}");
    assert_eq!(recent[1]["id"], ids[1].as_str(), "{backend}");
    // Stats and health work on this backend (the original's were Redis-only, and broken on Kafka).
    let stats = get(addr, "/api/v1/events/stats", Some(ADMIN))
        .await?
        .json()?;
    assert_eq!(stats["backend"], backend.as_str());
    assert_eq!(
        stats["events_by_type"]["user.registered"], 3,
        "{backend}: {stats}"
    );
    let health = get(addr, "/api/v1/events/health", Some(ADMIN)).await?;
    assert_eq!(health.status, 200, "{backend}");
    assert!(health.json()?["round_trip_ms"].is_number(), "{backend}");
    // A dead letter, listed and redriven.
    alert_dead_lettered(addr, "alerting").await?;
    fails.store(false, Ordering::SeqCst);
    let r = post(
        addr,
        "/api/v1/events/dead-letters/redrive",
        ADMIN,
        &json!({"handler": "alerting", "all": true}),
    )
    .await?;
    assert_eq!(r.json()?["redriven"], 1, "{backend}");
    wait_for("the redriven event", async || {
        let stats = get(addr, "/api/v1/events/stats", Some(ADMIN))
            .await?
            .json()?;
        Ok(stats["handlers"]["alerting"]["processed"] == 1)
    })
    .await?;
    manager.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_api_on_redis() -> anyhow::Result<()> {
    let Some(url) = event_testkit::test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("manager-http");
    api_on(Settings::from_vars([
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("ENABLE_EVENT_HANDLERS", "false"),
        ("EVENT_MAX_RETRIES", "0"),
    ])?)
    .await
}

#[tokio::test]
async fn the_api_on_kafka() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("manager-http");
    api_on(Settings::from_vars([
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("ENABLE_EVENT_HANDLERS", "false"),
        ("EVENT_MAX_RETRIES", "0"),
    ])?)
    .await
}
