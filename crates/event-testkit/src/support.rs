//! What the trials share: fresh names, events, a recording handler with scripted failures,
//! and waiting on a condition with a deadline.

mod recorder;

pub(crate) use recorder::{Recorder, Step};

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use event_core::{
    DeadLetter, Event, EventBus, EventHandler, EventId, EventType, ReplayQuery, Subscription,
    SubscriptionSpec,
};
use futures::TryStreamExt as _;
use time::OffsetDateTime;

/// How long a trial waits for something that should happen. Generous, so slow CI backends
/// pass; on memory every wait ends in milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The source every trial's events name.
pub(crate) const SOURCE: &str = "event_testkit";

fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A fresh custom event type, `t{random}.{verb}`, so trials never see each other's events.
pub(crate) fn fresh_type(verb: &str) -> EventType {
    EventType::new(format!("t{}.{verb}", random_suffix()))
        .unwrap_or_else(|e| panic!("a generated event type is valid: {e}"))
}

/// A fresh handler name, `h{random}`, so every trial has its own consumer groups.
pub(crate) fn fresh_handler() -> String {
    format!("h{}", random_suffix())
}

/// An event of `event_type` whose payload is `{"n": n}`.
pub(crate) fn numbered(event_type: &EventType, n: u64) -> Event {
    Event::builder(event_type.clone(), SOURCE)
        .field("n", n)
        .build()
        .unwrap_or_else(|e| panic!("a numbered event is valid: {e}"))
}

/// An event of `event_type` with partition key `key` and payload `{"key": key, "n": n}`.
pub(crate) fn keyed(event_type: &EventType, key: &str, n: u64) -> Event {
    Event::builder(event_type.clone(), SOURCE)
        .field("key", key)
        .field("n", n)
        .partition_key(key)
        .build()
        .unwrap_or_else(|e| panic!("a keyed event is valid: {e}"))
}

/// An event of `event_type` at a given time, with payload `{"n": n}`.
pub(crate) fn numbered_at(event_type: &EventType, n: u64, at: OffsetDateTime) -> Event {
    Event::builder(event_type.clone(), SOURCE)
        .field("n", n)
        .timestamp(at)
        .build()
        .unwrap_or_else(|e| panic!("a numbered event is valid: {e}"))
}

/// The `n` of an event made by [`numbered`] or [`keyed`].
pub(crate) fn n_of(event: &Event) -> u64 {
    event
        .payload
        .get("n")
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::MAX)
}

/// Publishes a marker event: once a handler has it, it has had every earlier event of its
/// type with the same ordering (used to show that something did *not* happen).
pub(crate) async fn publish_marker(
    bus: &dyn EventBus,
    event_type: &EventType,
) -> anyhow::Result<EventId> {
    let marker = Event::builder(event_type.clone(), SOURCE)
        .field("marker", true)
        .build()?;
    Ok(bus.publish(marker).await?)
}

/// Publishes events one by one, in order; returns their ids.
pub(crate) async fn publish_all(
    bus: &dyn EventBus,
    events: impl IntoIterator<Item = Event>,
) -> anyhow::Result<Vec<EventId>> {
    let mut ids = Vec::new();
    for event in events {
        ids.push(bus.publish(event).await?);
    }
    Ok(ids)
}

/// Publishes `events` with `publish_batch`, `size` at a time; returns their ids.
pub(crate) async fn publish_batches(
    bus: &dyn EventBus,
    events: &[Event],
    size: usize,
) -> anyhow::Result<Vec<EventId>> {
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(size) {
        for result in bus.publish_batch(chunk.to_vec()).await {
            ids.push(result?);
        }
    }
    Ok(ids)
}

/// Subscribes a recorder to `event_types` with the default spec.
pub(crate) async fn subscribe(
    bus: &dyn EventBus,
    recorder: &Arc<Recorder>,
    event_types: impl IntoIterator<Item = EventType>,
) -> anyhow::Result<Subscription> {
    subscribe_spec(
        bus,
        recorder,
        SubscriptionSpec::new(recorder.name(), event_types),
    )
    .await
}

/// Subscribes a recorder with a spec.
pub(crate) async fn subscribe_spec(
    bus: &dyn EventBus,
    recorder: &Arc<Recorder>,
    spec: SubscriptionSpec,
) -> anyhow::Result<Subscription> {
    let handler: Arc<dyn EventHandler> = recorder.clone();
    bus.subscribe(spec, handler)
        .await
        .with_context(|| format!("subscribing {}", recorder.name()))
}

/// How many retained events of `event_type` the bus's stats count.
pub(crate) async fn stored_count(
    bus: &dyn EventBus,
    event_type: &EventType,
) -> anyhow::Result<u64> {
    Ok(bus
        .stats()
        .await?
        .events_by_type
        .get(event_type.as_str())
        .copied()
        .unwrap_or(0))
}

/// Every event a replay query returns, in the order returned.
pub(crate) async fn replay_all(
    bus: &dyn EventBus,
    query: ReplayQuery,
) -> anyhow::Result<Vec<Event>> {
    let stream = bus.replay(query).await?;
    Ok(stream.try_collect().await?)
}

