//! Replay: retained events by time window, in timestamp order, without moving any group.

use anyhow::ensure;
use event_core::{Error, Event, EventId, EventType, ReplayQuery, replay_into};
use time::{Duration, OffsetDateTime};

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, Step, exactly_once, fresh_handler, fresh_type, n_of, numbered_at,
    publish_all, publish_marker, replay_all, subscribe, wait_for,
};

/// `count` events of `event_type` 10 ms apart, starting 10 s ago, with `n` = their index.
fn spaced(event_type: &EventType, count: u64) -> Vec<Event> {
    let base = OffsetDateTime::now_utc() - Duration::seconds(10);
    (0..count)
        .map(|n| numbered_at(event_type, n, base + Duration::milliseconds(10 * n as i64)))
        .collect()
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

fn ns(events: &[Event]) -> Vec<u64> {
    events.iter().map(n_of).collect()
}

/// Replay from T returns exactly the events at or after T, in timestamp order, and leaves live handlers alone.
pub(crate) async fn since_time_exact_and_ordered(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let live = Recorder::fresh();
    subscribe(&*bus, &live, [event_type.clone()]).await?;
    let events = spaced(&event_type, 20);
    publish_all(&*bus, events.clone()).await?;
    live.wait_for_count(events.len()).await?;

    let from = events[7].timestamp;
    let replayed = replay_all(&*bus, ReplayQuery::new([event_type.clone()], from)).await?;
    ensure!(
        ids(&replayed) == ids(&events[7..]),
        "replay from the 8th event's time returned events {:?}, expected 7 to 19",
        ns(&replayed)
    );
    ensure!(
        replayed == events[7..],
        "replayed events differ from the published ones"
    );

    // Replay moved no consumer group: the live handler gets the marker and nothing again.
    let marker = publish_marker(&*bus, &event_type).await?;
    live.wait_for_event(&marker).await?;
    let mut expected = ids(&events);
    expected.push(marker);
    exactly_once(&*bus, &[&live], &expected, "live handler").await?;
    let name = live.name().to_string();
    let bus_ref = &*bus;
    wait_for(
        DEADLINE,
        "stats count the live handler's 21 events",
        move || {
            let name = name.clone();
            async move {
                let stats = bus_ref.stats().await?;
                Ok(stats.handlers.get(&name).is_some_and(|h| h.processed >= 21))
            }
        },
    )
    .await?;
    let processed = bus.stats().await?.handlers[live.name()].processed;
    ensure!(
        processed == 21,
        "the live handler processed {processed} events, expected 21: replay disturbed it"
    );
    ensure!(
        live.calls() == 21,
        "the live handler was called {} times",
        live.calls()
    );
    bus.shutdown().await?;
    Ok(())
}

/// Replay stops before `to` (exclusive) and returns at most `limit` events, the earliest ones.
pub(crate) async fn window_to_and_limit(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let events = spaced(&event_type, 20);
    publish_all(&*bus, events.clone()).await?;
    let (from, to) = (events[7].timestamp, events[12].timestamp);
    let query = || ReplayQuery::new([event_type.clone()], from);

    let got = replay_all(&*bus, query().to(to)).await?;
    ensure!(
        ids(&got) == ids(&events[7..12]),
        "replay of [7th, 12th) returned {:?}",
        ns(&got)
    );
    let got = replay_all(&*bus, query().limit(3)).await?;
    ensure!(
        ids(&got) == ids(&events[7..10]),
        "replay with limit 3 returned {:?}",
        ns(&got)
    );
    let got = replay_all(&*bus, query().to(to).limit(100)).await?;
    ensure!(
        ids(&got) == ids(&events[7..12]),
        "replay with a window and a large limit returned {:?}",
        ns(&got)
    );
    let got = replay_all(&*bus, query().to(from)).await?;
    ensure!(got.is_empty(), "an empty window returned {:?}", ns(&got));
    bus.shutdown().await?;
    Ok(())
}

/// Replay of several types merges them by timestamp, also when each type was published separately.
pub(crate) async fn merges_types_by_timestamp(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let types = [
        fresh_type("created"),
        fresh_type("updated"),
        fresh_type("deleted"),
    ];
    let base = OffsetDateTime::now_utc() - Duration::seconds(10);
    let events: Vec<Event> = (0..30u64)
        .map(|n| {
            let at = base + Duration::milliseconds(10 * n as i64);
            numbered_at(&types[(n % 3) as usize], n, at)
        })
        .collect();
    // Each type's events go out together, so the log order is not the timestamp order.
    for t in &types {
        let of_type: Vec<Event> = events
            .iter()
            .filter(|e| e.event_type == *t)
            .cloned()
            .collect();
        publish_all(&*bus, of_type).await?;
    }

    let from = events[0].timestamp;
    let got = replay_all(&*bus, ReplayQuery::new(types.clone(), from)).await?;
    ensure!(
        ns(&got) == (0..30).collect::<Vec<_>>(),
        "replay of three types returned {:?}, expected 0 to 29 in order",
        ns(&got)
    );
    // A type named twice is read once.
    let two = [types[0].clone(), types[2].clone(), types[0].clone()];
    let got = replay_all(&*bus, ReplayQuery::new(two, from)).await?;
    let expected: Vec<u64> = (0..30).filter(|n| n % 3 != 1).collect();
    ensure!(
        ns(&got) == expected,
        "replay of two types returned {:?}, expected {expected:?}",
        ns(&got)
    );
    let got = replay_all(
        &*bus,
        ReplayQuery::new(types.clone(), events[10].timestamp).limit(5),
    )
    .await?;
    ensure!(
        ns(&got) == [10, 11, 12, 13, 14],
        "replay of three types from the 11th with limit 5 returned {:?}",
        ns(&got)
    );
    bus.shutdown().await?;
    Ok(())
}

/// Events with the same timestamp replay in id order, across types and whatever the publish order.
pub(crate) async fn ties_ordered_by_id(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let types = [fresh_type("created"), fresh_type("updated")];
    let at = OffsetDateTime::now_utc() - Duration::seconds(10);
    // UUIDv7 ids made in sequence sort in that order.
    let events: Vec<Event> = (0..10u64)
        .map(|n| numbered_at(&types[(n % 2) as usize], n, at))
        .collect();
    let mut sorted = ids(&events);
    sorted.sort();
    for t in &types {
        let mut of_type: Vec<Event> = events
            .iter()
            .filter(|e| e.event_type == *t)
            .cloned()
            .collect();
        of_type.reverse();
        publish_all(&*bus, of_type).await?;
    }
    let got = replay_all(&*bus, ReplayQuery::new(types.clone(), events[0].timestamp)).await?;
    ensure!(
        ids(&got) == sorted,
        "events with one timestamp replayed as {:?}, expected in id order",
        ns(&got)
    );
    bus.shutdown().await?;
    Ok(())
}

/// Replay is refused with `Disabled` when `ENABLE_EVENT_REPLAY=false`.
pub(crate) async fn replay_refused_when_disabled(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.enable_event_replay = false).await?;
    let event_type = fresh_type("created");
    publish_all(&*bus, spaced(&event_type, 3)).await?;
    let from = OffsetDateTime::now_utc() - Duration::minutes(1);
    let result = bus
        .replay(ReplayQuery::new([event_type.clone()], from))
        .await;
    ensure!(
        matches!(
            result,
            Err(Error::Disabled {
                variable: "ENABLE_EVENT_REPLAY",
                ..
            })
        ),
        "replay with ENABLE_EVENT_REPLAY=false gave {}",
        match &result {
            Ok(_) => "a stream of events".to_string(),
            Err(e) => format!("{e:?}"),
        }
    );
    let target = Recorder::fresh();
    let into = replay_into(&*bus, ReplayQuery::new([event_type], from), &*target).await;
    ensure!(
        matches!(into, Err(Error::Disabled { .. })),
        "replay into a handler with ENABLE_EVENT_REPLAY=false gave {into:?}"
    );
    ensure!(target.calls() == 0, "the handler was called");
    bus.shutdown().await?;
    Ok(())
}

