//! The HTTP API fed generated input over real TCP: JSON bodies for every `POST` endpoint
//! (the fields each one reads, with values of every type and size, plus unknown fields and
//! bodies that are not JSON; and valid bodies with a few fields dropped or changed, so that
//! the handlers behind the extractors are reached too), query strings for every `GET`
//! endpoint (known and unknown keys, huge and negative numbers, percent-encoded junk,
//! repeated keys) and path parameters (`/views/{handler}`, `DELETE /handlers/{name}`:
//! percent-encoded junk, dots, very long names). Every answer is a well-formed HTTP response
//! below 500 (503 is allowed: the API's own limits), a 4xx has a JSON error body, and the
//! server still answers once the run is over.

mod fuzz_runner;
mod http_client;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};
use event_manager::{EventBusManager, Settings};
use fuzz_runner::run;
use http_client::{Reply, exchange};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};

const ADMIN: &str = "admin-token-fuzz-0123456789abcdef";
const READER: &str = "read-token-fuzz-0123456789abcdef";

/// The fields the `POST` endpoints read, and a few they do not.
const FIELDS: [&str; 16] = [
    "event_type",
    "event_types",
    "payload",
    "source",
    "correlation_id",
    "causation_id",
    "partition_key",
    "metadata",
    "from_timestamp",
    "to_timestamp",
    "limit",
    "cursor",
    "handler",
    "ids",
    "all",
    "unknown",
];

const POSTS: [&str; 4] = [
    "/api/v1/events/publish",
    "/api/v1/events/replay",
    "/api/v1/events/dead-letters/redrive",
    "/api/v1/events/dead-letters/purge",
];

const GETS: [&str; 8] = [
    "/api/v1/events/stats",
    "/api/v1/events/types",
    "/api/v1/events/health",
    "/api/v1/events/recent",
    "/api/v1/events/dead-letters",
    "/api/v1/events/views",
    "/api/v1/events/views/audit",
    "/api/v1/events/schema",
];

const QUERY_KEYS: [&str; 7] = ["event_type", "limit", "hours", "handler", "cursor", "x", ""];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::String),
        "(user|opportunity|agent|system)\\.[a-z_]{1,12}".prop_map(Value::String),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: an object of known and unknown fields, or any JSON, or bytes that are not JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let object =
        prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), json_value(), 0..8)
            .prop_map(|m| {
                let map: Map<String, Value> =
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                serde_json::to_vec(&Value::Object(map)).expect("serializable")
            });
    prop_oneof![
        6 => object,
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("serializable")),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A valid body of the `POST` endpoint at `path`.
fn valid(path: &str) -> Map<String, Value> {
    let body = match path {
        "/api/v1/events/publish" => json!({
            "event_type": "user.registered",
            "payload": {"user_id": "u-1", "email": "u1@example.com"},
            "source": "fuzz",
            "partition_key": "u-1",
        }),
        "/api/v1/events/replay" => json!({"from_timestamp": "2020-01-01T00:00:00Z", "limit": 10}),
        _ => json!({"handler": "audit", "all": true}),
    };
    match body {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// A `POST` endpoint and a body near its valid one: some fields dropped or given generated
/// values (replay pages walked with made-up cursors, publishes of odd payloads).
fn near_valid() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    (
        prop::sample::select(POSTS.to_vec()),
        prop::collection::vec(
            (
                prop::sample::select(FIELDS.to_vec()),
                proptest::option::of(json_value()),
            ),
            0..3,
        ),
    )
        .prop_map(|(path, changes)| {
            let mut body = valid(path);
            for (field, value) in changes {
                match value {
                    Some(value) => body.insert(field.to_string(), value),
                    None => body.remove(field),
                };
            }
            let bytes = serde_json::to_vec(&Value::Object(body)).expect("serializable");
            (path, bytes)
        })
}

/// A query string: keys known or not, values of every kind, some percent-encoded junk.
fn query() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "-?[0-9]{1,30}",
        "[a-z._]{0,20}",
        "(%[0-9A-Fa-f]{2}){1,10}",
        "%[G-Zg-z]{0,2}",
        "[!$&'()*+,;=:@/?]{0,10}",
    ];
    prop::collection::vec((prop::sample::select(QUERY_KEYS.to_vec()), value), 0..6).prop_map(
        |pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        },
    )
}

