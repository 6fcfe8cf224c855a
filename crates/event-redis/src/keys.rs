//! The key layout: every key the bus uses, under `{REDIS_KEY_PREFIX}:`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:stream:{event_type}` | stream | the events of one type |
//! | `{prefix}:redrive:{group}` | stream | dead letters handed back to one group |
//! | `{prefix}:dlq:{group}` | stream | the dead letters of one group |
//! | `{prefix}:aggregate:{aggregate_type}:{aggregate_id}` | list | an aggregate's history |
//! | `{prefix}:handlers` | set | the handlers that ever subscribed |
//! | `{prefix}:aggregates:unpublished` | sorted set | on a cluster: appends not yet published |
//!
//! On a Redis Cluster the layout is the same: each key lands in the hash slot of its whole
//! name, so the streams of different event types spread over the masters. A command or script
//! must keep to the keys of one slot; [`Keys::by_slot`] splits a list of keys accordingly.

use event_core::EventType;

/// Builds the keys of one bus, and knows where they lie on a cluster.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    /// Whether the server is a Redis Cluster: keys of different hash slots then cannot share
    /// a command.
    cluster: bool,
}

impl Keys {
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        Self {
            prefix: prefix.to_string(),
            cluster,
        }
    }

    /// Whether the server is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The indices of `keys` in groups that each lie in one hash slot, in the order of each
    /// group's first key, each group in the keys' order: every group can go into one command
    /// or script. One group of them all when the server is not a cluster.
    pub(crate) fn by_slot<K: AsRef<str>>(&self, keys: &[K]) -> Vec<Vec<usize>> {
        if !self.cluster {
            return vec![(0..keys.len()).collect()];
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = fred::util::redis_keyslot(key.as_ref().as_bytes());
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Whether one command may touch every key of `keys`.
    pub(crate) fn one_slot<K: AsRef<str>>(&self, keys: &[K]) -> bool {
        self.by_slot(keys).len() <= 1
    }

    pub(crate) fn stream(&self, event_type: &EventType) -> String {
        format!("{}:stream:{}", self.prefix, event_type)
    }

    /// The pattern that matches every event stream, for `SCAN`.
    pub(crate) fn stream_pattern(&self) -> String {
        format!("{}:stream:*", self.prefix)
    }

    /// Whether `key` is the stream of `event_type` ([`Keys::stream`]), without building it:
    /// checked for every entry a consumer or a replay reads.
    pub(crate) fn is_stream_of(&self, key: &str, event_type: &EventType) -> bool {
        self.type_name_of(key) == Some(event_type.as_str())
    }

    /// The event type of an event stream's key.
    pub(crate) fn event_type_of(&self, key: &str) -> Option<EventType> {
        EventType::new(self.type_name_of(key)?).ok()
    }

    /// The part of an event stream's key that names its type, unchecked.
    fn type_name_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)?.strip_prefix(":stream:")
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

    /// The appends on a cluster whose events are not all published yet.
    pub(crate) fn unpublished(&self) -> String {
        format!("{}:aggregates:unpublished", self.prefix)
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
        let keys = Keys::new("app", false);
        let key = keys.stream(&EventType::OPPORTUNITY_CREATED);
        assert_eq!(key, "app:stream:opportunity.created");
        assert_eq!(
            keys.event_type_of(&key),
            Some(EventType::OPPORTUNITY_CREATED)
        );
        assert!(keys.is_stream_of(&key, &EventType::OPPORTUNITY_CREATED));
        assert!(!keys.is_stream_of(&key, &EventType::new("opportunity.created2").unwrap()));
        assert!(!keys.is_stream_of(
            "other:stream:opportunity.created",
            &EventType::OPPORTUNITY_CREATED
        ));
        assert!(!keys.is_stream_of(
            "app:dlq:opportunity.created",
            &EventType::OPPORTUNITY_CREATED
        ));
        assert_eq!(keys.event_type_of("app:dlq:g"), None);
        assert_eq!(keys.event_type_of("other:stream:a.b"), None);
        assert_eq!(keys.dead_letters("grp.h"), "app:dlq:grp.h");
    }

    #[test]
    fn a_cluster_splits_keys_by_slot() {
        let names = [
            "app:stream:a.b",
            "app:stream:c.d",
            "app:stream:a.b",
            "{t}x",
            "{t}y",
        ];
        assert_eq!(
            Keys::new("app", false).by_slot(&names),
            [vec![0, 1, 2, 3, 4]]
        );
        let groups = Keys::new("app", true).by_slot(&names);
        // The same key twice, and keys sharing a hash tag, stay together.
        assert!(groups.iter().any(|g| g.contains(&0) && g.contains(&2)));
        assert!(groups.contains(&vec![3, 4]));
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), names.len());
        assert!(Keys::new("app", true).one_slot(&["{t}x", "{t}y"]));
        assert!(!Keys::new("app", true).one_slot(&["app:stream:a.b", "app:stream:c.d"]));
    }
}
