//! What the harness saw: every attempt of every handler with its outcome, and every event
//! published through the harness's bus with the handler that published it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use event_core::{Event, EventId, FailureKind, HandlerError};
use tokio::time::Instant;

use crate::error::{RunningAttempt, TestBusError};

/// How one attempt of a handler on an event ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler has not returned yet.
    Running,
    /// The handler returned `Ok`: the event is acknowledged.
    Handled,
    /// The handler returned an error; a transient one is retried (up to `EVENT_MAX_RETRIES`),
    /// a permanent one dead-letters the event.
    Failed {
        /// Transient or permanent.
        kind: FailureKind,
        /// The error's message.
        message: String,
    },
    /// The handler panicked: the bus counts it as a transient failure.
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// One delivery of an event to a handler, and how it ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Attempt {
    /// The event delivered.
    pub event: Event,
    /// 1 for the first delivery of this event to this handler, 2 for the first retry, ...
    pub number: u32,
    /// How it ended.
    pub outcome: Outcome,
    started: Instant,
}

/// An event published through [`TestBus::bus`](crate::TestBus::bus) or
/// [`TestBus::publish`](crate::TestBus::publish), and who published it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Published {
    /// The event as stored.
    pub event: Event,
    /// The handler that published it from inside its `handle`, or `None` when the test (or
    /// any code outside a handler) did.
    pub by: Option<String>,
}

/// One handler's attempts.
#[derive(Default)]
struct HandlerLog {
    attempts: Vec<Attempt>,
    /// Attempts so far, by event.
    tries: HashMap<EventId, u32>,
}

#[derive(Default)]
struct Log {
    handlers: BTreeMap<String, HandlerLog>,
    published: Vec<Published>,
}

/// Everything recorded, shared by the harness, its bus and the handlers it wrapped.
#[derive(Default)]
pub(crate) struct Records {
    log: Mutex<Log>,
}

impl Records {
    /// A poisoned lock means a panic while recording, which leaves nothing half-written
    /// that matters more than the test's own failure.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the handler known, so asking for it before its first event is not an error.
    pub(crate) fn register(&self, handler: &str) {
        self.log().handlers.entry(handler.to_string()).or_default();
    }

    /// Records that `handler` starts on `event`; returns the attempt's index for
    /// [`finish`](Self::finish).
    pub(crate) fn start(&self, handler: &str, event: &Event) -> usize {
        let mut log = self.log();
        let log = log.handlers.entry(handler.to_string()).or_default();
        let tries = log.tries.entry(event.id).or_default();
        *tries += 1;
        let number = *tries;
        log.attempts.push(Attempt {
            event: event.clone(),
            number,
            outcome: Outcome::Running,
            started: Instant::now(),
        });
        log.attempts.len() - 1
    }

    pub(crate) fn finish(&self, handler: &str, index: usize, outcome: Outcome) {
        if let Some(attempt) = self
            .log()
            .handlers
            .get_mut(handler)
            .and_then(|log| log.attempts.get_mut(index))
        {
            attempt.outcome = outcome;
        }
    }

    pub(crate) fn published(&self, events: impl IntoIterator<Item = Event>, by: Option<&str>) {
        let mut log = self.log();
        for event in events {
            log.published.push(Published {
                event,
                by: by.map(str::to_string),
            });
        }
    }

    fn with_handler<T>(
        &self,
        handler: &str,
        f: impl FnOnce(&HandlerLog) -> T,
    ) -> Result<T, TestBusError> {
        let log = self.log();
        match log.handlers.get(handler) {
            Some(handler_log) => Ok(f(handler_log)),
            None => Err(TestBusError::UnknownHandler {
                name: handler.to_string(),
                known: log.handlers.keys().cloned().collect(),
            }),
        }
    }

    pub(crate) fn attempts(&self, handler: &str) -> Result<Vec<Attempt>, TestBusError> {
        self.with_handler(handler, |log| log.attempts.clone())
    }

    /// Each event once, in the order of its first delivery.
    pub(crate) fn received(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        self.with_handler(handler, |log| {
            log.attempts
                .iter()
                .filter(|a| a.number == 1)
                .map(|a| a.event.clone())
                .collect()
        })
    }

    pub(crate) fn handled(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        self.with_handler(handler, |log| {
            log.attempts
                .iter()
                .filter(|a| a.outcome == Outcome::Handled)
                .map(|a| a.event.clone())
                .collect()
        })
    }

    pub(crate) fn all_published(&self) -> Vec<Published> {
        self.log().published.clone()
    }

    pub(crate) fn published_by(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        let log = self.log();
        if !log.handlers.contains_key(handler) {
            return Err(TestBusError::UnknownHandler {
                name: handler.to_string(),
                known: log.handlers.keys().cloned().collect(),
            });
        }
        Ok(log
            .published
            .iter()
            .filter(|p| p.by.as_deref() == Some(handler))
            .map(|p| p.event.clone())
            .collect())
    }

    /// The handler's attempts that have not returned, oldest first.
    pub(crate) fn running(&self, handler: &str) -> Vec<RunningAttempt> {
        let now = Instant::now();
        let log = self.log();
        let Some(log) = log.handlers.get(handler) else {
            return Vec::new();
        };
        log.attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Running)
            .map(|a| RunningAttempt {
                event_id: a.event.id,
                event_type: a.event.event_type.to_string(),
                attempt: a.number,
                running_for: now.saturating_duration_since(a.started),
            })
            .collect()
    }
}

impl Outcome {
    /// The outcome of a handler's result.
    pub(crate) fn of(result: &Result<(), HandlerError>) -> Self {
        match result {
            Ok(()) => Self::Handled,
            Err(error) => Self::Failed {
                kind: error.kind(),
                message: error.message().to_string(),
            },
        }
    }
}

/// Shared records.
pub(crate) type SharedRecords = Arc<Records>;
