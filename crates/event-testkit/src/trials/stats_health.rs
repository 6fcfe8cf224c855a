//! Stats and health: counts by type and by handler, and the bus's health: healthy, degraded by
//! a stalled consumer, unhealthy after shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{EventBus, HandlerStats, HealthStatus, SubscriptionSpec};
use tokio::sync::Semaphore;

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, Step, fresh_handler, fresh_type, n_of, numbered, publish_all, stored_count,
    subscribe, subscribe_spec, wait_for, wait_for_dead_letters, wait_until,
};

/// Waits until the handler's stats satisfy `ready`, and returns them.
async fn handler_stats(
    bus: &dyn EventBus,
    handler: &str,
    what: &str,
    ready: impl Fn(&HandlerStats) -> bool,
) -> anyhow::Result<HandlerStats> {
    let ready = &ready;
    wait_for(DEADLINE, what, || async move {
        let stats = bus.stats().await?;
        Ok(stats.handlers.get(handler).is_some_and(ready))
    })
    .await?;
    let stats = bus.stats().await?;
    stats
        .handlers
        .get(handler)
        .cloned()
        .with_context(|| format!("stats lost handler {handler}"))
}

/// Stats count retained events by type and describe each handler's group and subscriptions.
pub(crate) async fn stats_count_events_by_type(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let config = fx.config_with(|_| {});
    let type_a = fresh_type("created");
    let type_b = fresh_type("updated");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [type_a.clone()]).await?;
    publish_all(&*bus, (0..3).map(|n| numbered(&type_a, n))).await?;
    publish_all(&*bus, (0..2).map(|n| numbered(&type_b, n))).await?;
    recorder.wait_for_count(3).await?;

    let stats = bus.stats().await?;
    ensure!(
        stats.backend == fx.capabilities.backend,
        "stats name the backend {:?}, expected {:?}",
        stats.backend,
        fx.capabilities.backend
    );
    let (a, b) = (
        stored_count(&*bus, &type_a).await?,
        stored_count(&*bus, &type_b).await?,
    );
    ensure!(
        a == 3 && b == 2,
        "stats count {a} and {b} events, expected 3 and 2"
    );
    let sum: u64 = stats.events_by_type.values().sum();
    ensure!(
        stats.total_events == sum && sum >= 5,
        "stats total {} disagrees with the sum by type {sum}",
        stats.total_events
    );
    ensure!(
        stats.active_subscribers >= 1 && stats.subscription_tasks >= 1,
        "stats show {} active subscribers and {} subscription tasks",
        stats.active_subscribers,
        stats.subscription_tasks
    );
    let handler = handler_stats(&*bus, recorder.name(), "stats count 3 processed", |h| {
        h.processed >= 3
    })
    .await?;
    let group = format!("{}.{}", config.consumer_group, recorder.name());
    ensure!(
        handler.group == group,
        "handler group {}, expected {group}",
        handler.group
    );
    ensure!(
        handler.event_types == [type_a.to_string()],
        "handler types {:?}",
        handler.event_types
    );
    ensure!(
        handler.subscriptions == 1,
        "{} subscriptions",
        handler.subscriptions
    );
    ensure!(
        handler.processed == 3 && handler.failed == 0 && handler.dead_lettered == 0,
        "handler counts {handler:?}"
    );
    ensure!(handler.last_event_at.is_some(), "no last event time");
    let handler = handler_stats(&*bus, recorder.name(), "nothing pending", |h| {
        h.pending == 0 && h.lag == 0
    })
    .await?;
    ensure!(handler.dead_letter_depth == 0, "handler counts {handler:?}");
    bus.shutdown().await?;
    Ok(())
}

