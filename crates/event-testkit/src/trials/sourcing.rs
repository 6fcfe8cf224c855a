//! Event sourcing: aggregate append with optimistic concurrency, and load in version order.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use event_core::{AggregateAppend, Error, Event, EventBus, EventType, ExpectedVersion};

use crate::fixture::Fixture;
use crate::support::{
    Recorder, SOURCE, exactly_once, fresh_type, n_of, numbered, stored_count, subscribe,
};

const AGGREGATE: &str = "opportunity";

fn fresh_aggregate() -> String {
    format!("opp-{:016x}", fastrand::u64(..))
}

fn append(id: &str, expected: ExpectedVersion, events: Vec<Event>) -> AggregateAppend {
    AggregateAppend::new(AGGREGATE, id, expected, events)
}

fn is_conflict(result: &Result<u64, Error>, expected: u64, actual: u64) -> bool {
    matches!(
        result,
        Err(Error::VersionConflict { expected: e, actual: a, .. }) if *e == expected && *a == actual
    )
}

/// Appends are stamped with versions 1, 2, 3... and load returns them in version order.
pub(crate) async fn append_and_load_in_version_order(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let created = fresh_type("created");
    let updated = fresh_type("updated");
    let id = fresh_aggregate();
    let live = Recorder::fresh();
    subscribe(&*bus, &live, [created.clone(), updated.clone()]).await?;
    let events: Vec<Event> = std::iter::once(numbered(&created, 0))
        .chain((1..6).map(|n| numbered(&updated, n)))
        .collect();
    let version = bus
        .append_to_aggregate(append(&id, ExpectedVersion::Exact(0), events[..3].to_vec()))
        .await?;
    ensure!(
        version == 3,
        "the first append returned version {version}, expected 3"
    );
    let version = bus
        .append_to_aggregate(append(
            &id,
            ExpectedVersion::Exact(3),
            events[3..5].to_vec(),
        ))
        .await?;
    ensure!(
        version == 5,
        "the second append returned version {version}, expected 5"
    );
    let version = bus
        .append_to_aggregate(append(&id, ExpectedVersion::Any, events[5..].to_vec()))
        .await?;
    ensure!(
        version == 6,
        "an append at any version returned {version}, expected 6"
    );

    let loaded = bus.load_aggregate(AGGREGATE, &id).await?;
    let versions: Vec<_> = loaded.iter().map(|e| e.aggregate_version).collect();
    ensure!(
        versions == (1..=6).map(Some).collect::<Vec<_>>(),
        "loaded versions {versions:?}"
    );
    for (got, sent) in loaded.iter().zip(&events) {
        ensure!(
            got.id == sent.id && got.event_type == sent.event_type && got.payload == sent.payload,
            "loaded event {} is not the appended {}",
            got.id,
            sent.id
        );
        ensure!(
            got.aggregate_type.as_deref() == Some(AGGREGATE)
                && got.aggregate_id.as_deref() == Some(id.as_str()),
            "loaded event {} belongs to {:?} {:?}",
            got.id,
            got.aggregate_type,
            got.aggregate_id
        );
        ensure!(
            got.partition_key.as_deref() == Some(id.as_str()),
            "an aggregate event without a key was not keyed by the aggregate id: {:?}",
            got.partition_key
        );
    }
    let other = bus.load_aggregate(AGGREGATE, &fresh_aggregate()).await?;
    ensure!(
        other.is_empty(),
        "an unknown aggregate loaded {} events",
        other.len()
    );

    // The appended events are published too, each once; order holds per key within an event
    // type (streams and topics are per type), so each type's events come in version order.
    live.wait_for_count(6).await?;
    let handled = live.handled();
    let mut got: Vec<_> = handled.iter().map(|e| e.id).collect();
    let mut sent: Vec<_> = events.iter().map(|e| e.id).collect();
    got.sort();
    sent.sort();
    ensure!(
        got == sent,
        "a handler got {} of the 6 appended events",
        got.len()
    );
    for event_type in [&created, &updated] {
        let delivered: Vec<_> = handled
            .iter()
            .filter(|e| &e.event_type == event_type)
            .map(|e| e.aggregate_version)
            .collect();
        ensure!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "a handler got the {event_type} events of the aggregate in the order {delivered:?}"
        );
    }
    bus.shutdown().await?;
    Ok(())
}

