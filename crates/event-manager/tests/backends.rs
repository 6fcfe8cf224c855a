//! The manager on real servers (`EVENTBUS_TEST_REDIS_URL`, `EVENTBUS_TEST_KAFKA_BROKERS`, as
//! `cargo xtask test` sets them): a failed start retried once the server is reachable, and the
//! capability check against Kafka.

use anyhow::{Context as _, ensure};
use event_core::{EventType, HandlerError, HealthStatus, SubscriptionSpec, handler_fn};
use event_manager::{BusType, EventBusManager, ManagerState, Settings};
use event_testkit::test_server;
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on `listener` to `target`.
fn forward(listener: TcpListener, target: String) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test]
async fn a_failed_start_is_not_cached_and_can_be_retried() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .context("no host in the test URL")?
        .to_string();
    // A port nobody listens on, for now.
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let mut config = Settings::default();
    config.bus_type = BusType::Redis;
    config.redis.url = format!("redis://127.0.0.1:{port}/0");
    config.redis.key_prefix = event_testkit::unique("manager-retry");
    config.enable_event_handlers = false;
    let manager = EventBusManager::builder(config)
        .handler(
            SubscriptionSpec::new("noop", [EventType::USER_REGISTERED]),
            handler_fn("noop", |_e| async { Ok::<(), HandlerError>(()) }),
        )
        .build()?;

    let err = manager.start().await.unwrap_err();
    ensure!(
        err.is_transient(),
        "an unreachable server is transient: {err}"
    );
    assert_eq!(manager.state(), ManagerState::Stopped);
    assert!(matches!(
        manager.bus(),
        Err(event_manager::Error::NotRunning)
    ));
    assert_eq!(manager.health().await.status, HealthStatus::Unhealthy);

    // The server becomes reachable on that port: the same manager starts.
    forward(TcpListener::bind(("127.0.0.1", port)).await?, target);
    manager.start_with_retries(5).await?;
    assert_eq!(manager.state(), ManagerState::Running);
    assert!(manager.is_subscribed("noop"));
    let health = manager.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(health.round_trip_ms.is_some());
    let stats = manager.stats().await?;
    assert_eq!(stats.backend, "redis");
    assert!(stats.handlers["noop"].subscribed);
    manager.stop().await?;
    Ok(())
}

#[tokio::test]
async fn event_sourcing_asked_for_on_kafka_is_refused_with_what_to_change() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("manager-caps");
    let vars = [
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("ENABLE_EVENT_HANDLERS", "false"),
        ("ENABLE_EVENT_SOURCING", "true"),
    ];
    let config = Settings::from_vars(vars)?;
    let manager = EventBusManager::builder(config.clone())
        .explicit_variables(vars.iter().map(|(k, _)| *k))
        .build()?;
    let err = manager.start().await.unwrap_err();
    let text = err.to_string();
    ensure!(
        matches!(err, event_manager::Error::Capability { .. }),
        "{text}"
    );
    ensure!(text.contains("ENABLE_EVENT_SOURCING=false"), "{text}");
    ensure!(!err.is_transient());
    assert_eq!(manager.state(), ManagerState::Stopped);

    // Left at its default, the same setting is a warning and Kafka starts.
    let manager = EventBusManager::builder(config).build()?;
    manager.start().await?;
    let stats = manager.stats().await?;
    assert_eq!(stats.backend, "kafka");
    ensure!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("ENABLE_EVENT_SOURCING")),
        "{:?}",
        stats.warnings
    );
    let health = manager.health().await;
    ensure!(health.status != HealthStatus::Unhealthy, "{health:?}");
    manager.stop().await?;
    Ok(())
}
