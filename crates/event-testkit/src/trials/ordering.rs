//! Order and concurrency: per-key order, bounded concurrency, retries that stall no one else.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{EventBus, EventId, EventType, SubscriptionSpec};

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, Step, exactly_once, fresh_handler, fresh_type, keyed, n_of, numbered,
    publish_all, publish_batches, subscribe_spec, wait_until,
};

/// With concurrency 16, events of each partition key reach the handler in publish order.
pub(crate) async fn per_key_order(fx: &Fixture) -> anyhow::Result<()> {
    const KEYS: usize = 64;
    const PER_KEY: u64 = 40;
    const PUBLISHERS: usize = 16;
    let bus = fx.bus().await?;
    let event_type = fresh_type("updated");
    let recorder = shuffling_recorder(&*bus, &event_type).await?;
    // Each publisher owns some keys and publishes their events in order, interleaved; the
    // publishers run at the same time.
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let bus: Arc<dyn EventBus> = bus.clone();
            let event_type = event_type.clone();
            tokio::spawn(async move {
                let keys: Vec<String> = (p..KEYS)
                    .step_by(PUBLISHERS)
                    .map(|k| format!("key-{k}"))
                    .collect();
                let mut ids = Vec::new();
                for n in 0..PER_KEY {
                    for key in &keys {
                        ids.push(bus.publish(keyed(&event_type, key, n)).await?);
                    }
                }
                anyhow::Ok(ids)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for publisher in publishers {
        ids.extend(publisher.await.context("a publisher task panicked")??);
    }
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler").await?;
    in_key_order(&recorder, KEYS, PER_KEY)?;
    ensure!(
        recorder.max_in_flight() > 1,
        "the handler never ran two events at once with concurrency 16"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Events of 64 keys published in batches of 480, several of each key per batch, reach the handler in batch order per key.
pub(crate) async fn per_key_order_in_batches(fx: &Fixture) -> anyhow::Result<()> {
    const KEYS: usize = 64;
    const PER_KEY: u64 = 30;
    const BATCH: usize = 480;
    let bus = fx.bus().await?;
    let event_type = fresh_type("updated");
    let recorder = shuffling_recorder(&*bus, &event_type).await?;
    // Key by key within each round of numbers: a batch holds 7 or 8 events of every key.
    let events: Vec<_> = (0..PER_KEY)
        .flat_map(|n| (0..KEYS).map(move |k| (n, format!("key-{k}"))))
        .map(|(n, key)| keyed(&event_type, &key, n))
        .collect();
    let ids = publish_batches(&*bus, &events, BATCH).await?;
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler").await?;
    in_key_order(&recorder, KEYS, PER_KEY)?;
    bus.shutdown().await?;
    Ok(())
}

/// A recorder of `event_type` with concurrency 16, whose random yields shuffle how the lanes
/// interleave.
async fn shuffling_recorder(
    bus: &dyn EventBus,
    event_type: &EventType,
) -> anyhow::Result<Arc<Recorder>> {
    let recorder = Recorder::scripted(&fresh_handler(), |_, _| Step::Yield(fastrand::u32(0..4)));
    subscribe_spec(
        bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).concurrency(16),
    )
    .await?;
    Ok(recorder)
}

/// Checks that the recorder handled numbers `0..per_key` of each of `keys` keys in order.
fn in_key_order(recorder: &Recorder, keys: usize, per_key: u64) -> anyhow::Result<()> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in recorder.handled() {
        by_key
            .entry(event.partition_key.clone().unwrap_or_default())
            .or_default()
            .push(n_of(&event));
    }
    ensure!(
        by_key.len() == keys,
        "events of {} keys arrived, not {keys}",
        by_key.len()
    );
    let expected: Vec<u64> = (0..per_key).collect();
    for (key, seen) in &by_key {
        ensure!(
            *seen == expected,
            "events of {key} arrived in the order {seen:?}, not in publish order"
        );
    }
    Ok(())
}

/// At most `concurrency` handler calls run at once, and more than one does.
pub(crate) async fn concurrency_is_bounded(fx: &Fixture) -> anyhow::Result<()> {
    const CONCURRENCY: usize = 4;
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |_, _| {
        Step::Work(Duration::from_millis(3))
    });
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).concurrency(CONCURRENCY),
    )
    .await?;
    let events: Vec<_> = (0..200).map(|n| numbered(&event_type, n)).collect();
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    for result in bus.publish_batch(events).await {
        result?;
    }
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler").await?;
    let max = recorder.max_in_flight();
    ensure!(
        max <= CONCURRENCY,
        "{max} handler calls ran at once with concurrency {CONCURRENCY}"
    );
    ensure!(
        max > 1,
        "handler calls never overlapped with concurrency {CONCURRENCY}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Without a concurrency in the spec, `EVENT_HANDLER_CONCURRENCY` bounds the handler calls at once.
pub(crate) async fn concurrency_defaults_to_config(fx: &Fixture) -> anyhow::Result<()> {
    const CONCURRENCY: usize = 2;
    let bus = fx.bus_with(|c| c.handler_concurrency = CONCURRENCY).await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |_, _| {
        Step::Work(Duration::from_millis(2))
    });
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]),
    )
    .await?;
    let events: Vec<_> = (0..100).map(|n| numbered(&event_type, n)).collect();
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    for result in bus.publish_batch(events).await {
        result?;
    }
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler").await?;
    let max = recorder.max_in_flight();
    ensure!(
        max == CONCURRENCY,
        "{max} handler calls ran at once with EVENT_HANDLER_CONCURRENCY={CONCURRENCY}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A key waiting for a retry does not hold up other keys, even on one lane, and keeps its own order.
pub(crate) async fn retry_does_not_stall_other_keys(fx: &Fixture) -> anyhow::Result<()> {
    // Key-a's first event fails, and its retries keep failing until every one of key-b's
    // events has reached the handler: if key-b waited behind key-a, that would never happen
    // and the trial fails at its deadline. No timing bound (a slow machine or cluster cannot
    // fail it), and nothing blocks the one lane.
    let bus = fx
        .bus_with(|c| {
            // 100 retries 200 ms apart outlast the trial's deadline.
            c.retry_base = Duration::from_millis(200);
            c.retry_max = Duration::from_millis(200);
            c.max_retries = 100;
        })
        .await?;
    let event_type = fresh_type("updated");
    let slow = keyed(&event_type, "key-a", 0);
    let slow_id = slow.id;
    let behind = keyed(&event_type, "key-a", 1);
    let others: Vec<_> = (0..20).map(|n| keyed(&event_type, "key-b", n)).collect();
    let other_ids: HashSet<EventId> = others.iter().map(|e| e.id).collect();
    let reached = Arc::new(Mutex::new(HashSet::new()));
    let seen = reached.clone();
    let recorder = Recorder::scripted(&fresh_handler(), move |event, attempt| {
        let mut seen = seen.lock().unwrap();
        if other_ids.contains(&event.id) {
            seen.insert(event.id);
        }
        match (event.id == slow_id, attempt) {
            (true, 1) => Step::Transient,
            (true, _) if seen.len() < other_ids.len() => Step::Transient,
            _ => Step::Succeed,
        }
    });
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).concurrency(1),
    )
    .await?;
    let mut ids = publish_all(&*bus, [slow, behind.clone()]).await?;
    ids.extend(publish_all(&*bus, others.clone()).await?);
    wait_until(
        DEADLINE,
        "key-b's events handled while key-a's first event waits for its retries",
        || others.iter().all(|e| recorder.has_handled(&e.id)),
    )
    .await?;
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler").await?;
    let order = recorder.handled_ids();
    let position = |id| order.iter().position(|x| *x == id).unwrap_or(usize::MAX);
    ensure!(
        position(behind.id) > position(slow_id),
        "key-a's second event overtook its first while the first waited for a retry"
    );
    let slow_calls = recorder.calls_for(&slow_id) as usize;
    ensure!(
        slow_calls >= 2,
        "the failing event was tried {slow_calls} times, expected a retry at least"
    );
    ensure!(
        recorder.calls() == ids.len() + slow_calls - 1,
        "{} handler calls for {} events and {} retries",
        recorder.calls(),
        ids.len(),
        slow_calls - 1
    );
    bus.shutdown().await?;
    Ok(())
}
