//! How the [`BatchPublisher`](super::BatchPublisher) flushes without losing an event when the
//! future that asked for the flush goes away.
//!
//! A flush owns the events it took from the buffer, and runs in its caller's future until that
//! caller goes away: then it moves, as it is, into a task of its own. So a caller that is
//! cancelled (an `add` or a `flush` under `select!` or a timeout, a publisher dropped while its
//! timer flushes) stops waiting but never stops a `publish_batch` call half-way: the events
//! are published, or go back to the front of the buffer (transient
//! failures), or are kept for the next `flush`/`close`/`take_failed` (permanent ones). The
//! report a cancelled caller no longer waits for is kept the same way. Should the flush task
//! itself be dropped (the runtime shutting down) or panic (a panicking bus), a guard puts back
//! what it still holds: the transient failures, in order, and the report's failures.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use event_core::{Event, Unpublished};

use super::report::{FailedEvent, FlushReport};
use super::{Shared, lock};

impl Shared {
    /// Publishes the events buffered when the flush starts, in batches of at most
    /// `batch_size`, if at least `min` are buffered. Transient failures go back to the front
    /// of the buffer, unless `last` (then they are handed back).
    ///
    /// The flush runs after the flushes before it (one at a time, so events leave in order),
    /// in the caller's own future while the caller waits for it: no task, no hand-over
    /// between threads. Dropping the returned future does not stop the flush: the flush then
    /// moves, as it is, into a task of its own ([`Detached`]), and its report goes to
    /// [`keep_failed`](Shared::keep_failed).
    pub(super) async fn flush(self: &Arc<Self>, min: usize, last: bool) -> FlushReport {
        let shared = self.clone();
        let caller_gone = Arc::new(AtomicBool::new(false));
        let gone = caller_gone.clone();
        let work: FlushWork = Box::pin(async move {
            let _one_at_a_time = shared.flushing.lock().await;
            let report = shared.flush_now(min, last).await;
            if gone.load(Ordering::Acquire) {
                // Kept under the lock: a `close` that flushes next finds this flush's
                // failures kept already.
                shared.keep_failed(report);
                return FlushReport::default();
            }
            report
        });
        let mut detached = Detached {
            caller_gone,
            shared: self,
            work: Some(work),
        };
        let Some(work) = detached.work.as_mut() else {
            return FlushReport::default();
        };
        let report = work.await;
        detached.work = None;
        report
    }

    /// The flush itself; the caller holds the `flushing` lock.
    async fn flush_now(&self, min: usize, last: bool) -> FlushReport {
        let remaining = {
            let buffer = lock(&self.buffer);
            if buffer.len() < min.max(1) {
                return FlushReport::default();
            }
            buffer.len()
        };
        let mut in_flight = InFlight {
            shared: self,
            report: Some(FlushReport::default()),
            retry: Vec::new(),
        };
        let mut remaining = remaining;
        while remaining > 0 {
            let batch: Vec<Event> = {
                let mut buffer = lock(&self.buffer);
                let n = remaining.min(self.settings.batch_size).min(buffer.len());
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            remaining -= batch.len();
            // The bus hands back the events it does not take.
            let results = self.publisher.bus().publish_batch_returning(batch).await;
            let InFlight { report, retry, .. } = &mut in_flight;
            let Some(report) = report.as_mut() else {
                break;
            };
            report.batches += 1;
            for result in results {
                match result {
                    Ok(id) => report.published.push(id),
                    Err(Unpublished { event, error, .. }) => {
                        if error.is_transient() && !last {
                            report.retrying.push((event.id, clone_error(&error)));
                            retry.push(event);
                        } else {
                            report.failed.push(FailedEvent { event, error });
                        }
                    }
                }
            }
        }
        in_flight.finish()
    }

    /// Keeps the events an automatic flush handed back, for the next explicit flush.
    pub(super) fn keep_failed(&self, report: FlushReport) {
        if report.failed.is_empty() {
            return;
        }
        for failed in &report.failed {
            tracing::warn!(
                source = self.publisher.source(),
                event_id = %failed.event.id,
                event_type = %failed.event.event_type,
                "batched event not published and handed back: {}",
                failed.error
            );
        }
        lock(&self.failed).extend(report.failed);
    }
}

/// A flush under way, polled by its caller.
type FlushWork = std::pin::Pin<Box<dyn std::future::Future<Output = FlushReport> + Send>>;

/// A flush its caller is running; if the caller goes away first (its future dropped), the
/// flush goes on in a task of its own, from where it stopped, and its report is kept. Should
/// that task be dropped (the runtime shutting down) or panic (a panicking bus), the flush's
/// own guard puts back what it still holds.
struct Detached<'a> {
    /// Set when the caller went away: the flush then keeps its own report.
    caller_gone: Arc<AtomicBool>,
    shared: &'a Arc<Shared>,
    work: Option<FlushWork>,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        // A panic passing through (the bus panicked in the flush): the flush's own guard has
        // put back what it held, and a panicked future must not be polled again.
        if std::thread::panicking() {
            return;
        }
        if let Some(work) = self.work.take() {
            self.caller_gone.store(true, Ordering::Release);
            self.shared.runtime.spawn(work);
        }
    }
}

/// What a flush holds between taking events from the buffer and reporting them.
struct InFlight<'a> {
    shared: &'a Shared,
    /// `None` once handed to the caller.
    report: Option<FlushReport>,
    /// Transient failures, in order, for the front of the buffer.
    retry: Vec<Event>,
}

impl InFlight<'_> {
    fn finish(mut self) -> FlushReport {
        let report = self.report.take().unwrap_or_default();
        for (id, error) in &report.retrying {
            tracing::debug!(event_id = %id, "batched event kept for the next flush: {error}");
        }
        report
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.retry.is_empty() {
            lock(&self.shared.buffer).splice(0..0, mem::take(&mut self.retry));
        }
        // Only when the flush did not finish: its failures would have no one to go to.
        if let Some(report) = self.report.take() {
            self.shared.keep_failed(report);
        }
    }
}

/// `event_core::Error` is not `Clone`; the report keeps a copy of a transient error's
/// message and kind (the event itself stays buffered with no error attached).
fn clone_error(error: &event_core::Error) -> event_core::Error {
    match error {
        event_core::Error::Timeout { operation, after } => event_core::Error::Timeout {
            operation,
            after: *after,
        },
        event_core::Error::Backend {
            backend,
            message,
            transient,
            ..
        } => event_core::Error::backend(backend, message.clone(), *transient),
        other => event_core::Error::backend("batch publisher", other.to_string(), true),
    }
}
