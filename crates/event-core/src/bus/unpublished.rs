//! [`Unpublished`]: an event a batch publish did not take, handed back; and the copies the
//! default [`EventBus::publish_batch_returning`](super::EventBus::publish_batch_returning)
//! keeps to hand them back.

use crate::{Error, Event};

/// An event a batch publish did not take, handed back with the reason, so the caller can
/// retry it, report it or keep it: it is never lost in silence.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unpublished {
    /// The event, as it was given.
    pub event: Event,
    /// Why it was not published; [`Error::is_transient`] says whether trying again may work.
    pub error: Error,
}

impl Unpublished {
    /// An event handed back with `error`.
    pub fn new(event: Event, error: Error) -> Self {
        Self { event, error }
    }
}

/// Copies of a batch's events, kept until the bus has answered, to hand back the ones that
/// fail. They are encoded into one buffer: a batch of 100 then costs a few allocations
/// instead of the twenty or so a deep clone of each event takes (which halved a batch
/// publisher's throughput on the in-memory bus). Only a failed event is decoded.
#[derive(Debug, Default)]
pub(crate) struct Copies {
    bytes: Vec<u8>,
    /// Where each event's bytes end; an event kept as a clone has an empty range.
    ends: Vec<usize>,
    /// Events kept as clones: those with unknown envelope fields (`extra`), which could
    /// collide with a known field in the encoding, and any that failed to encode.
    cloned: Vec<(usize, Event)>,
}

impl Copies {
    /// Copies of `batch`.
    pub(crate) fn of(batch: &[Event]) -> Self {
        let mut copies = Copies {
            bytes: Vec::with_capacity(batch.len() * 512),
            ends: Vec::with_capacity(batch.len()),
            cloned: Vec::new(),
        };
        for (index, event) in batch.iter().enumerate() {
            let start = copies.bytes.len();
            if !event.extra.is_empty() || serde_json::to_writer(&mut copies.bytes, event).is_err() {
                copies.bytes.truncate(start);
                copies.cloned.push((index, event.clone()));
            }
            copies.ends.push(copies.bytes.len());
        }
        copies
    }

    /// How many events were copied.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The event at `index`, as it was when the copies were made.
    pub(crate) fn restore(&self, index: usize) -> Event {
        if let Some((_, event)) = self.cloned.iter().find(|(i, _)| *i == index) {
            return event.clone();
        }
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        let bytes = &self.bytes[start..self.ends[index]];
        // These bytes were encoded from an envelope without unknown fields a moment ago, and
        // the envelope's round trip is exact (the codec's tests), so they decode.
        serde_json::from_slice(bytes).expect("an envelope encoded by this process decodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use serde_json::json;

    #[test]
    fn copies_restore_every_event_exactly() {
        let plain = Event::builder(EventType::SIGNAL_DETECTED, "svc")
            .payload(json!({"signal_id": "s-1", "score": 0.5, "when": "2026-11-27T01:00:00Z"}))
            .partition_key("s-1")
            .correlation_id("req-1")
            .metadata("published_at", "now")
            .build()
            .unwrap();
        let mut with_extra = Event::builder(EventType::AGENT_ERROR, "svc")
            .field("agent_id", "a")
            .build()
            .unwrap();
        // An unknown envelope field named like a known one must not corrupt the copy.
        with_extra.extra.insert("source".into(), json!("shadow"));
        with_extra.extra.insert("trace".into(), json!({"span": 7}));
        let batch = vec![plain.clone(), with_extra.clone(), plain.clone()];
        let copies = Copies::of(&batch);
        assert_eq!(copies.len(), 3);
        assert_eq!(copies.restore(0), plain);
        assert_eq!(copies.restore(1), with_extra);
        assert_eq!(copies.restore(2), plain);
    }
}
