//! Delivery: every handler of a type gets every event of it, and nothing else.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use event_core::EventBus;

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, Step, exactly_once, fresh_handler, fresh_type, numbered, publish_all,
    publish_marker, subscribe, wait_until,
};

/// 5,000 events from 50 concurrent publishers reach each of two handlers exactly once.
pub(crate) async fn fan_out_to_every_handler(fx: &Fixture) -> anyhow::Result<()> {
    const PUBLISHERS: u64 = 50;
    const EACH: u64 = 100;
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let first = Recorder::fresh();
    let second = Recorder::fresh();
    subscribe(&*bus, &first, [event_type.clone()]).await?;
    subscribe(&*bus, &second, [event_type.clone()]).await?;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let bus: Arc<dyn EventBus> = bus.clone();
            let event_type = event_type.clone();
            tokio::spawn(async move {
                let events = (0..EACH).map(|n| numbered(&event_type, p * EACH + n));
                publish_all(&*bus, events).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for publisher in publishers {
        ids.extend(publisher.await.context("a publisher task panicked")??);
    }
    ensure!(ids.len() == 5000, "published {} events", ids.len());
    let total = ids.len();
    wait_until(DEADLINE, "both handlers got 5,000 events", || {
        first.handled_count() >= total && second.handled_count() >= total
    })
    .await
    .with_context(|| {
        format!(
            "the handlers got {} and {}",
            first.handled_count(),
            second.handled_count()
        )
    })?;
    // Let anything delivered twice arrive before counting.
    let marker = publish_marker(&*bus, &event_type).await?;
    first.wait_for_event(&marker).await?;
    second.wait_for_event(&marker).await?;
    ids.push(marker);
    exactly_once(&*bus, &[&first], &ids, "first handler").await?;
    exactly_once(&*bus, &[&second], &ids, "second handler").await?;
    bus.shutdown().await?;
    Ok(())
}

/// A handler of type A gets no events of type B.
pub(crate) async fn topic_isolation(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let type_a = fresh_type("created");
    let type_b = fresh_type("created");
    let of_a = Recorder::fresh();
    let of_b = Recorder::fresh();
    subscribe(&*bus, &of_a, [type_a.clone()]).await?;
    subscribe(&*bus, &of_b, [type_b.clone()]).await?;
    let mut ids_a = Vec::new();
    let mut ids_b = Vec::new();
    for n in 0..10 {
        ids_a.push(bus.publish(numbered(&type_a, n)).await?);
        ids_b.push(bus.publish(numbered(&type_b, n)).await?);
    }
    ids_a.push(publish_marker(&*bus, &type_a).await?);
    ids_b.push(publish_marker(&*bus, &type_b).await?);
    of_a.wait_for_count(ids_a.len()).await?;
    of_b.wait_for_count(ids_b.len()).await?;
    exactly_once(&*bus, &[&of_a], &ids_a, "handler of A").await?;
    exactly_once(&*bus, &[&of_b], &ids_b, "handler of B").await?;
    ensure!(
        of_a.handled().iter().all(|e| e.event_type == type_a)
            && of_b.handled().iter().all(|e| e.event_type == type_b),
        "a handler got an event of a type it did not subscribe to"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A handler subscribed to several types gets the events of each.
pub(crate) async fn several_types_one_handler(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let types = [
        fresh_type("created"),
        fresh_type("updated"),
        fresh_type("deleted"),
    ];
    let other = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, types.clone()).await?;
    let mut ids = Vec::new();
    for n in 0..5 {
        for t in &types {
            ids.push(bus.publish(numbered(t, n)).await?);
        }
        bus.publish(numbered(&other, n)).await?;
    }
    recorder.wait_for_count(ids.len()).await?;
    for t in &types {
        ids.push(publish_marker(&*bus, t).await?);
    }
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler of three types").await?;
    bus.shutdown().await?;
    Ok(())
}

/// An unsubscribed handler gets nothing more, while another handler of the type goes on.
pub(crate) async fn unsubscribed_handler_gets_nothing(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let leaving = Recorder::fresh();
    let staying = Recorder::fresh();
    let subscription = subscribe(&*bus, &leaving, [event_type.clone()]).await?;
    subscribe(&*bus, &staying, [event_type.clone()]).await?;
    let before = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    leaving.wait_for_count(5).await?;
    staying.wait_for_count(5).await?;
    ensure!(subscription.is_active(), "the subscription is not active");
    subscription.unsubscribe().await?;
    let after = publish_all(&*bus, (5..10).map(|n| numbered(&event_type, n))).await?;
    let marker = publish_marker(&*bus, &event_type).await?;
    staying.wait_for_count(11).await?;
    staying.wait_for_event(&marker).await?;
    ensure!(
        leaving.calls() == 5,
        "the unsubscribed handler was called {} times, expected only the 5 events before it left",
        leaving.calls()
    );
    exactly_once(&*bus, &[&leaving], &before, "unsubscribed handler").await?;
    let all: Vec<_> = before
        .iter()
        .chain(&after)
        .copied()
        .chain([marker])
        .collect();
    exactly_once(&*bus, &[&staying], &all, "handler that stayed").await?;
    let stats = bus.stats().await?;
    let left = stats
        .handlers
        .get(leaving.name())
        .map_or(0, |h| h.subscriptions);
    ensure!(
        left == 0,
        "stats show {left} subscriptions of the handler that left"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A handler that fails every event does not keep other handlers of the type from theirs.
pub(crate) async fn failing_handler_does_not_affect_others(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_retries = 1).await?;
    let event_type = fresh_type("created");
    let failing = Recorder::scripted(&fresh_handler(), |_, _| Step::Transient);
    let working = Recorder::fresh();
    subscribe(&*bus, &failing, [event_type.clone()]).await?;
    subscribe(&*bus, &working, [event_type.clone()]).await?;
    let ids = publish_all(&*bus, (0..20).map(|n| numbered(&event_type, n))).await?;
    working.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&working], &ids, "working handler").await?;
    wait_until(
        DEADLINE,
        "the failing handler tried every event twice",
        || failing.calls() >= 2 * ids.len(),
    )
    .await?;
    ensure!(
        failing.handled_count() == 0,
        "the failing handler succeeded somehow"
    );
    bus.shutdown().await?;
    Ok(())
}
