//! The domain handlers: each handles one domain's event types, keeps a view of what they say
//! (queryable as a typed value or as JSON through [`View`](crate::View)), and publishes the
//! follow-up events the domain calls for (alerts, re-analysis requests).

/// The [`EventHandler`](event_core::EventHandler), [`View`](crate::View) and
/// [`Fold`](crate::Fold) of a domain handler: its state (`self.state`) keeps the ids it applied (`seen`), so an event delivered
/// again is applied once; `$view` is the method that reads its typed view; a handler with an
/// outbox (`self.outbox`) publishes the follow-up events of the update after the lock is let
/// go (a failed publish fails the event, and its retry publishes them); folded, it returns
/// them instead.
macro_rules! domain_handler {
    (@follow_ups $self:ident) => {
        Vec::new()
    };
    (@follow_ups $self:ident, $outbox:ident) => {
        $self.$outbox.take()
    };
    ($handler:ty, $view:ident $(, $outbox:ident)?) => {
        impl $handler {
            /// Applies `event` once per id, under the state's lock.
            fn apply_once(&self, event: &event_core::Event) -> Result<(), event_core::HandlerError> {
                let mut state = super::lock(&self.state);
                if !state.seen.contains(&event.id) {
                    self.apply(&mut state, event)?;
                    state.seen.insert(event.id);
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl event_core::EventHandler for $handler {
            fn name(&self) -> &str {
                Self::NAME
            }

            async fn handle(
                &self,
                event: &event_core::Event,
            ) -> Result<(), event_core::HandlerError> {
                self.apply_once(event)?;
                $(self.$outbox.flush(&self.bus).await?;)?
                Ok(())
            }
        }

        impl crate::View for $handler {
            fn name(&self) -> &str {
                Self::NAME
            }

            fn snapshot(&self) -> serde_json::Value {
                crate::view::to_json(&self.$view())
            }
        }

        impl crate::Fold for $handler {
            fn fold(
                &self,
                event: &event_core::Event,
            ) -> Result<Vec<event_core::Event>, event_core::HandlerError> {
                self.apply_once(event)?;
                Ok(domain_handler!(@follow_ups self $(, $outbox)?))
            }
        }
    };
}

mod agent;
mod market_signal;
mod opportunity;
mod outbox;
mod payloads;
mod recent;
mod system;
mod user;

pub use agent::{AgentAlertPolicy, AgentEventHandler, AgentFleet, AgentStatus, AgentSummary};
pub use market_signal::{
    ConfidenceBucket, MarketSignalEventHandler, SignalCluster, SignalFunnel, SignalSummary,
};
pub use opportunity::{
    DeletedOpportunity, OpportunityCatalog, OpportunityChange, OpportunityEventHandler,
    OpportunityRecord, REANALYSIS_FIELDS, REANALYSIS_REQUESTED, ReanalysisRequest,
    ValidationRecord,
};
pub use system::{
    ComponentHealth, MaintenanceWindow, SystemErrorRecord, SystemEventHandler, SystemStatus,
};
pub use user::{ReputationEntry, UserDirectory, UserEventHandler, UserRecord};

pub(crate) use agent::agent_task_started;
pub(crate) use opportunity::reanalysis_requested;
pub(crate) use outbox::Outbox;
pub(crate) use recent::RecentIds;

use std::sync::{Mutex, MutexGuard};

/// Locks a view's state. Each update is applied in one step under the lock, so a panic in
/// another thread cannot leave it half-written: a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds between two timestamps, never negative.
pub(crate) fn seconds_between(from: time::OffsetDateTime, to: time::OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64().max(0.0)
}
