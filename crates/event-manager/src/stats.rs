//! [`ManagerStats`]: the bus's counts, each handler's, and the effective configuration.

use std::collections::BTreeMap;

use event_core::GroupMemberStats;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::manager::ManagerState;
use crate::{Error, EventBusManager, HandlerOrigin};

/// Statistics of the manager and its bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManagerStats {
    /// The backend (`memory`, `redis`, `kafka`).
    pub backend: String,
    /// `running`, `stopped`, ...
    pub state: String,
    /// Seconds since the bus was started.
    pub uptime_seconds: Option<f64>,
    /// Retained events, all types (trimmed events are never counted).
    pub total_events: u64,
    /// Retained events by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Handlers with an active subscription.
    pub active_subscribers: usize,
    /// Active subscriptions.
    pub subscription_tasks: usize,
    /// The registered handlers' names (the original's `registered_handlers`).
    pub registered_handlers: Vec<String>,
    /// Each handler the bus or the manager knows.
    pub handlers: BTreeMap<String, HandlerReport>,
    /// Every variable's effective value, secrets removed.
    pub config: BTreeMap<String, String>,
    /// Settings with no effect on this backend.
    pub warnings: Vec<String>,
    /// When these stats were taken.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
}

/// One handler's statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandlerReport {
    /// `domain`, `custom`, or `none` for a consumer group the bus knows that this manager does
    /// not run.
    pub origin: String,
    /// Its consumer group.
    pub group: String,
    /// The types it subscribes to.
    pub event_types: Vec<String>,
    /// Subscribed now.
    pub subscribed: bool,
    /// Events handled successfully (this process, since the bus started).
    pub processed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Events moved to its dead-letter queue (this process).
    pub dead_lettered: u64,
    /// Events in its dead-letter queue now.
    pub dead_letter_depth: u64,
    /// Events retention removed before they were delivered to it (this process).
    #[serde(default)]
    pub expired: u64,
    /// Retained events not yet delivered.
    pub lag: u64,
    /// Delivered and not yet acknowledged: the events in flight. (The bus counts no other
    /// in-flight figure: an event a handler is running is one of these.)
    pub pending: u64,
    /// When it last finished an event.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
    /// Events it finished per second over the last minute (this process).
    pub events_per_second: f64,
    /// Whether it keeps a view (`GET /views/{handler}`).
    pub has_view: bool,
    /// The group's generation on backends with a group coordinator (Kafka: each rebalance
    /// starts a new one); `None` elsewhere, and in reports written before it was reported.
    #[serde(default)]
    pub generation: Option<i32>,
    /// The processes in its group, in every process, with the partitions each owns, as the
    /// group coordinator reports them (Kafka). Empty on the memory bus and on Redis, whose
    /// stats report no consumers, and in reports written before it was reported.
    #[serde(default)]
    pub members: Vec<GroupMemberStats>,
}

impl EventBusManager {
    /// The bus's counts, each handler's counters, lag, pending and rate, and the effective
    /// configuration with secrets removed.
    ///
    /// # Errors
    /// [`Error::NotRunning`], or the backend's error.
    pub async fn stats(&self) -> Result<ManagerStats, Error> {
        let bus = self.bus()?;
        let bus_stats = bus.stats().await?;
        let mut handlers: BTreeMap<String, HandlerReport> = bus_stats
            .handlers
            .iter()
            .map(|(name, h)| {
                (
                    name.clone(),
                    HandlerReport {
                        origin: "none".into(),
                        group: h.group.clone(),
                        event_types: h.event_types.clone(),
                        subscribed: h.subscriptions > 0,
                        processed: h.processed,
                        failed: h.failed,
                        retried: h.retried,
                        dead_lettered: h.dead_lettered,
                        dead_letter_depth: h.dead_letter_depth,
                        expired: h.expired,
                        lag: h.lag,
                        pending: h.pending,
                        last_event_at: h.last_event_at,
                        events_per_second: 0.0,
                        has_view: false,
                        generation: h.generation,
                        members: h.members.clone(),
                    },
                )
            })
            .collect();
        let registrations = self.registrations();
        for r in &registrations {
            let report = handlers
                .entry(r.name.clone())
                .or_insert_with(|| HandlerReport {
                    group: format!("{}.{}", self.config().consumer_group, r.name),
                    event_types: r.event_types.clone(),
                    ..HandlerReport::default()
                });
            report.origin = match r.origin {
                HandlerOrigin::Domain => "domain",
                HandlerOrigin::Custom => "custom",
            }
            .into();
            report.subscribed = r.subscribed;
            report.events_per_second = r.events_per_second;
            report.has_view = r.has_view;
        }
        Ok(ManagerStats {
            backend: bus_stats.backend,
            state: state_name(self.state()),
            uptime_seconds: self.uptime().map(|d| d.as_secs_f64()),
            total_events: bus_stats.total_events,
            events_by_type: bus_stats.events_by_type,
            active_subscribers: bus_stats.active_subscribers,
            subscription_tasks: bus_stats.subscription_tasks,
            registered_handlers: registrations.into_iter().map(|r| r.name).collect(),
            handlers,
            config: self.redacted_config(),
            warnings: self.warnings(),
            taken_at: OffsetDateTime::now_utc(),
        })
    }

    /// Every variable's effective value with secrets removed.
    pub fn redacted_config(&self) -> BTreeMap<String, String> {
        self.settings()
            .redacted()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

pub(crate) fn state_name(state: ManagerState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report written before `generation` and `members` were reported still reads.
    #[test]
    fn an_older_handler_report_reads_without_members() {
        let old = serde_json::json!({
            "origin": "domain", "group": "g.h", "event_types": ["user.registered"],
            "subscribed": true, "processed": 3, "failed": 0, "retried": 0, "dead_lettered": 0,
            "dead_letter_depth": 0, "lag": 0, "pending": 0, "last_event_at": null,
            "events_per_second": 0.5, "has_view": false
        });
        let report: HandlerReport = serde_json::from_value(old).unwrap();
        assert_eq!(report.processed, 3);
        assert_eq!(report.generation, None);
        assert!(report.members.is_empty());
    }
}