/// Waits until `condition` holds, checking every few milliseconds, for at most `timeout`.
///
/// # Errors
/// When the deadline passes first, naming `what` was awaited.
pub(crate) async fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("gave up after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Like [`wait_until`] for a condition that must ask the bus (stats, replay, dead letters).
pub(crate) async fn wait_for<F, Fut>(
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("gave up after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the handler has at least `n` dead letters, and returns them (oldest first).
pub(crate) async fn wait_for_dead_letters(
    bus: &dyn EventBus,
    handler: &str,
    n: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let letters = bus.dead_letters(handler, 1000).await?;
        if letters.len() >= n {
            return Ok(letters);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "gave up after {DEADLINE:?} waiting for {n} dead letters of {handler}; there are {}",
                letters.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long a handler must stay quiet before its calls are counted: by the bus's stats no
/// lag, nothing pending and no counter moving, and no new call of the recorders.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);

/// Waits for quiescence, then checks that the recorders together handled every id in `ids`
/// exactly once and nothing else. Counting as soon as the expected number arrived would miss
/// duplicates that come later (a redelivery after a lost acknowledgement, a claim of an entry
/// already handled), so the count waits until, by the bus's own stats, each recorder's
/// handler has lag 0 and nothing pending (or no subscription on this bus), and neither those
/// stats nor the recorders' calls change for [`SETTLE`], with no call in progress.
pub(crate) async fn exactly_once<R: AsRef<Recorder>>(
    bus: &dyn EventBus,
    recorders: &[R],
    ids: &[EventId],
    who: &str,
) -> anyhow::Result<()> {
    let recorders: Vec<&Recorder> = recorders.iter().map(AsRef::as_ref).collect();
    settle(bus, &recorders)
        .await
        .with_context(|| format!("{who}: waiting for quiescence before counting"))?;
    let seen: Vec<EventId> = recorders.iter().flat_map(|r| r.handled_ids()).collect();
    counted_once(&seen, ids, who)
}

/// Waits until the recorders' handlers are quiet (see [`exactly_once`]), for at most
/// [`DEADLINE`].
async fn settle(bus: &dyn EventBus, recorders: &[&Recorder]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last: Option<(Vec<u64>, Vec<usize>)> = None;
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let stats = bus.stats().await?;
        let mut busy = Vec::new();
        let mut counters = Vec::new();
        for r in recorders {
            if let Some(h) = stats.handlers.get(r.name()) {
                if (h.lag > 0 || h.pending > 0) && h.subscriptions > 0 {
                    busy.push(format!(
                        "{}: lag {}, pending {}",
                        r.name(),
                        h.lag,
                        h.pending
                    ));
                }
                counters.extend([h.processed, h.failed, h.dead_lettered, h.lag, h.pending]);
            }
        }
        let in_flight: usize = recorders.iter().map(|r| r.in_flight()).sum();
        if in_flight > 0 {
            busy.push(format!("{in_flight} handler calls in progress"));
        }
        let calls: Vec<usize> = recorders.iter().map(|r| r.calls()).collect();
        let now = Some((counters, calls));
        if !busy.is_empty() || now != last {
            last = now;
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= SETTLE {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "still busy after {DEADLINE:?}: {}",
                if busy.is_empty() {
                    "calls kept coming".to_string()
                } else {
                    busy.join("; ")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that every id in `ids` occurs exactly once in `seen`, and nothing else does.
fn counted_once(seen: &[EventId], ids: &[EventId], who: &str) -> anyhow::Result<()> {
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for id in seen {
        *counts.entry(*id).or_default() += 1;
    }
    let missing = ids.iter().filter(|id| !counts.contains_key(id)).count();
    let twice = counts.values().filter(|n| **n > 1).count();
    let expected: std::collections::HashSet<&EventId> = ids.iter().collect();
    let foreign = counts.keys().filter(|id| !expected.contains(id)).count();
    ensure!(
        missing == 0 && twice == 0 && foreign == 0,
        "{who}: of {} events, {missing} never arrived, {twice} arrived more than once, and {foreign} unexpected events arrived ({} deliveries in all)",
        ids.len(),
        seen.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use event_core::{Config, MemoryBus};
    use tokio::sync::Semaphore;

    use super::*;

    /// A duplicate that arrives after the expected count is still counted: `exactly_once`
    /// waits for quiescence (no call in progress, nothing changing) instead of counting as
    /// soon as the count is reached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_duplicate_is_counted() -> anyhow::Result<()> {
        let bus = MemoryBus::new(Config::default())?;
        let event_type = fresh_type("created");
        let gate = Arc::new(Semaphore::new(0));
        let held = gate.clone();
        // The second call of an event (the duplicate) waits at the gate.
        let recorder = Recorder::scripted(&fresh_handler(), move |_, attempt| {
            if attempt >= 2 {
                Step::Gate(held.clone())
            } else {
                Step::Succeed
            }
        });
        subscribe(&bus, &recorder, [event_type.clone()]).await?;
        let ids = publish_all(&bus, (0..3).map(|n| numbered(&event_type, n))).await?;
        recorder.wait_for_count(3).await?;
        // A redelivery the bus makes once everything was handled (here made by hand).
        let late = recorder.handled()[0].clone();
        let again = recorder.clone();
        tokio::spawn(async move {
            let _ = EventHandler::handle(&*again, &late).await;
        });
        wait_until(DEADLINE, "the duplicate call started", || {
            recorder.calls() == 4
        })
        .await?;
        let opener = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE * 2).await;
            opener.add_permits(1);
        });
        let outcome = exactly_once(&bus, &[&recorder], &ids, "handler").await;
        let error = outcome.err().context("the late duplicate went unnoticed")?;
        ensure!(
            error.to_string().contains("1 arrived more than once"),
            "{error}"
        );
        bus.shutdown().await?;
        Ok(())
    }
}
