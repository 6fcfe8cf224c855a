//! [`History`]: everything a run did and saw, in the order it happened: each publish and what
//! it returned, each handler call and its outcome (in this process and, read from their
//! files, in the consumer processes), subscriptions, operations, faults, health snapshots,
//! and the dead letters found at the end. The checker reads nothing else.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use event_core::{DeadLetter, EventId, Health, StartFrom};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::backend::{Fault, ForeignEntry};

/// Milliseconds since the Unix epoch: one clock for this process and the consumer processes.
pub(crate) fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// How one handler call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Handled,
    Transient,
    Permanent,
    Panicked,
}

/// One handler call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeliveryRecord {
    pub(crate) handler: String,
    /// The subscription that made the call (`main/h1#2`, `proc1/h0`): per-key order is
    /// promised within one consumer only.
    pub(crate) consumer: String,
    pub(crate) event_id: EventId,
    pub(crate) event_type: String,
    pub(crate) key: Option<String>,
    pub(crate) publisher: Option<String>,
    pub(crate) seq: Option<u64>,
    /// Calls of this handler for this event in this consumer, from 1.
    pub(crate) attempt: u32,
    pub(crate) outcome: Outcome,
    pub(crate) started_ms: i64,
    pub(crate) finished_ms: i64,
}

/// What a publish call said about one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PublishOutcome {
    /// `Ok(id)`: the event is stored.
    Stored,
    /// An error that says nothing was written (too large, invalid, shut down, refused).
    Refused(String),
    /// An error after which the event may or may not be stored (a timeout, a lost
    /// connection).
    Ambiguous(String),
}

/// One event given to `publish` or `publish_batch`.
#[derive(Clone, Debug)]
pub(crate) struct PublishRecord {
    pub(crate) event_id: EventId,
    pub(crate) event_type: String,
    pub(crate) key: Option<String>,
    pub(crate) publisher: String,
    pub(crate) seq: u64,
    pub(crate) timestamp: OffsetDateTime,
    pub(crate) started_ms: i64,
    pub(crate) returned_ms: i64,
    pub(crate) outcome: PublishOutcome,
    pub(crate) batch: bool,
    /// Made larger than `EVENT_MAX_PAYLOAD_BYTES` on purpose: it must be refused.
    pub(crate) oversized: bool,
}

/// One subscribe call, and when its subscription was ended by the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    pub(crate) handler: String,
    pub(crate) consumer: String,
    /// `Earliest`, `Latest`, or the time as Unix nanoseconds.
    pub(crate) start: StartSpec,
    pub(crate) called_ms: i64,
    pub(crate) returned_ms: i64,
    pub(crate) error: Option<String>,
    /// When the run asked it to stop (the unsubscribe was called), if it did.
    pub(crate) ended_ms: Option<i64>,
}

/// A [`StartFrom`] that can travel to a consumer process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StartSpec {
    Earliest,
    Latest,
    /// Unix nanoseconds.
    Time(i128),
}

impl StartSpec {
    pub(crate) fn start_from(self) -> StartFrom {
        match self {
            StartSpec::Earliest => StartFrom::Earliest,
            StartSpec::Latest => StartFrom::Latest,
            StartSpec::Time(nanos) => StartFrom::Time(
                OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            ),
        }
    }
}

/// One fault, from injection to healing.
#[derive(Clone, Debug)]
pub(crate) struct FaultRecord {
    pub(crate) fault: Fault,
    pub(crate) started_ms: i64,
    pub(crate) ended_ms: i64,
    /// What it did, or why it could not be injected.
    pub(crate) detail: Result<String, String>,
    /// The handlers it touched (all, or the shared one).
    pub(crate) handlers: Vec<String>,
}

/// A redrive or a purge: which dead letters it selected.
#[derive(Clone, Debug)]
pub(crate) struct DeadLetterOperation {
    pub(crate) handler: String,
    pub(crate) at_ms: i64,
    /// The selected dead letters' events.
    pub(crate) event_ids: Vec<EventId>,
    /// The selected dead letters of foreign entries, by their raw text.
    pub(crate) raws: Vec<String>,
    /// What the bus said it did.
    pub(crate) result: Result<String, String>,
}

/// Foreign entries written into an event log.
#[derive(Clone, Debug)]
pub(crate) struct ForeignRecord {
    pub(crate) event_type: String,
    pub(crate) entry: ForeignEntry,
    pub(crate) written_ms: i64,
}

/// A health report of one bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HealthRecord {
    pub(crate) at_ms: i64,
    pub(crate) bus: String,
    pub(crate) health: Health,
}

/// Whether a subscription said it was active, at a time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ActivityRecord {
    pub(crate) at_ms: i64,
    pub(crate) consumer: String,
    pub(crate) handler: String,
    pub(crate) active: bool,
}

/// A line of a consumer process's file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ChildLine {
    Delivery(DeliveryRecord),
    Subscribed(SubscriptionRecord),
    Health(HealthRecord),
    Activity(ActivityRecord),
}

/// Everything recorded, for the checker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Records {
    pub(crate) publishes: Vec<PublishRecord>,
    pub(crate) deliveries: Vec<DeliveryRecord>,
    pub(crate) subscriptions: Vec<SubscriptionRecord>,
    pub(crate) faults: Vec<FaultRecord>,
    pub(crate) redrives: Vec<DeadLetterOperation>,
    pub(crate) purges: Vec<DeadLetterOperation>,
    pub(crate) foreign: Vec<ForeignRecord>,
    pub(crate) health: Vec<HealthRecord>,
    pub(crate) activity: Vec<ActivityRecord>,
    /// Membership changes of shared groups (a consumer joined or left), for the duplicate
    /// bound where a rebalance redelivers.
    pub(crate) membership_changes: Vec<(i64, String)>,
    /// Every handler's dead letters, read once the run was quiet.
    pub(crate) dead_letters: BTreeMap<String, Vec<DeadLetter>>,
    /// The log of what the run did, in words, with times.
    pub(crate) log: Vec<(i64, String)>,
}

/// The history of a run, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct History {
    records: Mutex<Records>,
}

impl History {
    /// The records, for adding to them. A panicking task cannot leave them half-written in a
    /// way that matters more than the run's own failure.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes what the run did, with the time.
    pub(crate) fn note(&self, what: impl Into<String>) {
        let what = what.into();
        if std::env::var_os("EVENTBUS_CHAOS_VERBOSE").is_some() {
            eprintln!("chaos: {what}");
        }
        self.lock().log.push((now_ms(), what));
    }

    /// How many handler calls were recorded in this process.
    pub(crate) fn delivery_count(&self) -> usize {
        self.lock().deliveries.len()
    }

    /// A copy of everything.
    pub(crate) fn snapshot(&self) -> Records {
        self.lock().clone()
    }
}
