//! The manager on the in-memory bus: lifecycle, registry, stats, health, capability checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use event_core::{Event, EventType, HandlerError, HealthStatus, SubscriptionSpec, handler_fn};
use event_manager::{EventBusManager, ManagerState, Settings};

/// Waits until `condition` holds, failing after a generous deadline.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn counting(name: &str, count: Arc<AtomicU64>) -> Arc<dyn event_core::EventHandler> {
    handler_fn(name.to_string(), move |_event| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    })
}

fn event(n: u32) -> Event {
    Event::builder(EventType::USER_REGISTERED, "test")
        .field("user_id", format!("u-{n}"))
        .field("email", format!("u{n}@example.com"))
        .partition_key(format!("u-{n}"))
        .build()
        .unwrap()
}

fn memory_config() -> Settings {
    let mut config = Settings::default();
    config.enable_event_handlers = false;
    config
}

#[tokio::test]
async fn lifecycle_registry_and_stats() -> anyhow::Result<()> {
    let seen = Arc::new(AtomicU64::new(0));
    let manager = EventBusManager::builder(memory_config())
        .handler(
            SubscriptionSpec::new("counter", [EventType::USER_REGISTERED]),
            counting("counter", seen.clone()),
        )
        .build()?;
    assert!(matches!(
        manager.bus(),
        Err(event_manager::Error::NotRunning)
    ));
    assert!(matches!(
        manager.stats().await,
        Err(event_manager::Error::NotRunning)
    ));
    let health = manager.health().await;
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert_eq!(health.state, "stopped");

    manager.start().await?;
    manager.start().await?; // a second start is harmless
    assert_eq!(manager.state(), ManagerState::Running);
    assert!(manager.is_subscribed("counter"));
    let bus = manager.bus()?;
    for n in 0..20 {
        bus.publish(event(n)).await?;
    }
    wait_for("20 events handled", || seen.load(Ordering::SeqCst) == 20).await?;

    let stats = manager.stats().await?;
    assert_eq!(stats.backend, "memory");
    assert_eq!(stats.total_events, 20);
    assert_eq!(stats.registered_handlers, ["counter"]);
    let counter = &stats.handlers["counter"];
    assert_eq!(counter.origin, "custom");
    assert!(counter.subscribed);
    assert_eq!(counter.processed, 20);
    assert!(counter.events_per_second > 0.0, "{counter:?}");
    assert!(counter.last_event_at.is_some());
    assert_eq!(stats.config["EVENT_BUS_TYPE"], "memory");

    let health = manager.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(health.handlers_count, 1);

    // A handler registered while running is subscribed at once.
    let late = Arc::new(AtomicU64::new(0));
    manager
        .register_handler(
            SubscriptionSpec::new("late", [EventType::USER_REGISTERED]),
            counting("late", late.clone()),
        )
        .await?;
    let duplicate = manager
        .register_handler(
            SubscriptionSpec::new("late", [EventType::USER_REGISTERED]),
            counting("late", late.clone()),
        )
        .await;
    assert!(matches!(
        duplicate,
        Err(event_manager::Error::DuplicateHandler(_))
    ));
    bus.publish(event(100)).await?;
    wait_for("the late handler's event", || {
        late.load(Ordering::SeqCst) == 1
    })
    .await?;
    wait_for("the counter's event", || seen.load(Ordering::SeqCst) == 21).await?;

    // Removing really unsubscribes: later events do not reach it.
    manager.remove_handler("late").await?;
    assert!(!manager.is_subscribed("late"));
    assert!(matches!(
        manager.remove_handler("late").await,
        Err(event_manager::Error::UnknownHandler(_))
    ));
    bus.publish(event(101)).await?;
    wait_for("the counter's second event", || {
        seen.load(Ordering::SeqCst) == 22
    })
    .await?;
    assert_eq!(late.load(Ordering::SeqCst), 1);
    assert_eq!(manager.handler_names(), ["counter"]);

    manager.stop().await?;
    assert_eq!(manager.state(), ManagerState::Stopped);
    assert!(
        bus.publish(event(102)).await.is_err(),
        "the old bus is shut down"
    );
    assert_eq!(manager.health().await.status, HealthStatus::Unhealthy);

    // A restart builds a new bus and subscribes the application's handlers again.
    manager.start().await?;
    assert!(manager.is_subscribed("counter"));
    manager.bus()?.publish(event(103)).await?;
    wait_for("an event after the restart", || {
        seen.load(Ordering::SeqCst) == 23
    })
    .await?;
    manager.stop().await?;
    Ok(())
}

