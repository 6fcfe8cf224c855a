//! The recording handler the trials subscribe: it records what it is given and follows a
//! script of successes, failures, panics and waits, chosen per event and attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use event_core::{Event, EventHandler, EventId, HandlerError};
use tokio::sync::Semaphore;

use super::{DEADLINE, fresh_handler, wait_until};

/// What a [`Recorder`] does with one attempt.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Succeed at once.
    Succeed,
    /// Yield to the scheduler this many times, then succeed (shakes up interleavings).
    Yield(u32),
    /// Work for this long, then succeed.
    Work(Duration),
    /// Fail with a transient error.
    Transient,
    /// Fail with a permanent error.
    Permanent,
    /// Panic.
    Panic,
    /// Wait for a permit of the gate (the trial adds permits to let calls through), then
    /// succeed.
    Gate(Arc<Semaphore>),
}

/// One call of `on_error`.
#[derive(Clone, Debug)]
pub(crate) struct ErrorCall {
    pub(crate) id: EventId,
    pub(crate) attempt: u32,
    pub(crate) transient: bool,
    pub(crate) message: String,
}

type Script = dyn Fn(&Event, u32) -> Step + Send + Sync;

#[derive(Default)]
struct Record {
    /// Events handled successfully, in the order they finished.
    handled: Vec<Event>,
    /// Calls of `handle` per event id.
    attempts: HashMap<EventId, u32>,
    /// Every call of `handle`, in order.
    calls: Vec<EventId>,
    /// Every call of `on_error`, in order.
    errors: Vec<ErrorCall>,
}

/// A handler that records what it is given and follows a script: succeed, fail transiently
/// or permanently, panic, or work for a while, chosen per event and attempt.
pub(crate) struct Recorder {
    name: String,
    script: Box<Script>,
    record: Mutex<Record>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Recorder {
    /// A recorder that handles everything successfully.
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Self::scripted(name, |_, _| Step::Succeed)
    }

    /// A recorder with a fresh name that handles everything successfully.
    pub(crate) fn fresh() -> Arc<Self> {
        Self::new(&fresh_handler())
    }

    /// A recorder whose `script(event, attempt)` (attempts counted from 1 per event id)
    /// decides each call.
    pub(crate) fn scripted(
        name: &str,
        script: impl Fn(&Event, u32) -> Step + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            script: Box::new(script),
            record: Mutex::new(Record::default()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        // A scripted panic never happens while the lock is held, but a poisoned lock must not
        // hide the trial's real failure.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events handled successfully, in the order they finished.
    pub(crate) fn handled(&self) -> Vec<Event> {
        self.record().handled.clone()
    }

    /// Ids of the events handled successfully, in order.
    pub(crate) fn handled_ids(&self) -> Vec<EventId> {
        self.record().handled.iter().map(|e| e.id).collect()
    }

    /// How many events were handled successfully.
    pub(crate) fn handled_count(&self) -> usize {
        self.record().handled.len()
    }

    /// Whether the event was handled successfully.
    pub(crate) fn has_handled(&self, id: &EventId) -> bool {
        self.record().handled.iter().any(|e| e.id == *id)
    }

    /// Calls of `handle`, all events.
    pub(crate) fn calls(&self) -> usize {
        self.record().calls.len()
    }

    /// Calls of `handle` for one event.
    pub(crate) fn calls_for(&self, id: &EventId) -> u32 {
        self.record().attempts.get(id).copied().unwrap_or(0)
    }

    /// Every call of `on_error`, in order.
    pub(crate) fn errors(&self) -> Vec<ErrorCall> {
        self.record().errors.clone()
    }

    /// Calls of `handle` running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The most calls of `handle` that ran at the same time.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until the event has been handled successfully.
    pub(crate) async fn wait_for_event(&self, id: &EventId) -> anyhow::Result<()> {
        wait_until(
            DEADLINE,
            &format!("{} handled event {id}", self.name),
            || self.has_handled(id),
        )
        .await
    }

    /// Waits until at least `n` events have been handled successfully.
    pub(crate) async fn wait_for_count(&self, n: usize) -> anyhow::Result<()> {
        wait_until(
            DEADLINE,
            &format!("{} handled {n} events", self.name),
            || self.handled_count() >= n,
        )
        .await
        .with_context(|| format!("{} had handled {}", self.name, self.handled_count()))
    }
}

impl AsRef<Recorder> for Recorder {
    fn as_ref(&self) -> &Recorder {
        self
    }
}

/// Counts a call as in flight until dropped, even when the call panics.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventHandler for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _in_flight = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let attempt = {
            let mut record = self.record();
            record.calls.push(event.id);
            let attempt = record.attempts.entry(event.id).or_default();
            *attempt += 1;
            *attempt
        };
        match (self.script)(event, attempt) {
            Step::Succeed => {}
            Step::Yield(n) => {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            }
            Step::Work(d) => tokio::time::sleep(d).await,
            Step::Transient => {
                return Err(HandlerError::transient(format!(
                    "scripted transient failure of {} at attempt {attempt}",
                    event.id
                )));
            }
            Step::Permanent => {
                return Err(HandlerError::permanent(format!(
                    "scripted permanent failure of {} at attempt {attempt}",
                    event.id
                )));
            }
            Step::Panic => panic!("scripted panic of {} at attempt {attempt}", event.id),
            Step::Gate(gate) => {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
            }
        }
        self.record().handled.push(event.clone());
        Ok(())
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.record().errors.push(ErrorCall {
            id: event.id,
            attempt,
            transient: error.is_transient(),
            message: error.message().to_string(),
        });
    }
}
