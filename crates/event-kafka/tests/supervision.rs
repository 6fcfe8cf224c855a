//! The tasks behind a Kafka subscription besides the fetch loops (which the conformance
//! suite's `a_failed_loop_is_restarted_and_reported` covers): the group membership task and
//! the commit task. Each, made to panic, is restarted, health says so, and every event is still
//! handled and committed. Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`).

mod support;

use support::Settings;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::ensure;
use event_core::{EventBus, EventId, EventType, HealthStatus, StartFrom, SubscriptionSpec};
use event_kafka::KafkaBus;
use support::{quiescent, recorder};

async fn publish(bus: &KafkaBus, event_type: &EventType, n: usize) -> anyhow::Result<Vec<EventId>> {
    let events = support::keyed_events(event_type, "test", n, 9)?;
    bus.publish_batch(events)
        .await
        .into_iter()
        .map(|r| Ok(r?))
        .collect()
}

async fn loop_failures(bus: &KafkaBus, handler: &str) -> u64 {
    bus.health()
        .await
        .consumers
        .iter()
        .find(|c| c.handler == handler)
        .map_or(0, |c| c.loop_failures)
}

async fn wait_for_failures(bus: &KafkaBus, handler: &str, at_least: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while loop_failures(bus, handler).await < at_least {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "health never counted {at_least} loop failures of {handler}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn membership_and_commit_tasks_are_restarted_and_reported() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = event_testkit::unique("eventbus-supervision");
    config.kafka.partitions = 2;
    let bus = config.connect().await?;
    let tag = format!("{:08x}", fastrand::u32(..));
    let event_type = EventType::new(format!("test.supervised{tag}"))?;
    let handler = format!("supervised{tag}");
    let (recorder, handled) = recorder(&handler);
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
        recorder,
    )
    .await?;
    let mut ids: HashSet<EventId> = publish(&bus, &event_type, 300).await?.into_iter().collect();
    quiescent(&bus, &handler, Duration::from_secs(60)).await?;

    let outcome = async {
        // The membership task panics at its next heartbeat; the new one rejoins and takes the
        // partitions again from their committed offsets.
        event_core::fault::panic_loop_once(&format!("{handler}/membership"));
        wait_for_failures(&bus, &handler, 1).await?;
        ids.extend(publish(&bus, &event_type, 300).await?);
        quiescent(&bus, &handler, Duration::from_secs(60)).await?;
        // The commit task panics within its next pass.
        event_core::fault::panic_loop_once(&format!("{handler}/commits"));
        wait_for_failures(&bus, &handler, 2).await?;
        ids.extend(publish(&bus, &event_type, 300).await?);
        quiescent(&bus, &handler, Duration::from_secs(60)).await
    }
    .await;
    event_core::fault::clear(&format!("{handler}/membership"));
    event_core::fault::clear(&format!("{handler}/commits"));
    outcome?;

    let seen = handled.lock().unwrap().clone();
    let unique: HashSet<EventId> = seen.iter().copied().collect();
    ensure!(
        unique == ids,
        "{} of {} events handled",
        unique.len(),
        ids.len()
    );
    // Everything was finished and committed before each fault: nothing is handled twice.
    ensure!(
        seen.len() == unique.len(),
        "{} events handled twice",
        seen.len() - unique.len()
    );
    let health = bus.health().await;
    let consumer = health.consumers.iter().find(|c| c.handler == handler);
    ensure!(
        consumer.is_some_and(|c| c.alive && c.loop_failures >= 2),
        "health does not report the restarted tasks: {consumer:?}"
    );
    ensure!(
        health.status == HealthStatus::Degraded
            && health.problems.iter().any(|p| p.contains(&handler)),
        "health should be degraded and name the handler: {health:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
