//! Lifecycle: subscribe arguments, unsubscribe and shutdown that drain, and what a closed bus
//! refuses.

use std::time::Duration;

use anyhow::ensure;
use event_core::{Error, EventId, StartFrom, SubscriptionSpec};

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, Step, exactly_once, fresh_handler, fresh_type, numbered, publish_all,
    publish_marker, stored_count, subscribe, subscribe_spec, wait_until,
};

/// How long the slow handler of the drain trials works on its event.
const SLOW: Duration = Duration::from_millis(300);

/// A handler that works [`SLOW`] on every event but markers.
fn slow_handler(name: &str) -> std::sync::Arc<Recorder> {
    Recorder::scripted(name, |e, _| {
        if e.payload.contains_key("marker") {
            Step::Succeed
        } else {
            Step::Work(SLOW)
        }
    })
}

fn is_shut_down<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::ShutDown { .. }))
}

/// Shutdown waits for a handler already running, which finishes and is not delivered again.
pub(crate) async fn shutdown_waits_for_in_flight(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let slow = slow_handler(&name);
    subscribe(&*bus, &slow, [event_type.clone()]).await?;
    let id = bus.publish(numbered(&event_type, 0)).await?;
    wait_until(DEADLINE, "the slow handler started", || slow.calls() >= 1).await?;
    bus.shutdown().await?;
    ensure!(
        slow.has_handled(&id),
        "shutdown returned before the running handler finished"
    );
    ensure!(slow.calls_for(&id) == 1, "the event was delivered twice");
    let after = bus.publish(numbered(&event_type, 1)).await;
    ensure!(
        is_shut_down(&after),
        "publish after shutdown gave {after:?}"
    );

    // The same handler on a new bus of the same backend: the event was acknowledged, so its
    // group does not get it again.
    let bus = fx.bus().await?;
    let again = Recorder::new(&name);
    subscribe(&*bus, &again, [event_type.clone()]).await?;
    let marker = publish_marker(&*bus, &event_type).await?;
    again.wait_for_event(&marker).await?;
    ensure!(
        again.calls_for(&id) == 0,
        "the event finished during shutdown was delivered again"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Shutdown and unsubscribe that run at the same time both wait for the handler already running.
pub(crate) async fn concurrent_stops_all_wait_for_in_flight(fx: &Fixture) -> anyhow::Result<()> {
    // Each order of the two calls, and two shutdowns at once.
    for round in 0..3 {
        let bus = fx.bus().await?;
        let event_type = fresh_type("created");
        let slow = slow_handler(&fresh_handler());
        let subscription = subscribe(&*bus, &slow, [event_type.clone()]).await?;
        let id = bus.publish(numbered(&event_type, 0)).await?;
        wait_until(DEADLINE, "the slow handler started", || slow.calls() >= 1).await?;
        let unsubscribe = async {
            subscription.unsubscribe().await?;
            anyhow::Ok(("unsubscribe", slow.has_handled(&id)))
        };
        let shutdown = async {
            bus.shutdown().await?;
            anyhow::Ok(("shutdown", slow.has_handled(&id)))
        };
        let shutdown_again = async {
            bus.shutdown().await?;
            anyhow::Ok(("a second shutdown", slow.has_handled(&id)))
        };
        // `join!` starts its futures in order, so the first one begins stopping first.
        let (first, second) = match round {
            0 => tokio::join!(unsubscribe, shutdown),
            1 => {
                let (b, a) = tokio::join!(shutdown, unsubscribe);
                (a, b)
            }
            _ => tokio::join!(shutdown, shutdown_again),
        };
        for (call, finished) in [first?, second?] {
            ensure!(
                finished,
                "{call} returned before the running handler finished (round {round})"
            );
        }
    }
    Ok(())
}

/// Shutdown gives up on a handler that outlasts `EVENT_SHUTDOWN_TIMEOUT_MS`, and leaves its event unacknowledged.
pub(crate) async fn shutdown_is_bounded_by_timeout(fx: &Fixture) -> anyhow::Result<()> {
    let settings = |c: &mut event_core::Config| {
        c.shutdown_timeout = Duration::from_millis(200);
        c.claim_idle = Duration::from_millis(100);
    };
    let bus = fx.bus_with(settings).await?;
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let stuck = Recorder::scripted(&name, |e, _| {
        if e.payload.contains_key("marker") {
            Step::Succeed
        } else {
            Step::Work(Duration::from_secs(60))
        }
    });
    subscribe(&*bus, &stuck, [event_type.clone()]).await?;
    let id = bus.publish(numbered(&event_type, 0)).await?;
    wait_until(DEADLINE, "the stuck handler started", || stuck.calls() >= 1).await?;
    let started = std::time::Instant::now();
    bus.shutdown().await?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(10),
        "shutdown took {took:?} with EVENT_SHUTDOWN_TIMEOUT_MS=200 and a handler that needs 60 s"
    );
    ensure!(
        !stuck.has_handled(&id),
        "the stuck handler finished somehow"
    );
    if fx.capabilities.persistent {
        // Nothing half-done was acknowledged: the handler's group gets the event again.
        let bus = fx.bus_with(settings).await?;
        let again = Recorder::new(&name);
        subscribe(&*bus, &again, [event_type.clone()]).await?;
        again.wait_for_event(&id).await?;
        bus.shutdown().await?;
    }
    Ok(())
}

/// After shutdown, publish, batch publish and subscribe fail with `ShutDown`; shutting down again is harmless.
pub(crate) async fn closed_bus_refuses_work(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    bus.shutdown().await?;
    let result = bus.publish(numbered(&event_type, 0)).await;
    ensure!(
        is_shut_down(&result),
        "publish after shutdown gave {result:?}"
    );
    let results = bus
        .publish_batch(vec![numbered(&event_type, 1), numbered(&event_type, 2)])
        .await;
    ensure!(
        results.len() == 2 && results.iter().all(is_shut_down),
        "batch publish after shutdown gave {results:?}"
    );
    let recorder = Recorder::fresh();
    let result = subscribe(&*bus, &recorder, [event_type.clone()]).await;
    let refused = match &result {
        Ok(_) => false,
        Err(e) => matches!(e.downcast_ref::<Error>(), Some(Error::ShutDown { .. })),
    };
    ensure!(refused, "subscribe after shutdown gave {result:?}");
    bus.shutdown().await?;
    Ok(())
}

/// Subscriptions are active until the bus shuts down, and inactive after.
pub(crate) async fn subscriptions_inactive_after_shutdown(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let one = Recorder::fresh();
    let two = Recorder::fresh();
    let first = subscribe(&*bus, &one, [event_type.clone()]).await?;
    let second = subscribe(&*bus, &two, [event_type.clone()]).await?;
    ensure!(
        first.is_active() && second.is_active(),
        "new subscriptions are not active"
    );
    ensure!(
        first.handler() == one.name() && second.handler() == two.name(),
        "subscriptions name the wrong handlers"
    );
    bus.shutdown().await?;
    ensure!(
        !first.is_active() && !second.is_active(),
        "subscriptions are still active after shutdown"
    );
    Ok(())
}

/// Unsubscribe waits for a handler already running; the finished event is not delivered again.
pub(crate) async fn unsubscribe_waits_for_in_flight(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let slow = slow_handler(&fresh_handler());
    let subscription = subscribe(&*bus, &slow, [event_type.clone()]).await?;
    let id = bus.publish(numbered(&event_type, 0)).await?;
    wait_until(DEADLINE, "the slow handler started", || slow.calls() >= 1).await?;
    subscription.unsubscribe().await?;
    ensure!(
        slow.has_handled(&id),
        "unsubscribe returned before the running handler finished"
    );
    subscribe(&*bus, &slow, [event_type.clone()]).await?;
    let marker = publish_marker(&*bus, &event_type).await?;
    slow.wait_for_event(&marker).await?;
    exactly_once(&*bus, &[&slow], &[id, marker], "resubscribed handler").await?;
    bus.shutdown().await?;
    Ok(())
}

/// Subscribe refuses a spec with no types, a bad handler name or a concurrency out of range.
pub(crate) async fn subscribe_rejects_bad_spec(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let bad = [
        ("no event types", SubscriptionSpec::new(name.clone(), [])),
        (
            "a handler name with upper case and a space",
            SubscriptionSpec::new("Bad Name", [event_type.clone()]),
        ),
        (
            "concurrency 0",
            SubscriptionSpec::new(name.clone(), [event_type.clone()]).concurrency(0),
        ),
        (
            "concurrency 5000",
            SubscriptionSpec::new(name.clone(), [event_type.clone()]).concurrency(5000),
        ),
    ];
    for (what, spec) in bad {
        let recorder = Recorder::new(&spec.handler);
        let result = subscribe_spec(&*bus, &recorder, spec).await;
        let refused = match &result {
            Ok(_) => false,
            Err(e) => matches!(e.downcast_ref::<Error>(), Some(Error::InvalidArgument(_))),
        };
        ensure!(
            refused,
            "a spec with {what} was not refused with InvalidArgument: {result:?}"
        );
    }
    bus.shutdown().await?;
    Ok(())
}

/// A restarted bus keeps the events and each group's position: a handler resumes where it stopped.
pub(crate) async fn restart_keeps_events_and_positions(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let before = Recorder::new(&name);
    subscribe(&*bus, &before, [event_type.clone()]).await?;
    let old = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    before.wait_for_count(old.len()).await?;
    bus.shutdown().await?;

    let bus = fx.bus().await?;
    let kept = stored_count(&*bus, &event_type).await?;
    ensure!(
        kept == 5,
        "the restarted bus counts {kept} events, expected 5"
    );
    let after = Recorder::new(&name);
    // The group exists, so `Earliest` does not apply: it resumes from its own position.
    subscribe_spec(
        &*bus,
        &after,
        SubscriptionSpec::new(name.clone(), [event_type.clone()]).start_from(StartFrom::Earliest),
    )
    .await?;
    let mut ids: Vec<EventId> =
        publish_all(&*bus, (5..8).map(|n| numbered(&event_type, n))).await?;
    ids.push(publish_marker(&*bus, &event_type).await?);
    after.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&after], &ids, "handler after the restart").await?;
    bus.shutdown().await?;
    Ok(())
}
