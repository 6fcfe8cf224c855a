//! Publishing: ids, batches, and the size limit.

use anyhow::ensure;
use event_core::{Error, Event, EventType};

use crate::fixture::Fixture;
use crate::support::{
    Recorder, SOURCE, exactly_once, fresh_type, keyed, numbered, publish_marker, stored_count,
    subscribe,
};

/// The size limit the size trials set (`EVENT_MAX_PAYLOAD_BYTES`).
const LIMIT: usize = 2048;

/// An event with partition key `key` whose encoding is well over [`LIMIT`].
fn oversized(event_type: &EventType, key: &str) -> anyhow::Result<Event> {
    Ok(Event::builder(event_type.clone(), SOURCE)
        .field("blob", "x".repeat(2 * LIMIT))
        .partition_key(key)
        .build()?)
}

/// Checks that a publish result is `EventTooLarge` for `event`.
fn too_large(result: Result<event_core::EventId, Error>, event: &Event) -> anyhow::Result<()> {
    match result {
        Err(Error::EventTooLarge {
            id,
            event_type,
            size,
            limit,
        }) => {
            ensure!(id == event.id, "EventTooLarge names {id}, not {}", event.id);
            ensure!(
                event_type == event.event_type,
                "EventTooLarge names type {event_type}"
            );
            ensure!(
                limit == LIMIT,
                "EventTooLarge names limit {limit}, not {LIMIT}"
            );
            ensure!(
                size > LIMIT,
                "EventTooLarge reports size {size}, under the limit"
            );
            Ok(())
        }
        other => anyhow::bail!("an oversized event gave {other:?} instead of EventTooLarge"),
    }
}

/// `publish` returns the event's own id and the handler receives the event under it.
pub(crate) async fn publish_returns_event_id(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let event = numbered(&event_type, 1);
    let id = bus.publish(event.clone()).await?;
    ensure!(
        id == event.id,
        "publish returned {id} for event {}",
        event.id
    );
    recorder.wait_for_event(&id).await?;
    bus.shutdown().await?;
    Ok(())
}

