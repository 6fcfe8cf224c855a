//! [`Publisher`]: one publishing task of the run. It mixes `publish` and `publish_batch`,
//! tags each event with its name and a sequence number (and a per-key count), slips an
//! oversized event into a few batches, and records what every call returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use event_core::{Error, Event, EventBus, EventType};
use fastrand::Rng;
use tokio::time::Instant;

use super::history::{History, PublishOutcome, PublishRecord, now_ms};
use super::workload::KeySpace;

/// The source of every event of the run.
pub(crate) const SOURCE: &str = "eventbus_chaos";

/// One publishing task's state.
pub(crate) struct Publisher {
    name: String,
    rng: Rng,
    seq: u64,
    key_seqs: HashMap<Option<String>, u64>,
    keys: KeySpace,
    batch_size: usize,
    max_event_bytes: usize,
    history: Arc<History>,
}

/// The outcome class of a failed publish: did anything reach the log?
pub(crate) fn classify(error: &Error) -> PublishOutcome {
    match error {
        // A lost connection or a timeout may come after the server wrote the event.
        Error::Timeout { .. }
        | Error::Backend {
            transient: true, ..
        } => PublishOutcome::Ambiguous(error.to_string()),
        _ => PublishOutcome::Refused(error.to_string()),
    }
}

impl Publisher {
    pub(crate) fn new(
        index: usize,
        seed: u64,
        keys: KeySpace,
        batch_size: usize,
        max_event_bytes: usize,
        history: Arc<History>,
    ) -> Self {
        Self {
            name: format!("p{index}"),
            rng: Rng::with_seed(seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(index as u64 + 1))),
            seq: 0,
            key_seqs: HashMap::new(),
            keys,
            batch_size,
            max_event_bytes,
            history,
        }
    }

    /// Publishes `count` events of `types` (one drawn per event), in calls of one event or a
    /// batch, through a bus drawn from `buses` for each call. With `per_second`, paces itself.
    pub(crate) async fn publish(
        &mut self,
        buses: &[Arc<dyn EventBus>],
        types: &[EventType],
        count: usize,
        per_second: Option<f64>,
    ) {
        let mut left = count;
        while left > 0 {
            left -= self.one_call(buses, types, left, per_second).await;
        }
    }

    /// Publishes until `until`, paced at `per_second`.
    pub(crate) async fn publish_until(
        &mut self,
        buses: &[Arc<dyn EventBus>],
        types: &[EventType],
        until: Instant,
        per_second: f64,
    ) {
        while Instant::now() < until {
            self.one_call(buses, types, usize::MAX, Some(per_second))
                .await;
        }
    }

    /// One `publish` or `publish_batch` call of at most `most` events; returns how many.
    async fn one_call(
        &mut self,
        buses: &[Arc<dyn EventBus>],
        types: &[EventType],
        most: usize,
        per_second: Option<f64>,
    ) -> usize {
        let started = Instant::now();
        let bus = &buses[self.rng.usize(0..buses.len())];
        let single = self.rng.u32(0..10) < 3;
        let n = if single {
            1
        } else {
            self.rng.usize(2..=2 * self.batch_size).min(most)
        };
        let oversized_at = (!single && self.rng.u32(0..40) == 0).then(|| self.rng.usize(0..n));
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let event_type = &types[self.rng.usize(0..types.len())];
                self.event(event_type, oversized_at == Some(i))
            })
            .collect();
        let started_ms = now_ms();
        let mut records: Vec<PublishRecord> = events
            .iter()
            .enumerate()
            .map(|(i, event)| PublishRecord {
                event_id: event.id,
                event_type: event.event_type.as_str().to_string(),
                key: event.partition_key.clone(),
                publisher: self.name.clone(),
                seq: event
                    .payload
                    .get("seq")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                timestamp: event.timestamp,
                started_ms,
                returned_ms: 0,
                outcome: PublishOutcome::Stored,
                batch: n > 1,
                oversized: oversized_at == Some(i),
            })
            .collect();
        let results: Vec<Result<(), Error>> = if n == 1 {
            let mut events = events;
            match events.pop() {
                Some(event) => vec![bus.publish(event).await.map(|_| ())],
                None => Vec::new(),
            }
        } else {
            bus.publish_batch(events)
                .await
                .into_iter()
                .map(|r| r.map(|_| ()))
                .collect()
        };
        let returned_ms = now_ms();
        for (i, record) in records.iter_mut().enumerate() {
            record.returned_ms = returned_ms;
            record.outcome = match results.get(i) {
                Some(Ok(())) => PublishOutcome::Stored,
                Some(Err(e)) => classify(e),
                None => PublishOutcome::Ambiguous("no result for this event".into()),
            };
        }
        self.history.lock().publishes.extend(records);
        if let Some(rate) = per_second {
            let due = started + Duration::from_secs_f64(n as f64 / rate.max(1.0));
            tokio::time::sleep_until(due).await;
        }
        n
    }

    fn event(&mut self, event_type: &EventType, oversized: bool) -> Event {
        self.seq += 1;
        let key = self.keys.pick(&mut self.rng);
        let key_seq = self.key_seqs.entry(key.clone()).or_default();
        *key_seq += 1;
        let mut builder = Event::builder(event_type.clone(), SOURCE)
            .field("publisher", self.name.as_str())
            .field("seq", self.seq)
            .field("key_seq", *key_seq);
        if let Some(key) = key {
            builder = builder.partition_key(key);
        }
        if oversized {
            builder = builder.field("pad", "x".repeat(self.max_event_bytes + 64));
        }
        builder
            .build()
            .unwrap_or_else(|e| panic!("a chaos event is valid: {e}"))
    }
}