/// Stats count processed, failed, retried and dead-lettered events per handler.
pub(crate) async fn stats_count_outcomes_per_handler(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_retries = 1).await?;
    let event_type = fresh_type("created");
    // 0 to 2 succeed, 3 fails once, 4 fails permanently, 5 fails on both attempts.
    let recorder = Recorder::scripted(&fresh_handler(), |e, attempt| match n_of(e) {
        3 if attempt == 1 => Step::Transient,
        4 => Step::Permanent,
        5 => Step::Transient,
        _ => Step::Succeed,
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    publish_all(&*bus, (0..6).map(|n| numbered(&event_type, n))).await?;
    recorder.wait_for_count(4).await?;
    wait_for_dead_letters(&*bus, recorder.name(), 2).await?;
    let stats = handler_stats(&*bus, recorder.name(), "stats count every outcome", |h| {
        h.processed >= 4 && h.dead_lettered >= 2
    })
    .await?;
    let counts = (
        stats.processed,
        stats.failed,
        stats.retried,
        stats.dead_lettered,
        stats.dead_letter_depth,
    );
    ensure!(
        counts == (4, 4, 2, 2, 2),
        "(processed, failed, retried, dead_lettered, dead_letter_depth) = {counts:?}, expected (4, 4, 2, 2, 2)"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Health is healthy with live consumers, each reported alive and not stalled.
pub(crate) async fn healthy_with_live_consumers(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let id = bus.publish(numbered(&event_type, 0)).await?;
    recorder.wait_for_event(&id).await?;
    let health = bus.health().await;
    ensure!(
        health.status == HealthStatus::Healthy,
        "health is {:?} with problems {:?}",
        health.status,
        health.problems
    );
    ensure!(
        health.backend == fx.capabilities.backend,
        "health names the backend {:?}",
        health.backend
    );
    ensure!(
        health.problems.is_empty(),
        "problems: {:?}",
        health.problems
    );
    let consumer = health
        .consumers
        .iter()
        .find(|c| c.handler == recorder.name())
        .with_context(|| format!("health does not list the consumer: {health:?}"))?;
    ensure!(
        consumer.alive && !consumer.stalled,
        "the consumer is reported {consumer:?}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A consumer with lag and no progress for `EVENT_STALL_TIMEOUT_MS` makes health degraded, until it moves again.
pub(crate) async fn stalled_consumer_degrades_health(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx
        .bus_with(|c| c.stall_timeout = Duration::from_millis(100))
        .await?;
    let event_type = fresh_type("created");
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let recorder = Recorder::scripted(&fresh_handler(), move |_, _| Step::Gate(held.clone()));
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).concurrency(1),
    )
    .await?;
    let ids = publish_all(&*bus, (0..3).map(|n| numbered(&event_type, n))).await?;
    wait_until(DEADLINE, "the handler is held", || recorder.calls() >= 1).await?;
    let bus_ref = &*bus;
    let name = recorder.name();
    let consumer_is = |stalled: bool| async move {
        let health = bus_ref.health().await;
        let consumer = health.consumers.iter().find(|c| c.handler == name);
        let status = if stalled {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        anyhow::Ok(health.status == status && consumer.is_some_and(|c| c.stalled == stalled))
    };
    wait_for(DEADLINE, "health reports the held consumer stalled", || {
        consumer_is(true)
    })
    .await?;
    let health = bus.health().await;
    ensure!(
        !health.problems.is_empty(),
        "a degraded report names no problem"
    );
    gate.add_permits(ids.len());
    recorder.wait_for_count(ids.len()).await?;
    wait_for(DEADLINE, "health is healthy again", || consumer_is(false)).await?;
    bus.shutdown().await?;
    Ok(())
}

/// After shutdown, health reports the bus unhealthy and says why.
pub(crate) async fn unhealthy_after_shutdown(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    bus.shutdown().await?;
    let health = bus.health().await;
    ensure!(
        health.status == HealthStatus::Unhealthy,
        "health after shutdown is {:?}",
        health.status
    );
    ensure!(
        !health.problems.is_empty(),
        "an unhealthy report names no problem"
    );
    Ok(())
}
