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
    /// Events that retention removed before they were delivered to this group (this
    /// process, since start): lost to the handler, so counted and logged, never silent.
    #[serde(default)]
    pub expired: u64,
    /// Events delivered and not yet acknowledged.
    pub pending: u64,
    /// Retained events not yet delivered to the group.
    pub lag: u64,
    /// When it last finished an event.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
    /// The group's generation, on backends with a group coordinator (Kafka); each rebalance
    /// starts a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i32>,
    /// The group's members in every process, with the partitions each owns, on backends with
    /// a group coordinator (Kafka); empty elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMemberStats>,
}

/// One member of a handler's consumer group, as the group coordinator reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberStats {
    /// The member id the coordinator gave.
    pub member_id: String,
    /// Its static membership id (`KAFKA_GROUP_INSTANCE_ID`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub host: String,
    /// The partitions it owns, by topic.
    pub partitions: BTreeMap<String, Vec<i32>>,
}
