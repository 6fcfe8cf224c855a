//! The five domain publishers of the original system, one method per event, each with the
//! original's source name.

use std::sync::Arc;

use event_core::{EventBus, EventId};

use crate::{
    AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted, Error,
    EventPublisher, OpportunityCreated, OpportunityDeleted, OpportunityUpdated,
    OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed, SystemError,
    SystemHealthCheck, SystemMaintenance, UserProfileUpdated, UserRegistered,
    UserReputationChanged, ValidationApproved, ValidationRejected, ValidationSubmitted,
};

/// Declares a domain publisher: a named source around an [`EventPublisher`], and one method
/// per event type it publishes.
macro_rules! domain_publisher {
    (
        $(#[$doc:meta])*
        $name:ident, source = $source:literal;
        $(
            $(#[$method_doc:meta])*
            $method:ident($payload:ty);
        )*
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            publisher: EventPublisher,
        }

        impl $name {
            #[doc = concat!("The original's source name, `", $source, "`.")]
            pub const SOURCE: &'static str = $source;

            #[doc = concat!(
                "A publisher with source `", $source,
                "` and a fresh correlation id; use [`for_request`](Self::for_request) per request."
            )]
            pub fn new(bus: Arc<dyn EventBus>) -> Self {
                Self { publisher: EventPublisher::new(bus, $source) }
            }

            /// Wraps a publisher, keeping its source, correlation and causation ids.
            pub fn from_publisher(publisher: EventPublisher) -> Self {
                Self { publisher }
            }

            /// The same publisher for another request: its events carry `correlation_id`.
            pub fn for_request(&self, correlation_id: impl Into<String>) -> Self {
                Self { publisher: self.publisher.for_request(correlation_id) }
            }

            /// The publisher inside, for custom events and the envelope's ids.
            pub fn publisher(&self) -> &EventPublisher {
                &self.publisher
            }

            $(
                $(#[$method_doc])*
                ///
                /// # Errors
                /// [`Error::Invalid`] naming the field at fault (nothing is published), or
                /// [`Error::Bus`].
                pub async fn $method(&self, payload: $payload) -> Result<EventId, Error> {
                    self.publisher.publish(payload).await
                }
            )*
        }
    };
}

domain_publisher! {
    /// Publishes `opportunity.*` events (and the `validation.*` events the original declared
    /// but never published), as `opportunity_service`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use event_core::{Config, MemoryBus};
    /// use event_publishers::{OpportunityCreated, OpportunityEventPublisher};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Arc::new(MemoryBus::new(Config::default())?);
    /// let publisher = OpportunityEventPublisher::new(bus).for_request("req-456");
    /// publisher
    ///     .opportunity_created(OpportunityCreated {
    ///         opportunity_id: "opp-123".into(),
    ///         title: "AI-Powered Customer Service".into(),
    ///         description: "Automated customer support using NLP".into(),
    ///         ai_solution_type: "nlp".into(),
    ///         market_size_estimate: Some(5_000_000.0),
    ///         created_by: Some("user-456".into()),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    OpportunityEventPublisher, source = "opportunity_service";
    /// Publishes `opportunity.created`, keyed by `opportunity_id`.
    opportunity_created(OpportunityCreated);
    /// Publishes `opportunity.updated`, keyed by `opportunity_id`; sets `change_count`.
    opportunity_updated(OpportunityUpdated);
    /// Publishes `opportunity.validated`, keyed by `opportunity_id`.
    opportunity_validated(OpportunityValidated);
    /// Publishes `opportunity.deleted`, keyed by `opportunity_id`.
    opportunity_deleted(OpportunityDeleted);
    /// Publishes `validation.submitted`, keyed by `opportunity_id` (not in the original).
    validation_submitted(ValidationSubmitted);
    /// Publishes `validation.approved`, keyed by `opportunity_id` (not in the original).
    validation_approved(ValidationApproved);
    /// Publishes `validation.rejected`, keyed by `opportunity_id` (not in the original).
    validation_rejected(ValidationRejected);
}

domain_publisher! {
    /// Publishes `user.*` events as `user_service`.
    UserEventPublisher, source = "user_service";
    /// Publishes `user.registered`, keyed by `user_id`.
    user_registered(UserRegistered);
    /// Publishes `user.profile_updated`, keyed by `user_id`; sets `change_count`.
    user_profile_updated(UserProfileUpdated);
    /// Publishes `user.reputation_changed`, keyed by `user_id`; a `change_amount` left at 0
    /// becomes `new_score - old_score`.
    user_reputation_changed(UserReputationChanged);
}

domain_publisher! {
    /// Publishes `agent.*` events as `agent_orchestrator`.
    AgentEventPublisher, source = "agent_orchestrator";
    /// Publishes `agent.started`, keyed by `agent_id`.
    agent_started(AgentStarted);
    /// Publishes `agent.stopped`, keyed by `agent_id`.
    agent_stopped(AgentStopped);
    /// Publishes `agent.error`, keyed by `agent_id`.
    agent_error(AgentError);
    /// Publishes `agent.task_started` (a custom type; the original documented this method
    /// but never had it), keyed by `agent_id`.
    agent_task_started(AgentTaskStarted);
    /// Publishes `agent.task_completed`, keyed by `agent_id`.
    agent_task_completed(AgentTaskCompleted);
}

domain_publisher! {
    /// Publishes `signal.*` events as `monitoring_agent`.
    MarketSignalEventPublisher, source = "monitoring_agent";
    /// Publishes `signal.detected`, keyed by `signal_id`.
    signal_detected(SignalDetected);
    /// Publishes `signal.processed`, keyed by `signal_id`.
    signal_processed(SignalProcessed);
    /// Publishes `signal.clustered`, keyed by `cluster_id`; a `signal_count` left at 0
    /// becomes the number of `signal_ids`.
    signal_clustered(SignalClustered);
}

domain_publisher! {
    /// Publishes `system.*` events as `system`.
    SystemEventPublisher, source = "system";
    /// Publishes `system.health_check`, keyed by `component`.
    health_check(SystemHealthCheck);
    /// Publishes `system.error`, keyed by `component`.
    system_error(SystemError);
    /// Publishes `system.maintenance`, without a partition key (as the original).
    maintenance_scheduled(SystemMaintenance);
}
