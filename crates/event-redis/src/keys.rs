//! The key layout: every key the bus uses, under `{REDIS_KEY_PREFIX}:`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:stream:{event_type}` | stream | the events of one type |
//! | `{prefix}:redrive:{group}` | stream | dead letters handed back to one group |
//! | `{prefix}:dlq:{group}` | stream | the dead letters of one group |
//! | `{prefix}:aggregate:{aggregate_type}:{aggregate_id}` | list | an aggregate's history |
//! | `{prefix}:handlers` | set | the handlers that ever subscribed |

use event_core::EventType;

/// Builds the keys of one bus.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub(crate) fn stream(&self, event_type: &EventType) -> String {
        format!("{}:stream:{}", self.prefix, event_type)
    }

    /// The pattern that matches every event stream, for `SCAN`.
    pub(crate) fn stream_pattern(&self) -> String {
        format!("{}:stream:*", self.prefix)
    }

    /// The event type of an event stream's key.
    pub(crate) fn event_type_of(&self, key: &str) -> Option<EventType> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":stream:")?;
        EventType::new(rest).ok()
    }

    pub(crate) fn redrive(&self, group: &str) -> String {
        format!("{}:redrive:{group}", self.prefix)
    }

    pub(crate) fn dead_letters(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.prefix)
    }

    pub(crate) fn aggregate(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        format!("{}:aggregate:{aggregate_type}:{aggregate_id}", self.prefix)
    }

    pub(crate) fn handlers(&self) -> String {
        format!("{}:handlers", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_event_types() {
        let keys = Keys::new("app");
        let key = keys.stream(&EventType::OPPORTUNITY_CREATED);
        assert_eq!(key, "app:stream:opportunity.created");
        assert_eq!(
            keys.event_type_of(&key),
            Some(EventType::OPPORTUNITY_CREATED)
        );
        assert_eq!(keys.event_type_of("app:dlq:g"), None);
        assert_eq!(keys.event_type_of("other:stream:a.b"), None);
        assert_eq!(keys.dead_letters("grp.h"), "app:dlq:grp.h");
    }
}