#[tokio::test]
async fn failing_handler_shows_in_stats_and_health() -> anyhow::Result<()> {
    let mut config = memory_config();
    config.bus.max_retries = 1;
    config.bus.retry_base = Duration::from_millis(1);
    config.bus.retry_max = Duration::from_millis(2);
    let manager = EventBusManager::builder(config)
        .handler(
            SubscriptionSpec::new("broken", [EventType::USER_REGISTERED]),
            handler_fn("broken", |_event| async {
                Err::<(), _>(HandlerError::transient(std::io::Error::other("db down")))
            }),
        )
        .build()?;
    manager.start().await?;
    manager.bus()?.publish(event(1)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = manager.stats().await?;
        let broken = &stats.handlers["broken"];
        if broken.dead_letter_depth == 1 {
            assert_eq!(broken.failed, 2, "{broken:?}");
            assert_eq!(broken.retried, 1);
            assert_eq!(broken.dead_lettered, 1);
            assert_eq!(broken.processed, 0);
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {broken:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = manager.health().await;
    assert_eq!(health.dead_letter_depth, 1);
    assert_eq!(
        health.status,
        HealthStatus::Healthy,
        "dead letters alone do not degrade"
    );
    manager.stop().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_domain_handler_names_are_refused() {
    let config = Settings::from_vars([("ENABLED_EVENT_HANDLERS", "opportunity,users")]).unwrap();
    let err = EventBusManager::builder(config).build().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"users\""), "{text}");
    assert!(text.contains("market_signal"), "{text}");
}

#[tokio::test]
async fn invalid_handler_specs_are_refused_at_build() {
    let err = EventBusManager::builder(memory_config())
        .handler(
            SubscriptionSpec::new("Bad Name", [EventType::USER_REGISTERED]),
            counting("Bad Name", Arc::default()),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("handler name"), "{err}");
}

#[tokio::test]
async fn scoped_stops_after_the_body_even_when_it_fails() -> anyhow::Result<()> {
    let manager = Arc::new(EventBusManager::builder(memory_config()).build()?);
    let result: Result<(), anyhow::Error> = manager
        .scoped(|m| async move {
            ensure!(m.state() == ManagerState::Running);
            m.bus()?.publish(event(1)).await?;
            bail!("the body failed")
        })
        .await;
    assert_eq!(result.unwrap_err().to_string(), "the body failed");
    assert_eq!(manager.state(), ManagerState::Stopped);
    Ok(())
}

#[tokio::test]
async fn run_until_drains_on_the_signal() -> anyhow::Result<()> {
    let seen = Arc::new(AtomicU64::new(0));
    let manager = Arc::new(
        EventBusManager::builder(memory_config())
            .handler(
                SubscriptionSpec::new("slow", [EventType::USER_REGISTERED]),
                handler_fn("slow", {
                    let seen = seen.clone();
                    move |_event| {
                        let seen = seen.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            seen.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), HandlerError>(())
                        }
                    }
                }),
            )
            .build()?,
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let manager = manager.clone();
        async move {
            manager
                .run_until(async move {
                    let _ = rx.await;
                    Ok(())
                })
                .await
        }
    });
    wait_for("the manager to run", || {
        manager.state() == ManagerState::Running
    })
    .await?;
    let bus = manager.bus()?;
    for n in 0..5 {
        bus.publish(event(n)).await?;
    }
    tx.send(()).ok().context("runner gone")?;
    runner.await??;
    assert_eq!(manager.state(), ManagerState::Stopped);
    // The memory bus delivers its published backlog before it stops.
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    Ok(())
}

#[tokio::test]
async fn domain_handlers_are_chosen_by_configuration_and_keep_views() -> anyhow::Result<()> {
    let config = Settings::from_vars([("ENABLED_EVENT_HANDLERS", "opportunity,audit")])?;
    let audit_dir = std::env::temp_dir().join(format!(
        "event-manager-audit-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let dir = audit_dir.clone();
    let manager = EventBusManager::builder(config)
        .domain_context(move |bus| {
            Ok(event_handlers::DomainContext::new(bus)
                .with_audit(event_handlers::AuditSettings::json_lines(dir.clone())))
        })
        .build()?;
    assert!(
        manager.handler_names().is_empty(),
        "domain handlers are built at start"
    );
    manager.start().await?;
    assert_eq!(manager.handler_names(), ["audit", "opportunity"]);
    assert_eq!(manager.view_names(), ["audit", "opportunity"]);
    let publisher = event_publishers::EventPublisher::new(manager.bus()?, "opportunity_service");
    let payload = serde_json::json!({
        "opportunity_id": "opp-123",
        "title": "AI-Powered Customer Service",
        "description": "Automated customer support using NLP",
        "ai_solution_type": "nlp",
    });
    let serde_json::Value::Object(payload) = payload else {
        bail!("not an object")
    };
    publisher
        .publish_json(EventType::OPPORTUNITY_CREATED, payload, None)
        .await?;
    let view = manager.view("opportunity").context("no view")?;
    wait_for("the catalogue to hold the opportunity", || {
        view.snapshot()["opportunities"]["opp-123"]["title"] == "AI-Powered Customer Service"
    })
    .await?;
    let stats = manager.stats().await?;
    assert_eq!(stats.handlers["opportunity"].origin, "domain");
    assert!(stats.handlers["opportunity"].has_view);
    wait_for("the audit trail to record the event", || {
        manager
            .view("audit")
            .is_some_and(|v| v.snapshot()["entries_written"] == 1)
    })
    .await?;
    let trail = std::fs::read_to_string(audit_dir.join("audit.jsonl"))?;
    assert!(trail.contains("opp-123"), "{trail}");
    manager.stop().await?;
    // Handlers built per start: a restart builds fresh ones (and views start empty).
    manager.start().await?;
    let view = manager.view("opportunity").context("no view")?;
    assert_eq!(view.snapshot()["active"], 0);
    manager.stop().await?;
    let _ = std::fs::remove_dir_all(audit_dir);
    Ok(())
}

#[tokio::test]
async fn enable_event_handlers_false_registers_none() -> anyhow::Result<()> {
    let config = Settings::from_vars([("ENABLE_EVENT_HANDLERS", "false")])?;
    let manager = EventBusManager::builder(config).build()?;
    manager.start().await?;
    assert!(manager.handler_names().is_empty());
    manager.stop().await?;
    Ok(())
}