/// An append with a stale expected version fails with `VersionConflict` and writes nothing.
pub(crate) async fn stale_version_refused(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("updated");
    let id = fresh_aggregate();
    let live = Recorder::fresh();
    subscribe(&*bus, &live, [event_type.clone()]).await?;
    let first: Vec<_> = (0..3).map(|n| numbered(&event_type, n)).collect();
    bus.append_to_aggregate(append(&id, ExpectedVersion::Exact(0), first.clone()))
        .await?;

    let refused: Vec<_> = (10..12).map(|n| numbered(&event_type, n)).collect();
    let stale = bus
        .append_to_aggregate(append(&id, ExpectedVersion::Exact(1), refused.clone()))
        .await;
    ensure!(is_conflict(&stale, 1, 3), "a stale append gave {stale:?}");
    let fresh = bus
        .append_to_aggregate(append(&id, ExpectedVersion::Exact(0), refused.clone()))
        .await;
    ensure!(
        is_conflict(&fresh, 0, 3),
        "a create of an existing aggregate gave {fresh:?}"
    );

    let loaded = bus.load_aggregate(AGGREGATE, &id).await?;
    ensure!(
        loaded.iter().map(n_of).collect::<Vec<_>>() == [0, 1, 2],
        "after refused appends the aggregate holds {:?}",
        loaded.iter().map(n_of).collect::<Vec<_>>()
    );
    let stored = stored_count(&*bus, &event_type).await?;
    ensure!(stored == 3, "stats count {stored} events, expected 3");
    // Keyed by the aggregate: once this arrives, the refused events would have too.
    let next = numbered(&event_type, 3);
    let next_id = next.id;
    let last = bus
        .append_to_aggregate(append(&id, ExpectedVersion::Exact(3), vec![next]))
        .await?;
    ensure!(
        last == 4,
        "the append after the conflict returned version {last}"
    );
    live.wait_for_event(&next_id).await?;
    let expected: Vec<_> = first.iter().map(|e| e.id).chain([next_id]).collect();
    exactly_once(&*bus, &[&live], &expected, "handler of the aggregate").await?;
    bus.shutdown().await?;
    Ok(())
}

/// Of concurrent appends that all expect the same version, exactly one succeeds.
pub(crate) async fn concurrent_appends_one_wins(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let id = fresh_aggregate();
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let bus: Arc<dyn EventBus> = bus.clone();
            let event = numbered(&event_type, n);
            let id = id.clone();
            tokio::spawn(async move {
                bus.append_to_aggregate(append(&id, ExpectedVersion::Exact(0), vec![event]))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.context("an append task panicked")? {
            Ok(version) => {
                ensure!(version == 1, "a winning append returned version {version}");
                won += 1;
            }
            Err(Error::VersionConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(
        won == 1,
        "{won} concurrent creates of one aggregate succeeded"
    );
    let loaded = bus.load_aggregate(AGGREGATE, &id).await?;
    ensure!(
        loaded.len() == 1,
        "the aggregate holds {} events",
        loaded.len()
    );
    ensure!(
        stored_count(&*bus, &event_type).await? == 1,
        "losing appends were published"
    );
    bus.shutdown().await?;
    Ok(())
}

/// An append with one oversized event fails with `EventTooLarge` and writes none of its events.
pub(crate) async fn oversized_append_writes_nothing(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_event_bytes = 2048).await?;
    let event_type = fresh_type("created");
    let id = fresh_aggregate();
    let big = Event::builder(event_type.clone(), SOURCE)
        .field("blob", "x".repeat(4096))
        .build()?;
    let result = bus
        .append_to_aggregate(append(
            &id,
            ExpectedVersion::Exact(0),
            vec![numbered(&event_type, 0), big],
        ))
        .await;
    ensure!(
        matches!(result, Err(Error::EventTooLarge { .. })),
        "an append with an oversized event gave {result:?}"
    );
    let loaded = bus.load_aggregate(AGGREGATE, &id).await?;
    ensure!(
        loaded.is_empty(),
        "the refused append left {} events",
        loaded.len()
    );
    ensure!(
        stored_count(&*bus, &event_type).await? == 0,
        "the refused append published events"
    );
    let version = bus
        .append_to_aggregate(append(
            &id,
            ExpectedVersion::Exact(0),
            vec![numbered(&event_type, 1)],
        ))
        .await?;
    ensure!(
        version == 1,
        "the next append returned version {version}, expected 1"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Append and load fail with `Disabled` when `ENABLE_EVENT_SOURCING=false`, and nothing is published.
pub(crate) async fn sourcing_refused_when_disabled(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.enable_event_sourcing = false).await?;
    let event_type: EventType = fresh_type("created");
    let id = fresh_aggregate();
    let result = bus
        .append_to_aggregate(append(
            &id,
            ExpectedVersion::Any,
            vec![numbered(&event_type, 0)],
        ))
        .await;
    ensure!(
        matches!(
            result,
            Err(Error::Disabled {
                variable: "ENABLE_EVENT_SOURCING",
                ..
            })
        ),
        "append with ENABLE_EVENT_SOURCING=false gave {result:?}"
    );
    let loaded = bus.load_aggregate(AGGREGATE, &id).await;
    ensure!(
        matches!(loaded, Err(Error::Disabled { .. })),
        "load with ENABLE_EVENT_SOURCING=false gave {loaded:?}"
    );
    ensure!(
        stored_count(&*bus, &event_type).await? == 0,
        "a refused append published its event"
    );
    bus.shutdown().await?;
    Ok(())
}
