//! Consumer loops under load and under failure: a handler on several types whose backlogs
//! are bigger than every read, and a loop that dies and must be restarted and reported.

use anyhow::ensure;
use event_core::{Event, EventBus, EventId, EventType, HealthStatus};

use crate::fixture::Fixture;
use crate::support::{DEADLINE, Recorder, exactly_once, fresh_type, keyed, subscribe, wait_until};

/// Events per type in each trial's backlog: more than three reads of the default
/// `EVENT_BATCH_SIZE` (100), and together more than a dispatcher's 1,024 places in flight.
const BACKLOG_PER_TYPE: u64 = 437;

/// Publishes `BACKLOG_PER_TYPE` keyed events of each type in batches; returns their ids.
async fn publish_backlogs(bus: &dyn EventBus, types: &[EventType]) -> anyhow::Result<Vec<EventId>> {
    let mut ids = Vec::new();
    for event_type in types {
        let events: Vec<Event> = (0..BACKLOG_PER_TYPE)
            .map(|n| keyed(event_type, &format!("k{}", n % 17), n))
            .collect();
        for chunk in events.chunks(150) {
            for result in bus.publish_batch(chunk.to_vec()).await {
                ids.push(result?);
            }
        }
    }
    Ok(ids)
}

/// Waits until the recorder has handled `ids.len()` events and its lag is gone, then checks
/// each was handled exactly once, so late duplicates are counted too.
async fn handled_exactly_once(
    bus: &dyn EventBus,
    recorder: &Recorder,
    ids: &[EventId],
) -> anyhow::Result<()> {
    wait_until(
        DEADLINE * 3,
        &format!("the handler handled {} backlogged events", ids.len()),
        || recorder.handled_count() >= ids.len(),
    )
    .await?;
    // Waits for lag and pending 0 and a quiet settle period before counting.
    exactly_once(bus, &[recorder], ids, recorder.name()).await
}

/// A handler on three types, each with a backlog of several batches, handles every event once.
pub(crate) async fn backlogs_of_several_types_bigger_than_a_batch(
    fx: &Fixture,
) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let types = [fresh_type("one"), fresh_type("two"), fresh_type("three")];
    let recorder = Recorder::fresh();
    // The groups start at the beginning of each type: the backlog is theirs.
    subscribe(&*bus, &recorder, types.clone())
        .await?
        .unsubscribe()
        .await?;
    let ids = publish_backlogs(&*bus, &types).await?;
    subscribe(&*bus, &recorder, types.clone()).await?;
    handled_exactly_once(&*bus, &recorder, &ids).await?;
    bus.shutdown().await?;
    Ok(())
}

/// A consumer loop that panics is restarted: every event is still handled, and health says a loop failed.
pub(crate) async fn a_failed_loop_is_restarted_and_reported(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let types = [fresh_type("one"), fresh_type("two")];
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, types.clone())
        .await?
        .unsubscribe()
        .await?;
    let ids = publish_backlogs(&*bus, &types).await?;
    event_core::fault::panic_loop_once(recorder.name());
    let outcome = async {
        subscribe(&*bus, &recorder, types.clone()).await?;
        handled_exactly_once(&*bus, &recorder, &ids).await
    }
    .await;
    event_core::fault::clear(recorder.name());
    outcome?;
    let health = bus.health().await;
    let consumer = health
        .consumers
        .iter()
        .find(|c| c.handler == recorder.name());
    ensure!(
        consumer.is_some_and(|c| c.alive && c.loop_failures >= 1),
        "health does not report the restarted loop: {consumer:?}"
    );
    ensure!(
        health.status == HealthStatus::Degraded
            && health.problems.iter().any(|p| p.contains(recorder.name())),
        "health should be degraded and name the handler whose loop failed: {health:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