/// `publish_batch` returns one id per event, in the order given, and every event is delivered.
pub(crate) async fn batch_returns_ids_in_order(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let events: Vec<Event> = (0..50).map(|n| numbered(&event_type, n)).collect();
    let expected: Vec<_> = events.iter().map(|e| e.id).collect();
    let results = bus.publish_batch(events).await;
    ensure!(
        results.len() == expected.len(),
        "publish_batch returned {} results for {} events",
        results.len(),
        expected.len()
    );
    for (i, (result, want)) in results.into_iter().zip(&expected).enumerate() {
        let got = result?;
        ensure!(
            got == *want,
            "result {i} is id {got}, not the event's id {want}"
        );
    }
    recorder.wait_for_count(expected.len()).await?;
    exactly_once(&*bus, &[&recorder], &expected, "handler").await?;
    ensure!(
        stored_count(&*bus, &event_type).await? == expected.len() as u64,
        "stats do not count the batch"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A batch mixing several types reaches the handlers of each type, each event exactly once.
pub(crate) async fn batch_of_mixed_types(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let type_a = fresh_type("created");
    let type_b = fresh_type("updated");
    let of_a = Recorder::fresh();
    let of_b = Recorder::fresh();
    let of_both = Recorder::fresh();
    subscribe(&*bus, &of_a, [type_a.clone()]).await?;
    subscribe(&*bus, &of_b, [type_b.clone()]).await?;
    subscribe(&*bus, &of_both, [type_a.clone(), type_b.clone()]).await?;
    // A, B, B, A, A, A, B, ...: runs of each type, of changing lengths.
    let events: Vec<Event> = (0..30u64)
        .map(|n| {
            let t = if (n * n / 3) % 2 == 0 {
                &type_a
            } else {
                &type_b
            };
            numbered(t, n)
        })
        .collect();
    let ids_of = |t: &EventType| -> Vec<_> {
        events
            .iter()
            .filter(|e| e.event_type == *t)
            .map(|e| e.id)
            .collect()
    };
    let (ids_a, ids_b) = (ids_of(&type_a), ids_of(&type_b));
    ensure!(
        !ids_a.is_empty() && !ids_b.is_empty(),
        "the batch lacks a type"
    );
    let all: Vec<_> = events.iter().map(|e| e.id).collect();
    let results = bus.publish_batch(events).await;
    for (result, want) in results.into_iter().zip(&all) {
        let got = result?;
        ensure!(
            got == *want,
            "a mixed batch returned {got} in place of {want}"
        );
    }
    of_a.wait_for_count(ids_a.len()).await?;
    of_b.wait_for_count(ids_b.len()).await?;
    of_both.wait_for_count(all.len()).await?;
    let marker_a = publish_marker(&*bus, &type_a).await?;
    let marker_b = publish_marker(&*bus, &type_b).await?;
    of_a.wait_for_event(&marker_a).await?;
    of_b.wait_for_event(&marker_b).await?;
    of_both.wait_for_count(all.len() + 2).await?;
    let with = |ids: &[event_core::EventId], markers: &[event_core::EventId]| -> Vec<_> {
        ids.iter().chain(markers).copied().collect()
    };
    exactly_once(&*bus, &[&of_a], &with(&ids_a, &[marker_a]), "handler of A").await?;
    exactly_once(&*bus, &[&of_b], &with(&ids_b, &[marker_b]), "handler of B").await?;
    exactly_once(
        &*bus,
        &[&of_both],
        &with(&all, &[marker_a, marker_b]),
        "handler of both",
    )
    .await?;
    bus.shutdown().await?;
    Ok(())
}

/// A batch with one oversized event publishes the others and reports that one as `EventTooLarge`.
pub(crate) async fn oversized_batch_event_rejected_alone(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_event_bytes = LIMIT).await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let key = "one-key";
    let big = oversized(&event_type, key)?;
    let mut events: Vec<Event> = (0..4).map(|n| keyed(&event_type, key, n)).collect();
    events.insert(2, big.clone());
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    let results = bus.publish_batch(events).await;
    ensure!(results.len() == 5, "{} results for 5 events", results.len());
    let mut published = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        if i == 2 {
            too_large(result, &big)?;
        } else {
            let id = result?;
            ensure!(id == ids[i], "result {i} is {id}, not {}", ids[i]);
            published.push(id);
        }
    }
    let marker = bus.publish(keyed(&event_type, key, 99)).await?;
    recorder.wait_for_event(&marker).await?;
    published.push(marker);
    exactly_once(&*bus, &[&recorder], &published, "handler").await?;
    let stored = stored_count(&*bus, &event_type).await?;
    ensure!(
        stored == 5,
        "stats count {stored} events, expected the 4 small ones and the marker"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A batch published with `publish_batch_returning` hands back exactly the events it did not take, unchanged, with the reason: the oversized one, and every one after shutdown.
pub(crate) async fn batch_hands_back_what_it_did_not_take(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_event_bytes = LIMIT).await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let big = oversized(&event_type, "k")?;
    let mut events: Vec<Event> = (0..3).map(|n| keyed(&event_type, "k", n)).collect();
    events.insert(1, big.clone());
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    let results = bus.publish_batch_returning(events).await;
    ensure!(results.len() == 4, "{} results for 4 events", results.len());
    let mut published = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(id) if i != 1 => {
                ensure!(id == ids[i], "result {i} is {id}, not {}", ids[i]);
                published.push(id);
            }
            Err(back) if i == 1 => {
                ensure!(back.event == big, "the oversized event came back changed");
                too_large(Err(back.error), &big)?;
            }
            other => anyhow::bail!("result {i} is {other:?}"),
        }
    }
    for id in &published {
        recorder.wait_for_event(id).await?;
    }
    exactly_once(&*bus, &[&recorder], &published, "handler").await?;
    bus.shutdown().await?;
    let after: Vec<Event> = (10..13).map(|n| keyed(&event_type, "k", n)).collect();
    let results = bus.publish_batch_returning(after.clone()).await;
    ensure!(results.len() == 3, "{} results for 3 events", results.len());
    for (result, event) in results.into_iter().zip(&after) {
        match result {
            Err(back) => {
                ensure!(
                    back.event == *event,
                    "an event came back changed after shutdown"
                );
                ensure!(
                    matches!(back.error, Error::ShutDown { .. }),
                    "after shutdown: {}",
                    back.error
                );
            }
            Ok(id) => anyhow::bail!("{id} was published after shutdown"),
        }
    }
    Ok(())
}

/// An oversized single publish fails with `EventTooLarge` and writes nothing.
pub(crate) async fn oversized_publish_writes_nothing(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_event_bytes = LIMIT).await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let big = oversized(&event_type, "k")?;
    too_large(bus.publish(big.clone()).await, &big)?;
    ensure!(
        stored_count(&*bus, &event_type).await? == 0,
        "stats count the refused event"
    );
    // Same key: once the marker is handled, the refused event would have been too.
    let marker = bus.publish(keyed(&event_type, "k", 1)).await?;
    recorder.wait_for_event(&marker).await?;
    ensure!(
        recorder.calls_for(&big.id) == 0 && recorder.calls() == 1,
        "the handler was called {} times, {} of them with the refused event",
        recorder.calls(),
        recorder.calls_for(&big.id)
    );
    bus.shutdown().await?;
    Ok(())
}
