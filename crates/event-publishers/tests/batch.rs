//! `BatchPublisher` on `MemoryBus`: size and timer flushes, one `publish_batch` call per
//! batch, every event's result reported, failures kept or handed back, the scoped form, and
//! the warning on drop.
//!
//! Transient failures come from `FlakyBus`, a real `MemoryBus` behind a wrapper that refuses
//! the events marked `"flaky": true` the first time it sees them (as a broker that drops a
//! connection mid-batch would), and counts `publish_batch` calls.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{
    BusStats, Capabilities, Config, DeadLetter, DeadLetterSelection, Event, EventBus, EventHandler,
    EventId, EventStream, EventType, Health, MemoryBus, RedriveReport, ReplayQuery, Subscription,
    SubscriptionSpec,
};
use event_publishers::{BatchPublisher, BatchSettings, Error, EventPublisher, SignalDetected};
use futures::TryStreamExt;
use serde_json::json;

struct FlakyBus {
    inner: MemoryBus,
    batches: AtomicUsize,
    refused: Mutex<HashSet<EventId>>,
}

impl FlakyBus {
    fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryBus::new(config).unwrap(),
            batches: AtomicUsize::new(0),
            refused: Mutex::new(HashSet::new()),
        })
    }

    fn batches(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventBus for FlakyBus {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn publish(&self, event: Event) -> Result<EventId, event_core::Error> {
        self.inner.publish(event).await
    }
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, event_core::Error>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let mut refused_now = Vec::new();
        let mut passed = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let flaky = event.payload.get("flaky") == Some(&json!(true));
            if flaky && self.refused.lock().unwrap().insert(event.id) {
                refused_now.push(i);
            } else {
                passed.push((i, event));
            }
        }
        let (positions, events): (Vec<usize>, Vec<Event>) = passed.into_iter().unzip();
        let results = self.inner.publish_batch(events).await;
        let mut all: Vec<Option<Result<EventId, event_core::Error>>> = (0..positions.len()
            + refused_now.len())
            .map(|_| None)
            .collect();
        for (position, result) in positions.into_iter().zip(results) {
            all[position] = Some(result);
        }
        for position in refused_now {
            all[position] = Some(Err(event_core::Error::backend(
                "flaky",
                "connection reset",
                true,
            )));
        }
        all.into_iter().map(Option::unwrap).collect()
    }
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, event_core::Error> {
        self.inner.subscribe(spec, handler).await
    }
    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, event_core::Error> {
        self.inner.replay(query).await
    }
    async fn stats(&self) -> Result<BusStats, event_core::Error> {
        self.inner.stats().await
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    async fn dead_letters(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, event_core::Error> {
        self.inner.dead_letters(handler, limit).await
    }
    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, event_core::Error> {
        self.inner.redrive_dead_letters(handler, selection).await
    }
    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, event_core::Error> {
        self.inner.purge_dead_letters(handler, selection).await
    }
    async fn shutdown(&self) -> Result<(), event_core::Error> {
        self.inner.shutdown().await
    }
}

fn signal(i: usize) -> SignalDetected {
    SignalDetected {
        signal_id: format!("signal-{i}"),
        source: "reddit".into(),
        signal_type: "pain_point".into(),
        content: format!("Market signal {i}"),
        confidence: 0.5,
        ..Default::default()
    }
}

fn flaky_signal(i: usize) -> SignalDetected {
    let mut s = signal(i);
    s.extra.insert("flaky".into(), json!(true));
    s
}

/// The signal ids on the bus, in publish order.
async fn published(bus: &dyn EventBus) -> Vec<String> {
    let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let events: Vec<Event> = bus
        .replay(ReplayQuery::new([EventType::SIGNAL_DETECTED], from))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    events
        .iter()
        .map(|e| e.payload["signal_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits for `condition` to hold, failing after a generous deadline.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_full_batch_flushes_in_one_publish_batch_call() {
    let bus = FlakyBus::new(Config::default());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service"),
        BatchSettings::new(10, NEVER),
    );
    for i in 0..25 {
        batch.add(signal(i)).await.unwrap();
    }
    assert_eq!(bus.batches(), 2, "two full batches, one call each");
    assert_eq!(published(bus.as_ref()).await.len(), 20);
    assert_eq!(batch.pending(), 5);

    let report = batch.close().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.published.len(), 5);
    assert_eq!(report.batches, 1);
    assert_eq!(bus.batches(), 3);
    let ids = published(bus.as_ref()).await;
    let expected: Vec<String> = (0..25).map(|i| format!("signal-{i}")).collect();
    assert_eq!(ids, expected, "in order, none lost, none doubled");
}

#[tokio::test]
async fn the_timer_flushes_without_further_events() {
    let bus = Arc::new(MemoryBus::new(Config::default()).unwrap());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service"),
        BatchSettings::new(100, Duration::from_millis(50)),
    );
    for i in 0..3 {
        batch.add(signal(i)).await.unwrap();
    }
    // No more events are added: only the timer can publish these.
    eventually("the timer's flush", || async {
        published(bus.as_ref()).await.len() == 3
    })
    .await;
    assert_eq!(batch.pending(), 0);
    assert!(batch.close().await.is_empty());
}

