//! The audit trail in a Redis stream, against a real `redis-server`
//! (`EVENTBUS_TEST_REDIS_URL`, set by `cargo xtask test`).

#![cfg(feature = "redis")]

mod common;

use anyhow::Context as _;
use common::{Harness, settled};
use event_core::Event;
use event_handlers::{AuditSettings, DomainContext, DomainHandlerKind};
use event_publishers::{
    SystemEventPublisher, SystemHealthCheck, UserEventPublisher, UserRegistered,
};
use event_testkit::test_server;
use fred::prelude::{Builder, ClientLike, KeysInterface, StreamsInterface};
use fred::types::streams::XReadValue;

#[tokio::test]
async fn every_event_becomes_one_stream_entry() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let stream = format!("test:audit:{}", event_core::EventId::new());
    let settings = AuditSettings::redis_stream(url.clone(), stream.clone(), 10_000);
    let harness = Harness::start(&[DomainHandlerKind::Audit], |bus| {
        DomainContext::new(bus).with_audit(settings)
    })
    .await?;
    let bus = harness.bus.clone();
    let mut ids = Vec::new();
    let users = UserEventPublisher::new(bus.clone());
    let system = SystemEventPublisher::new(bus.clone());
    for i in 0..20 {
        ids.push(
            users
                .user_registered(UserRegistered {
                    user_id: format!("u-{i}"),
                    email: format!("u{i}@example.com"),
                    ..Default::default()
                })
                .await?,
        );
        ids.push(
            system
                .health_check(SystemHealthCheck {
                    component: "db".into(),
                    status: "healthy".into(),
                    ..Default::default()
                })
                .await?,
        );
    }
    settled(&bus, "audit", 40).await?;
    let snapshot = harness.handler(DomainHandlerKind::Audit).view.snapshot();
    assert_eq!(snapshot["sink"], "redis_stream", "{snapshot:#}");
    assert_eq!(snapshot["entries_written"], 40);

    let client = Builder::from_config(fred::types::config::Config::from_url(&url)?).build()?;
    client.init().await?;
    let len: u64 = client.xlen(&stream).await?;
    assert_eq!(len, 40);
    let entries: Vec<XReadValue<String, String, String>> =
        client.xrange(&stream, "-", "+", None).await?;
    let mut audited = Vec::new();
    for (_entry_id, fields) in entries {
        let event: Event = serde_json::from_str(fields.get("event").context("event field")?)?;
        assert_eq!(fields.get("id"), Some(&event.id.to_string()));
        assert_eq!(
            fields.get("type").map(String::as_str),
            Some(event.event_type.as_str())
        );
        assert!(fields.contains_key("audited_at"));
        audited.push(event.id);
    }
    audited.sort();
    ids.sort();
    assert_eq!(audited, ids);
    client.del::<i64, _>(&stream).await?;
    client.quit().await?;
    harness.stop().await
}

#[tokio::test]
async fn an_unreachable_server_fails_events_as_transient_and_keeps_them() -> anyhow::Result<()> {
    // A port nothing listens on: the event is retried, then dead-lettered, never dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let settings = AuditSettings::redis_stream(format!("redis://127.0.0.1:{port}/0"), "audit", 10);
    let harness = Harness::start(&[DomainHandlerKind::Audit], |bus| {
        DomainContext::new(bus).with_audit(settings)
    })
    .await?;
    let bus = harness.bus.clone();
    SystemEventPublisher::new(bus.clone())
        .health_check(SystemHealthCheck {
            component: "db".into(),
            status: "healthy".into(),
            ..Default::default()
        })
        .await?;
    settled(&bus, "audit", 1).await?;
    let dead = bus.dead_letters("audit", 10).await?;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].attempts > 1, "transient: retried first");
    assert!(
        dead[0].last_error.contains("127.0.0.1"),
        "{}",
        dead[0].last_error
    );
    harness.stop().await
}
