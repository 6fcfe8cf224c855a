//! [`BusStats`] and [`HandlerStats`]: counts by event type and by handler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Statistics of a bus. Counts never include events trimmed by retention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BusStats {
    /// The backend's name.
    pub backend: String,
    /// Retained events, all types.
    pub total_events: u64,
    /// Retained events by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Handlers with at least one active subscription.
    pub active_subscribers: usize,
    /// Active subscriptions (a handler may have several, sharing its group).
    pub subscription_tasks: usize,
    /// Per handler, for every group the bus knows (active or not).
    pub handlers: BTreeMap<String, HandlerStats>,
}

/// Statistics of one handler's consumer group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandlerStats {
    /// The consumer group.
    pub group: String,
    /// The types it subscribes to.
    pub event_types: Vec<String>,
    /// Active subscriptions in this process.
    pub subscriptions: usize,
    /// Events handled successfully (this process, since start).
    pub processed: u64,
    /// Failed attempts (each retry that fails counts).
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Events moved to the dead-letter queue (this process, since start).
    pub dead_lettered: u64,
    /// Events now in the dead-letter queue.
    pub dead_letter_depth: u64,
    /// Events delivered and not yet acknowledged.
    pub pending: u64,
    /// Retained events not yet delivered to the group.
    pub lag: u64,
    /// When it last finished an event.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
}
