//! [`TestBusError`], and what a bus that would not settle was busy with.

use std::fmt;
use std::time::Duration;

use event_core::EventId;

/// What went wrong in the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestBusError {
    /// The bus refused an operation (a bad subscription, an event too large, ...).
    #[error(transparent)]
    Bus(#[from] event_core::Error),
    /// [`settle`](crate::TestBus::settle) waited its whole timeout and handlers were still
    /// busy: a handler that never returns, retries longer than the timeout, or a handler that
    /// publishes follow-ups without end.
    #[error(
        "the bus is not quiet after {waited:?} (a handler that never returns, retries longer than the timeout, or follow-ups without end?); still busy: {}",
        BusyList(busy)
    )]
    NotQuiet {
        /// How long `settle` waited (on tokio's clock, virtual when paused).
        waited: Duration,
        /// The handlers that still had work, and what.
        busy: Vec<BusyHandler>,
    },
    /// [`advance`](crate::TestBus::advance) needs tokio's clock paused.
    #[error(
        "the virtual clock needs tokio's clock paused: run the test with #[tokio::test(start_paused = true)] (a current-thread runtime) or call tokio::time::pause() first"
    )]
    ClockNotPaused,
    /// A handler name the harness has never seen (a typo?).
    #[error("no handler named {name:?} was subscribed through this harness; known: {known:?}")]
    UnknownHandler {
        /// The name asked for.
        name: String,
        /// The handlers the harness knows.
        known: Vec<String>,
    },
}

/// A handler that still had work when [`settle`](crate::TestBus::settle) gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusyHandler {
    /// The handler.
    pub handler: String,
    /// Events published and not yet delivered to it.
    pub waiting: u64,
    /// Events delivered and not yet finished: running, or waiting for a retry.
    pub in_flight: u64,
    /// The attempts that had not returned, oldest first.
    pub running: Vec<RunningAttempt>,
}

/// An attempt of a handler that had not returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningAttempt {
    /// The event.
    pub event_id: EventId,
    /// Its type.
    pub event_type: String,
    /// 1 for the first delivery, 2 for the first retry, ...
    pub attempt: u32,
    /// How long it had been running (on tokio's clock).
    pub running_for: Duration,
}

/// How many running attempts the message names per handler.
const NAMED: usize = 3;

struct BusyList<'a>(&'a [BusyHandler]);

impl fmt::Display for BusyList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, busy) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{}: {} waiting for delivery, {} in flight ({} running, the others queued or waiting for a retry)",
                busy.handler,
                busy.waiting,
                busy.in_flight,
                busy.running.len(),
            )?;
            for run in busy.running.iter().take(NAMED) {
                write!(
                    f,
                    " [{} {} attempt {} running for {:?}]",
                    run.event_type, run.event_id, run.attempt, run.running_for
                )?;
            }
            if busy.running.len() > NAMED {
                write!(f, " [and {} more]", busy.running.len() - NAMED)?;
            }
        }
        Ok(())
    }
}