#[tokio::test]
async fn a_partially_failing_batch_reports_exactly_the_failures_and_keeps_them() {
    // Events over 2 KiB are refused for good (permanent); flaky ones once (transient).
    let config = Config::from_vars([("EVENT_MAX_PAYLOAD_BYTES", "2048")]).unwrap();
    let bus = FlakyBus::new(config);
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service"),
        BatchSettings::new(100, NEVER),
    );
    let mut too_large = signal(2);
    too_large.content = "x".repeat(4000);
    batch.add(signal(0)).await.unwrap();
    batch.add(flaky_signal(1)).await.unwrap();
    batch.add(too_large).await.unwrap();
    batch.add(signal(3)).await.unwrap();
    batch.add(flaky_signal(4)).await.unwrap();

    let report = batch.flush().await;
    assert_eq!(report.batches, 1);
    assert_eq!(report.published.len(), 2);
    assert_eq!(report.retrying.len(), 2, "{report:?}");
    assert!(report.retrying.iter().all(|(_, e)| e.is_transient()));
    assert_eq!(report.failed.len(), 1);
    let handed_back = &report.failed[0];
    assert_eq!(handed_back.event.payload["signal_id"], "signal-2");
    assert!(
        matches!(handed_back.error, event_core::Error::EventTooLarge { .. }),
        "{:?}",
        handed_back.error
    );
    assert_eq!(published(bus.as_ref()).await, ["signal-0", "signal-3"]);
    assert_eq!(batch.pending(), 2, "the transient failures are kept");

    // The next flush sends exactly the kept events, in their order.
    let report = batch.flush().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.published.len(), 2);
    // Replay orders by event time: the retried events kept theirs, and no event was lost or
    // published twice.
    assert_eq!(
        published(bus.as_ref()).await,
        ["signal-0", "signal-1", "signal-3", "signal-4"]
    );
    assert!(batch.close().await.is_empty());
}

#[tokio::test]
async fn close_hands_back_what_still_fails() {
    let bus = FlakyBus::new(Config::default());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service"),
        BatchSettings::new(100, NEVER),
    );
    batch.add(signal(0)).await.unwrap();
    batch.add(flaky_signal(1)).await.unwrap();
    let report = batch.close().await;
    assert_eq!(report.published.len(), 1);
    assert!(report.retrying.is_empty());
    assert_eq!(report.failed.len(), 1, "no later flush: handed back");
    assert_eq!(report.failed[0].event.payload["signal_id"], "signal-1");
    assert!(report.failed[0].error.is_transient());
}

#[tokio::test]
async fn automatic_flush_failures_are_handed_back_at_the_next_flush() {
    let config = Config::from_vars([("EVENT_MAX_PAYLOAD_BYTES", "2048")]).unwrap();
    let bus = Arc::new(MemoryBus::new(config).unwrap());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service"),
        BatchSettings::new(2, NEVER),
    );
    let mut too_large = signal(1);
    too_large.content = "x".repeat(4000);
    batch.add(signal(0)).await.unwrap();
    batch.add(too_large).await.unwrap(); // fills the batch: flushed by `add`
    assert_eq!(batch.pending(), 0);
    let report = batch.flush().await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].event.payload["signal_id"], "signal-1");
    assert!(batch.take_failed().is_empty(), "handed back once");
}

#[tokio::test]
async fn scope_flushes_also_when_the_body_fails_and_reports_both() {
    let bus = Arc::new(MemoryBus::new(Config::default()).unwrap());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "batch_service").for_request("req-9"),
        BatchSettings::new(100, NEVER),
    );
    let outcome = batch
        .scope(async |batch| {
            batch.add(signal(0)).await?;
            batch.add(signal(1)).await?;
            let mut bad = signal(2);
            bad.confidence = 7.0;
            batch.add(bad).await?; // fails validation: the body stops here
            batch.add(signal(3)).await
        })
        .await;
    let error = outcome.result.unwrap_err();
    assert!(
        matches!(&error, Error::Invalid { field, .. } if field == "confidence"),
        "{error}"
    );
    assert_eq!(outcome.flush.published.len(), 2);
    assert!(outcome.flush.is_complete());
    assert_eq!(published(bus.as_ref()).await, ["signal-0", "signal-1"]);

    let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let events: Vec<Event> = bus
        .replay(ReplayQuery::new([EventType::SIGNAL_DETECTED], from))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id.as_deref() == Some("req-9"))
    );
    assert!(
        events
            .iter()
            .all(|e| e.metadata["publisher_source"] == "batch_service")
    );
}

#[tokio::test]
async fn dropping_with_unflushed_events_warns_and_still_publishes_them() {
    let logs = event_testkit::secrets::captured_logs();
    let bus = Arc::new(MemoryBus::new(Config::default()).unwrap());
    let batch = BatchPublisher::new(
        EventPublisher::new(bus.clone(), "forgetful_service"),
        BatchSettings::new(100, NEVER),
    );
    batch.add(signal(0)).await.unwrap();
    batch.add(signal(1)).await.unwrap();
    drop(batch);
    let text = logs.text();
    assert!(
        text.contains("BatchPublisher dropped with 2 unflushed events")
            && text.contains("forgetful_service"),
        "{text}"
    );
    eventually("the background flush", || async {
        published(bus.as_ref()).await.len() == 2
    })
    .await;
}