/// The endpoints with a path parameter: method, the path before the parameter, token.
const PARAMS: [(&str, &str, &str); 2] = [
    ("GET", "/api/v1/events/views/", READER),
    ("DELETE", "/api/v1/events/handlers/", ADMIN),
];

/// A path parameter: words, percent-encoded junk (invalid UTF-8 once decoded too), dots,
/// very long, reserved characters.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.-]{1,30}",
        "(%[0-9A-Fa-f]{2}){1,12}",
        "%[G-Zg-z]{0,2}[a-z]{0,4}",
        "\\.{1,3}",
        "[a-z]{200,3000}",
        "[!$&'()*+,;=:@]{1,10}",
    ]
}

/// The checks every answer must pass.
fn well_formed(what: &str, reply: &Reply) -> Result<(), TestCaseError> {
    prop_assert!(
        reply.status < 500 || reply.status == 503,
        "{what}: status {} ({})",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    if (400..500).contains(&reply.status) {
        let error = reply.error_code().map_err(|e| {
            TestCaseError::fail(format!(
                "{what}: {} without a JSON error: {e}",
                reply.status
            ))
        })?;
        prop_assert!(!error.is_empty(), "{what}");
    }
    Ok(())
}

async fn start() -> anyhow::Result<(
    SocketAddr,
    Arc<EventBusManager>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let mut settings = Settings::default();
    settings.enable_event_handlers = false;
    settings.bus.max_event_bytes = 4096;
    let manager = Arc::new(EventBusManager::builder(settings.clone()).build()?);
    manager.start().await?;
    let tokens = ApiTokens::none()
        .with(Role::Admin, ADMIN)
        .with(Role::Read, READER);
    let mut api = ApiConfig::new(&settings.bus, tokens);
    // The run makes thousands of requests a second with two tokens: the rate limit is not
    // what is tested here.
    api.limits.rate_per_token = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, router(manager.clone(), api), async {
        let _ = stopped.await;
    }));
    Ok((addr, manager, stop))
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&[u8]>,
) -> Result<Reply, TestCaseError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| TestCaseError::fail(format!("connecting: {e}")))?;
    exchange(
        stream,
        method,
        path,
        Some(token),
        body.map(|b| ("application/json", b)),
    )
    .await
    .map_err(|e| TestCaseError::fail(format!("{method} {path}: not an HTTP answer: {e}")))
}

#[test]
fn generated_bodies_and_queries_get_clear_answers() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (addr, manager, stop) = runtime.block_on(start())?;
    // The statuses seen, to check that the valid-looking bodies reached the handlers.
    let ok = Cell::new(0u32);
    let post = |path: &str, body: &[u8]| {
        runtime.block_on(async {
            let reply = call(addr, "POST", path, ADMIN, Some(body)).await?;
            if reply.status == 200 {
                ok.set(ok.get() + 1);
            }
            well_formed(path, &reply)
        })
    };
    run(
        "POST bodies",
        600,
        &(prop::sample::select(POSTS.to_vec()), body()),
        |(path, body)| post(path, &body),
    )?;
    run(
        "near-valid POST bodies",
        600,
        &near_valid(),
        |(path, body)| post(path, &body),
    )?;
    anyhow::ensure!(
        ok.get() >= 50,
        "only {} generated bodies were accepted: the fuzz no longer reaches the handlers",
        ok.get()
    );
    run(
        "GET queries",
        800,
        &(prop::sample::select(GETS.to_vec()), query()),
        |(path, query)| {
            runtime.block_on(async {
                let path = format!("{path}?{query}");
                let reply = call(addr, "GET", &path, READER, None).await?;
                well_formed(&path, &reply)
            })
        },
    )?;
    run(
        "path parameters",
        400,
        &(prop::sample::select(PARAMS.to_vec()), segment(), query()),
        |((method, prefix, token), segment, query)| {
            runtime.block_on(async {
                let path = format!("{prefix}{segment}?{query}");
                let reply = call(addr, method, &path, token, None).await?;
                well_formed(&path, &reply)
            })
        },
    )?;
    runtime.block_on(async {
        let health = call(addr, "GET", "/api/v1/events/health", READER, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            health.status == 200,
            "health after the run: {}",
            health.status
        );
        let _ = stop.send(());
        manager.stop().await?;
        anyhow::Ok(())
    })
}
