//! Event sourcing: append to an aggregate with optimistic concurrency.

use crate::{Error, Event};

/// The version an append expects the aggregate to be at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// Append whatever the current version (no concurrency check).
    Any,
    /// The aggregate must be at exactly this version; 0 means it must not exist yet.
    Exact(u64),
}

/// Events to append to one aggregate.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AggregateAppend {
    /// The kind of aggregate (`opportunity`).
    pub aggregate_type: String,
    /// The aggregate's id (`opp-123`).
    pub aggregate_id: String,
    /// The version the caller read; a mismatch refuses the whole append.
    pub expected_version: ExpectedVersion,
    /// The events, in order. Their aggregate fields are set by the append; when no partition
    /// key is set it becomes the aggregate id, so the aggregate's events stay in order.
    pub events: Vec<Event>,
}

impl AggregateAppend {
    /// An append of `events` to the aggregate.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        expected_version: ExpectedVersion,
        events: Vec<Event>,
    ) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            expected_version,
            events,
        }
    }

    /// Checks the names and the events, and stamps each event with the aggregate fields and
    /// its version, counting from `current`. Used by backends before they write.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty id or type or no events;
    /// [`Error::VersionConflict`] when the expected version is not `current`.
    pub fn prepare(&self, current: u64) -> Result<Vec<Event>, Error> {
        if self.aggregate_type.is_empty() || self.aggregate_id.is_empty() {
            return Err(Error::InvalidArgument(
                "an aggregate append needs a non-empty aggregate type and id".into(),
            ));
        }
        if self.events.is_empty() {
            return Err(Error::InvalidArgument(
                "an aggregate append needs at least one event".into(),
            ));
        }
        if let ExpectedVersion::Exact(expected) = self.expected_version
            && expected != current
        {
            return Err(Error::VersionConflict {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                expected,
                actual: current,
            });
        }
        Ok(self
            .events
            .iter()
            .zip(current + 1..)
            .map(|(event, version)| {
                let mut event = event.clone();
                event.aggregate_type = Some(self.aggregate_type.clone());
                event.aggregate_id = Some(self.aggregate_id.clone());
                event.aggregate_version = Some(version);
                if event.partition_key.is_none() {
                    event.partition_key = Some(self.aggregate_id.clone());
                }
                event
            })
            .collect())
    }
}
