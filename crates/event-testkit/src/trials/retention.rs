//! Retention: events older than the TTL are trimmed, from replay, stats and new groups alike.

use std::time::Duration;

use anyhow::ensure;
use event_core::{EventBus, EventType, ReplayQuery, StartFrom, SubscriptionSpec};
use time::OffsetDateTime;

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, exactly_once, fresh_type, numbered, publish_all, publish_marker,
    replay_all, stored_count, subscribe_spec, wait_for,
};

/// How long to wait for a one-second retention to trim: some backends trim lazily.
const TRIM_DEADLINE: Duration = Duration::from_secs(30);

fn everything(event_type: &EventType) -> ReplayQuery {
    ReplayQuery::new(
        [event_type.clone()],
        OffsetDateTime::now_utc() - time::Duration::hours(1),
    )
}

/// Waits until replay returns no event of `event_type`.
async fn wait_until_trimmed(bus: &dyn EventBus, event_type: &EventType) -> anyhow::Result<()> {
    wait_for(TRIM_DEADLINE, "retention trimmed every event", || async {
        Ok(replay_all(bus, everything(event_type)).await?.is_empty())
    })
    .await
}

/// With `EVENT_TTL_SECONDS=1`, events vanish from replay and stats after the TTL, and stats agree with replay.
pub(crate) async fn expired_events_are_trimmed(fx: &Fixture) -> anyhow::Result<()> {
    // Once watching stats and once watching replay, so each is shown to trim on its own.
    for watch_stats in [true, false] {
        let bus = fx
            .bus_with(|c| c.event_ttl = Duration::from_secs(1))
            .await?;
        let event_type = fresh_type("created");
        publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
        let counted = stored_count(&*bus, &event_type).await?;
        let fresh = replay_all(&*bus, everything(&event_type)).await?;
        ensure!(
            counted == 5 && fresh.len() == 5,
            "right after publishing 5 events, stats count {counted} and replay returns {}",
            fresh.len()
        );

        if watch_stats {
            let bus = &*bus;
            let event_type = &event_type;
            wait_for(
                TRIM_DEADLINE,
                "stats stop counting expired events",
                || async move { Ok(stored_count(bus, event_type).await? == 0) },
            )
            .await?;
            let left = replay_all(bus, everything(event_type)).await?;
            ensure!(
                left.is_empty(),
                "stats count no events but replay returns {}",
                left.len()
            );
        } else {
            wait_until_trimmed(&*bus, &event_type).await?;
            let counted = stored_count(&*bus, &event_type).await?;
            ensure!(
                counted == 0,
                "replay returns no events but stats count {counted}"
            );
        }
        let stats = bus.stats().await?;
        let sum: u64 = stats.events_by_type.values().sum();
        ensure!(
            stats.total_events == sum,
            "stats total {} disagrees with the sum by type {sum}",
            stats.total_events
        );

        // The log still works after trimming, and counts only what it holds.
        let id = bus.publish(numbered(&event_type, 5)).await?;
        let got = replay_all(&*bus, everything(&event_type)).await?;
        ensure!(
            got.len() == 1 && got[0].id == id,
            "after trimming, replay returned {} events, expected only the new one",
            got.len()
        );
        let counted = stored_count(&*bus, &event_type).await?;
        ensure!(
            counted == 1,
            "stats count {counted} events, expected the new one"
        );
        bus.shutdown().await?;
    }
    Ok(())
}

/// A new group starting from the earliest event gets only what retention kept.
pub(crate) async fn late_subscriber_skips_trimmed(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx
        .bus_with(|c| c.event_ttl = Duration::from_secs(1))
        .await?;
    let event_type = fresh_type("created");
    let old = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    wait_until_trimmed(&*bus, &event_type).await?;
    let recorder = Recorder::fresh();
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
    )
    .await?;
    let mut ids = publish_all(&*bus, (5..8).map(|n| numbered(&event_type, n))).await?;
    ids.push(publish_marker(&*bus, &event_type).await?);
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "late handler").await?;
    ensure!(
        old.iter().all(|id| recorder.calls_for(id) == 0),
        "a trimmed event was delivered"
    );
    let name = recorder.name().to_string();
    let bus_ref = &*bus;
    wait_for(DEADLINE, "the late handler has no lag", move || {
        let name = name.clone();
        async move {
            let stats = bus_ref.stats().await?;
            Ok(stats.handlers.get(&name).is_some_and(|h| h.lag == 0))
        }
    })
    .await?;
    bus.shutdown().await?;
    Ok(())
}
