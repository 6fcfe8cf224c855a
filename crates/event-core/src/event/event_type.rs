//! [`EventType`]: the dotted name of an event (`opportunity.created`), standard or custom.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The type of an event, always its dotted value such as `opportunity.created`.
///
/// The 20 standard types of the original system are associated constants
/// ([`EventType::OPPORTUNITY_CREATED`], ...). Custom types are allowed when they match
/// `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`: lower-case segments separated by dots, at least two
/// segments, at most [`EventType::MAX_LEN`] bytes.
///
/// ```
/// use event_core::EventType;
///
/// assert_eq!(EventType::OPPORTUNITY_CREATED.as_str(), "opportunity.created");
/// let custom = EventType::new("feature_flag.created")?;
/// assert!(!custom.is_standard());
/// assert!(EventType::new("EventType.OPPORTUNITY_CREATED").is_err());
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(Cow<'static, str>);

macro_rules! standard_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        impl EventType {
            $($(#[$doc])* pub const $name: EventType = EventType(Cow::Borrowed($value));)*

            /// The 20 standard event types, in the original system's order.
            pub const STANDARD: &'static [EventType] = &[$(EventType::$name),*];
        }
    };
}

standard_types! {
    /// `opportunity.created`: a new opportunity was added to the catalogue.
    OPPORTUNITY_CREATED = "opportunity.created";
    /// `opportunity.updated`: fields of an opportunity changed.
    OPPORTUNITY_UPDATED = "opportunity.updated";
    /// `opportunity.deleted`: an opportunity was removed.
    OPPORTUNITY_DELETED = "opportunity.deleted";
    /// `opportunity.validated`: an opportunity received a validation.
    OPPORTUNITY_VALIDATED = "opportunity.validated";
    /// `user.registered`: a new user signed up.
    USER_REGISTERED = "user.registered";
    /// `user.profile_updated`: a user's profile changed.
    USER_PROFILE_UPDATED = "user.profile_updated";
    /// `user.reputation_changed`: a user's reputation score changed.
    USER_REPUTATION_CHANGED = "user.reputation_changed";
    /// `validation.submitted`: a validation was submitted for review.
    VALIDATION_SUBMITTED = "validation.submitted";
    /// `validation.approved`: a validation was approved.
    VALIDATION_APPROVED = "validation.approved";
    /// `validation.rejected`: a validation was rejected.
    VALIDATION_REJECTED = "validation.rejected";
    /// `agent.started`: an AI agent started.
    AGENT_STARTED = "agent.started";
    /// `agent.stopped`: an AI agent stopped.
    AGENT_STOPPED = "agent.stopped";
    /// `agent.error`: an AI agent reported an error.
    AGENT_ERROR = "agent.error";
    /// `agent.task_completed`: an AI agent finished a task.
    AGENT_TASK_COMPLETED = "agent.task_completed";
    /// `signal.detected`: a market signal was detected.
    SIGNAL_DETECTED = "signal.detected";
    /// `signal.processed`: a market signal was processed.
    SIGNAL_PROCESSED = "signal.processed";
    /// `signal.clustered`: market signals were grouped into a cluster.
    SIGNAL_CLUSTERED = "signal.clustered";
    /// `system.health_check`: a component reported its health.
    SYSTEM_HEALTH_CHECK = "system.health_check";
    /// `system.error`: a component reported an error.
    SYSTEM_ERROR = "system.error";
    /// `system.maintenance`: maintenance was scheduled.
    SYSTEM_MAINTENANCE = "system.maintenance";
}

impl EventType {
    /// The longest accepted event type, in bytes. Long enough for any domain name, short
    /// enough to stay a valid Redis key part and Kafka topic name (249 bytes) with a prefix.
    pub const MAX_LEN: usize = 200;

    /// Validates and wraps a custom (or standard) event type.
    ///
    /// # Errors
    /// [`Error::InvalidEventType`] when `value` does not match
    /// `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$` or is longer than [`EventType::MAX_LEN`].
    pub fn new(value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        if let Some(standard) = Self::STANDARD.iter().find(|t| t.as_str() == value) {
            return Ok(standard.clone());
        }
        validate(&value).map_err(|reason| Error::InvalidEventType {
            value: value.clone(),
            reason,
        })?;
        Ok(Self(Cow::Owned(value)))
    }

    /// The dotted value, such as `opportunity.created`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value when it is a `&'static str` (the standard types, and types made with
    /// [`from_static`](Self::from_static)-like constants), without copying it.
    pub(crate) fn as_static(&self) -> Option<&'static str> {
        match self.0 {
            Cow::Borrowed(name) => Some(name),
            Cow::Owned(_) => None,
        }
    }

    /// Whether this is one of the 20 standard types of [`EventType::STANDARD`].
    pub fn is_standard(&self) -> bool {
        Self::STANDARD.contains(self)
    }

    /// The part before the first dot (`opportunity` for `opportunity.created`).
    pub fn domain(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }
}

