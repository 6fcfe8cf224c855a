//! [`EventId`]: the unique, time-ordered identity of an event.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// The identity of an event: a UUID, version 7 (time-ordered) when made by this crate.
///
/// Any UUID is accepted when decoding, so events from producers that use version 4 ids (as the
/// original Python system did) still decode. It is written as the hyphenated lower-case string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A new UUIDv7 id: ids made later sort after ids made earlier.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0.hyphenated())
    }
}

impl FromStr for EventId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::InvalidEvent {
                reason: format!("event id {s:?} is not a UUID: {e}"),
            })
    }
}

impl From<Uuid> for EventId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_v7_and_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn parses_any_uuid_and_rejects_garbage() {
        let v4 = "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f";
        assert_eq!(v4.parse::<EventId>().unwrap().to_string(), v4);
        let err = "not-a-uuid".parse::<EventId>().unwrap_err();
        assert!(err.to_string().contains("not a UUID"));
    }
}
