//! [`BatchResults`]: the results of a `publish_batch`, one per event; [`SharedFailure`]:
//! one failure that befell several events, handed to each with its source; [`hand_back`]:
//! the results paired with the events, for `publish_batch_returning`.

use std::sync::Arc;

use crate::{Error, Event, EventId, SharedSource, Unpublished};

/// The results of a `publish_batch` while it is being sent: one per event, in order. Events
/// start as published (`Ok(id)`); an event that cannot be prepared, or whose send fails, gets
/// its error.
#[derive(Debug)]
pub struct BatchResults {
    results: Vec<Result<EventId, Error>>,
}

impl BatchResults {
    /// Prepares each event with `prepare` (encoding it, say): the results, and what was
    /// prepared with the index of its event. An event `prepare` refuses has its error already.
    pub fn prepare<T>(
        events: &[Event],
        mut prepare: impl FnMut(&Event) -> Result<T, Error>,
    ) -> (Self, Vec<(usize, T)>) {
        let mut results = Vec::with_capacity(events.len());
        let mut prepared = Vec::with_capacity(events.len());
        for (slot, event) in events.iter().enumerate() {
            match prepare(event) {
                Ok(item) => {
                    prepared.push((slot, item));
                    results.push(Ok(event.id));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        (Self { results }, prepared)
    }

    /// The event at `slot` failed with `error`.
    pub fn fail(&mut self, slot: usize, error: Error) {
        self.results[slot] = Err(error);
    }

    /// The events at `slots` failed together with `failure`: each gets a copy.
    pub fn fail_all(&mut self, slots: impl IntoIterator<Item = usize>, failure: &SharedFailure) {
        for slot in slots {
            self.fail(slot, failure.to_error());
        }
    }

    /// The results, one per event.
    pub fn into_results(self) -> Vec<Result<EventId, Error>> {
        self.results
    }
}

/// Pairs each event of a batch with its result and hands back whole the events that were not
/// published: the [`publish_batch_returning`](crate::EventBus::publish_batch_returning) of a
/// backend whose `publish_batch` reads the events by reference (it encodes them), which thus
/// keeps them while it publishes and copies none. An event without a result (fewer results
/// than events) comes back too, its fate unknown.
#[allow(
    clippy::result_large_err,
    reason = "the event comes back whole, in a Vec the caller walks once"
)]
pub fn hand_back(
    events: Vec<Event>,
    results: Vec<Result<EventId, Error>>,
) -> Vec<Result<EventId, Unpublished>> {
    let mut results = results.into_iter();
    events
        .into_iter()
        .map(|event| match results.next() {
            Some(Ok(id)) => Ok(id),
            Some(Err(error)) => Err(Unpublished::new(event, error)),
            None => Err(Unpublished::new(event, fate_unknown())),
        })
        .collect()
}

/// The error of an event a `publish_batch` returned no result for.
pub(crate) fn fate_unknown() -> Error {
    Error::backend(
        "bus",
        "publish_batch returned fewer results than events; this event's fate is unknown",
        false,
    )
}

/// One failure (a send of several events, a topic that could not be created) that every
/// event it concerns reports. [`Error`] is not `Clone`; each copy is an [`Error::Backend`]
/// with the failure's message and transience, whose source is the failure itself, shared:
/// `std::error::Error::source` leads every copy to the same underlying error, and
/// [`Error::kind`] sees through to it.
#[derive(Clone, Debug)]
pub struct SharedFailure {
    backend: &'static str,
    error: Arc<Error>,
}

impl SharedFailure {
    /// `error`, to be handed to several events of the `backend`.
    pub fn new(backend: &'static str, error: Error) -> Self {
        Self {
            backend,
            error: Arc::new(error),
        }
    }

    /// A copy for one event. Its message is the failure's own: a backend error of the same
    /// backend is not prefixed with the backend's name a second time.
    pub fn to_error(&self) -> Error {
        let message = match &*self.error {
            Error::Backend {
                backend, message, ..
            } if *backend == self.backend => message.clone(),
            other => other.to_string(),
        };
        Error::Backend {
            backend: self.backend,
            message,
            transient: self.error.is_transient(),
            source: Some(Box::new(SharedSource::new(self.error.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::{ErrorKind, EventType};

    fn event() -> Event {
        Event::builder(EventType::USER_REGISTERED, "test")
            .build()
            .expect("a valid event")
    }

    #[test]
    fn hand_back_returns_each_unpublished_event_whole() {
        let events = vec![event(), event(), event()];
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let results = vec![Ok(ids[0]), Err(Error::InvalidArgument("refused".into()))];
        let handed = hand_back(events, results);
        assert_eq!(handed.len(), 3);
        assert_eq!(handed[0].as_ref().ok(), Some(&ids[0]));
        let refused = handed[1].as_ref().expect_err("the refused event");
        assert_eq!(refused.event.id, ids[1]);
        assert_eq!(refused.error.kind(), ErrorKind::InvalidInput);
        // No result for the third: it comes back, its fate unknown.
        let unknown = handed[2].as_ref().expect_err("the event without a result");
        assert_eq!(unknown.event.id, ids[2]);
        assert!(unknown.error.to_string().contains("fate is unknown"));
    }

    #[test]
    fn one_failure_reaches_every_event_with_its_source() {
        let events = vec![event(), event(), event()];
        let (mut results, prepared) = BatchResults::prepare(&events, |e| {
            if e.id == events[1].id {
                Err(Error::InvalidArgument("refused".into()))
            } else {
                Ok(e.id)
            }
        });
        assert_eq!(prepared.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 2]);
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let failure = SharedFailure::new(
            "test",
            Error::Backend {
                backend: "test",
                message: "connection lost".into(),
                transient: true,
                source: Some(Box::new(cause)),
            },
        );
        results.fail_all(prepared.into_iter().map(|(slot, _)| slot), &failure);
        let results = results.into_results();
        assert!(matches!(&results[1], Err(Error::InvalidArgument(_))));
        let mut roots = Vec::new();
        for slot in [0, 2] {
            let Err(error) = &results[slot] else {
                panic!("slot {slot} should have failed");
            };
            assert!(error.is_transient());
            assert_eq!(error.kind(), ErrorKind::Unavailable);
            assert_eq!(error.to_string(), "test backend error: connection lost");
            // The copy's source is the shared failure; its source, the client's error.
            let shared = error.source().expect("a source");
            assert_eq!(shared.to_string(), "test backend error: connection lost");
            let root = shared.source().expect("the client's error");
            assert_eq!(root.to_string(), "reset by peer");
            roots.push(root as *const _ as *const ());
        }
        assert_eq!(roots[0], roots[1], "every copy shares one source");
    }

    #[test]
    fn a_shared_failure_keeps_its_kind() {
        let failure = SharedFailure::new(
            "test",
            Error::Timeout {
                operation: "produce",
                after: std::time::Duration::from_secs(1),
            },
        );
        let copy = failure.to_error();
        assert_eq!(copy.kind(), ErrorKind::Timeout);
        assert!(copy.is_transient());
    }
}