/// Checks the grammar of a custom event type; returns the reason it is not valid.
fn validate(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.len() > EventType::MAX_LEN {
        return Err("it is longer than 200 bytes");
    }
    let mut segments = 0;
    for segment in value.split('.') {
        segments += 1;
        let mut chars = segment.chars();
        match chars.next() {
            None => return Err("it has an empty segment between dots"),
            Some(c) if !c.is_ascii_lowercase() => {
                return Err("each dot-separated segment must start with a lower-case letter");
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err("only lower-case letters, digits, '_' and '.' are allowed");
        }
    }
    if segments < 2 {
        return Err("it needs at least two dot-separated segments, like `domain.action`");
    }
    Ok(())
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The dotted value, never a Rust-style name: the original system's worst bug was an
        // enum's debug name leaking onto the wire.
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for EventType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for EventType {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for EventType {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Cow::<'de, str>::deserialize(deserializer)?;
        EventType::new(value.into_owned()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_distinct_standard_types_all_valid() {
        assert_eq!(EventType::STANDARD.len(), 20);
        let mut seen = std::collections::HashSet::new();
        for t in EventType::STANDARD {
            assert!(validate(t.as_str()).is_ok(), "{t}");
            assert!(seen.insert(t.as_str()));
        }
    }

    #[test]
    fn custom_types_follow_the_grammar() {
        for ok in [
            "api.request_started",
            "feature_flag.usage_tracked",
            "a.b.c",
            "x1.y2",
        ] {
            assert!(EventType::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "opportunity",
            "EventType.OPPORTUNITY_CREATED",
            "opportunity.",
            ".created",
            "opportunity..created",
            "1opp.created",
            "opp.Created",
            "opp.cre-ated",
            "opp.created ",
        ] {
            let err = EventType::new(bad).expect_err(bad);
            assert!(err.to_string().contains("event type"), "{err}");
        }
        assert!(EventType::new(format!("a.{}", "b".repeat(250))).is_err());
    }

    #[test]
    fn standard_values_are_recognised_and_shared() {
        let t = EventType::new("agent.error").unwrap();
        assert!(t.is_standard());
        assert_eq!(t, EventType::AGENT_ERROR);
        assert_eq!(t.domain(), "agent");
        assert_eq!(format!("{t:?}"), "\"agent.error\"");
    }

    #[test]
    fn serde_uses_the_dotted_value_and_validates() {
        let json = serde_json::to_string(&EventType::SIGNAL_DETECTED).unwrap();
        assert_eq!(json, "\"signal.detected\"");
        let back: EventType = serde_json::from_str(&json).unwrap();
        assert_eq!(back, EventType::SIGNAL_DETECTED);
        assert!(serde_json::from_str::<EventType>("\"EventType.SIGNAL_DETECTED\"").is_err());
    }
}
