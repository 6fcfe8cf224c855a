//! The API's access log (target `eventbus::api::access`), captured as an operator's log
//! collector would read it: who published, replayed, removed a handler, redrove and purged
//! dead letters (admin requests, `info`), and who read (`debug`), each with the token's
//! fingerprint, role, method, route and status; never a token, and nothing for a request
//! whose token was refused.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use event_manager::http::{ApiConfig, ApiTokens, Role, router};
use event_manager::{EventBusManager, Settings};
use serde_json::json;
use tower::ServiceExt as _;

const ADMIN: &str = "admin-token-access-log-0123456789";
const READER: &str = "read-token-access-log-0123456789";
const REFUSED: &str = "not-a-token-access-log-0123456789";

/// The log lines written, shared with the subscriber's writer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fingerprint the log shows for `token`: the first 8 hex digits of its SHA-256.
fn fingerprint(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn admin_and_read_requests_are_logged_with_fingerprints_only() -> anyhow::Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("eventbus::api::access=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The current-thread runtime of this test runs every handler on this thread.
    let _default = tracing::subscriber::set_default(subscriber);

    let mut settings = Settings::default();
    settings.enable_event_handlers = false;
    let manager = Arc::new(EventBusManager::builder(settings.clone()).build()?);
    manager.start().await?;
    let tokens = ApiTokens::none()
        .with(Role::Admin, ADMIN)
        .with(Role::Read, READER);
    let app = router(manager.clone(), ApiConfig::new(&settings.bus, tokens));
    let call = async |method: &str, path: &str, token: &str, body: serde_json::Value| {
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/v1/events{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))?;
        anyhow::Ok(app.clone().oneshot(request).await?.status())
    };
    let publish = json!({"event_type": "user.registered", "payload": {"user_id": "u-1", "email": "a@example.com", "username": "ada"}, "source": "access_test"});
    let all = json!({"handler": "nobody", "all": true});
    let from =
        json!({"event_types": ["user.registered"], "from_timestamp": "2026-01-01T00:00:00Z"});
    let admin = [
        ("POST", "/publish", publish, StatusCode::OK),
        ("POST", "/replay", from, StatusCode::OK),
        (
            "DELETE",
            "/handlers/nobody",
            json!({}),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/dead-letters/redrive",
            all.clone(),
            StatusCode::NOT_FOUND,
        ),
        ("POST", "/dead-letters/purge", all, StatusCode::NOT_FOUND),
    ];
    for (method, path, body, expected) in &admin {
        let status = call(method, path, ADMIN, body.clone()).await?;
        assert_eq!(status, *expected, "{method} {path}");
    }
    assert_eq!(
        call("GET", "/stats", READER, json!({})).await?,
        StatusCode::OK
    );
    assert_eq!(
        call("POST", "/publish", REFUSED, json!({})).await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("POST", "/publish", READER, json!({})).await?,
        StatusCode::FORBIDDEN
    );
    manager.stop().await?;

    let log = String::from_utf8(captured.0.lock().unwrap().clone())?;
    let lines: Vec<&str> = log.lines().collect();
    let admin_print = fingerprint(ADMIN);
    for (method, path, _, status) in &admin {
        let route = format!(
            "route=\"/api/v1/events{}\"",
            path.replace("nobody", "{name}")
        );
        let found = lines.iter().any(|l| {
            l.contains(" INFO ")
                && l.contains(&format!("token={admin_print}"))
                && l.contains("role=Admin")
                && l.contains(&format!("method={method}"))
                && l.contains(&route)
                && l.contains(&format!("status={}", status.as_u16()))
        });
        assert!(found, "no access line for {method} {path} in:\n{log}");
    }
    let read_print = fingerprint(READER);
    assert!(
        lines.iter().any(|l| l.contains(" DEBUG ")
            && l.contains(&format!("token={read_print}"))
            && l.contains("route=\"/api/v1/events/stats\"")
            && l.contains("status=200")),
        "no access line for the read:\n{log}"
    );
    // A read token refused an admin operation is logged as such (403), a refused token not.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("token={read_print}")) && l.contains("status=403")),
        "no access line for the forbidden publish:\n{log}"
    );
    assert!(
        !log.contains(&fingerprint(REFUSED)),
        "a refused token was logged:\n{log}"
    );
    for token in [ADMIN, READER, REFUSED] {
        assert!(!log.contains(token), "a token was logged:\n{log}");
    }
    assert_eq!(lines.len(), admin.len() + 2, "unexpected lines:\n{log}");
    Ok(())
}
