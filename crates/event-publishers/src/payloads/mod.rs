//! The typed payloads: the 20 standard event types of the original system, plus
//! [`AgentTaskStarted`] (`agent.task_started`), which the original documented and never had.
//!
//! Field names, optional fields and defaults are the original's (`event_publishers.py`).
//! Optional fields are written as `null` when absent, as the original wrote `None`. Every
//! payload has an `extra` map, flattened into the JSON object: the fields the original's
//! `**kwargs` allowed, which can add to a payload but (unlike the original) never override a
//! standard field.

mod agent;
mod opportunity;
mod signal;
mod system;
mod user;
mod validation;

pub use agent::{AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted};
pub use opportunity::{
    OpportunityCreated, OpportunityDeleted, OpportunityUpdated, OpportunityValidated,
};
pub use signal::{SignalClustered, SignalDetected, SignalProcessed};
pub use system::{SystemError, SystemHealthCheck, SystemMaintenance};
pub use user::{UserProfileUpdated, UserRegistered, UserReputationChanged};
pub use validation::{ValidationApproved, ValidationRejected, ValidationSubmitted};

/// The highest score a validation can give (scores run from 0 to 10).
pub const MAX_VALIDATION_SCORE: f64 = 10.0;

/// Implements [`DomainEvent`](crate::DomainEvent) for a payload keyed by one of its string
/// fields: `validate(p) { ... }` checks the fields, the optional `derive(p) { ... }` computes
/// derived fields.
macro_rules! domain_event {
    (
        $ty:ident: $event_type:expr, key = $key:ident,
        validate($p:ident) $validate:block
        $(, derive($d:ident) $derive:block)? $(,)?
    ) => {
        impl $crate::DomainEvent for $ty {
            const PARTITION_KEY_FIELD: Option<&'static str> = Some(stringify!($key));

            fn event_type() -> ::event_core::EventType {
                $event_type
            }

            fn partition_key(&self) -> Option<String> {
                Some(self.$key.clone())
            }

            fn validate(&self) -> Result<(), $crate::FieldError> {
                let $p = self;
                $validate
            }

            $(
                fn derive_fields(&mut self) {
                    let $d = self;
                    $derive
                }
            )?
        }
    };
}
pub(crate) use domain_event;

/// Serde for timestamps inside payloads: RFC 3339 in UTC, as the envelope writes them
/// (the original wrote `datetime.isoformat()`; both forms are read).
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&event_core::timestamp::format(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        event_core::timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}