/// A window that ends before it starts, or a zero limit, is refused with `InvalidArgument`.
pub(crate) async fn invalid_window_refused(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let now = OffsetDateTime::now_utc();
    let backwards = ReplayQuery::new([event_type.clone()], now).to(now - Duration::seconds(1));
    let result = bus.replay(backwards).await;
    ensure!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "a backwards window was not refused with InvalidArgument"
    );
    let result = bus
        .replay(ReplayQuery::new([event_type], now).limit(0))
        .await;
    ensure!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "a zero limit was not refused with InvalidArgument"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Replay into a handler feeds it the window in timestamp order, reports failures, and moves no group.
pub(crate) async fn replay_into_handler(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let live = Recorder::fresh();
    subscribe(&*bus, &live, [event_type.clone()]).await?;
    let events = spaced(&event_type, 10);
    publish_all(&*bus, events.clone()).await?;
    live.wait_for_count(events.len()).await?;
    let query = ReplayQuery::new([event_type.clone()], events[0].timestamp);

    let target = Recorder::fresh();
    let report = replay_into(&*bus, query.clone(), &*target).await?;
    ensure!(
        report.replayed == 10 && report.handled == 10 && report.failed.is_empty(),
        "replay into a handler reported {report:?}"
    );
    ensure!(
        target.handled_ids() == ids(&events),
        "the handler got {:?}, expected 0 to 9 in order",
        ns(&target.handled())
    );

    let third = events[3].id;
    let picky = Recorder::scripted(&fresh_handler(), move |e, _| {
        if e.id == third {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    let report = replay_into(&*bus, query, &*picky).await?;
    ensure!(
        report.replayed == 10 && report.handled == 9,
        "replay into a failing handler reported {report:?}"
    );
    ensure!(
        report.failed.len() == 1 && report.failed[0].0 == third,
        "replay into a failing handler reported the failures {:?}",
        report.failed
    );

    let marker = publish_marker(&*bus, &event_type).await?;
    live.wait_for_event(&marker).await?;
    let mut expected = ids(&events);
    expected.push(marker);
    exactly_once(&*bus, &[&live], &expected, "live handler").await?;
    bus.shutdown().await?;
    Ok(())
}
