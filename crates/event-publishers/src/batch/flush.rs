//! How the [`BatchPublisher`](super::BatchPublisher) flushes without losing an event when the
//! future that asked for the flush goes away.
//!
//! A flush runs in a task of its own and owns the events it took from the buffer, so a caller
//! that is cancelled (an `add` or a `flush` under `select!` or a timeout, a publisher
//! dropped while its timer flushes) stops waiting but never stops a `publish_batch` call
//! half-way: the events are published, or go back to the front of the buffer (transient
//! failures), or are kept for the next `flush`/`close`/`take_failed` (permanent ones). The
//! report a cancelled caller no longer waits for is kept the same way. Should the flush task
//! itself be dropped (the runtime shutting down) or panic (a panicking bus), a guard puts back
//! what it still holds: the transient failures, in order, and the report's failures.

use std::mem;
use std::panic;
use std::sync::Arc;

use event_core::{Event, Unpublished};
use tokio::sync::oneshot;

use super::report::{FailedEvent, FlushReport};
use super::{Shared, lock};

impl Shared {
    /// Publishes the events buffered when the flush starts, in batches of at most
    /// `batch_size`, if at least `min` are buffered. Transient failures go back to the front
    /// of the buffer, unless `last` (then they are handed back).
    ///
    /// The flush runs in its own task, after the flushes before it (one at a time, so events
    /// leave in order). Dropping the returned future does not stop the flush; its report then
    /// goes to [`keep_failed`](Shared::keep_failed).
    pub(super) async fn flush(self: &Arc<Self>, min: usize, last: bool) -> FlushReport {
        let (report_tx, report_rx) = oneshot::channel();
        let shared = self.clone();
        let task = self.runtime.spawn(async move {
            let _one_at_a_time = shared.flushing.lock().await;
            let report = shared.flush_now(min, last).await;
            // Handed over under the lock: a `close` that flushes next finds this flush's
            // failures kept already, if no caller took them.
            if let Err(report) = report_tx.send(report) {
                shared.keep_failed(report);
            }
        });
        let mut waiting = AwaitedReport {
            shared: self,
            report: Some(report_rx),
        };
        let Some(report_rx) = waiting.report.as_mut() else {
            return FlushReport::default();
        };
        let received = report_rx.await;
        waiting.report = None;
        match received {
            Ok(report) => report,
            // The task ended without a report: it panicked (the bus did) or the runtime is
            // shutting down. What it held is back in the buffer or kept.
            Err(_) => match task.await {
                Err(error) if error.is_panic() => panic::resume_unwind(error.into_panic()),
                _ => FlushReport::default(),
            },
        }
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

/// The report a caller waits for; if the caller goes away first, the report is kept.
struct AwaitedReport<'a> {
    shared: &'a Shared,
    report: Option<oneshot::Receiver<FlushReport>>,
}

impl Drop for AwaitedReport<'_> {
    fn drop(&mut self) {
        if let Some(mut report) = self.report.take() {
            // From here on the flush task's send fails and it keeps the report itself; or the
            // send came first, and the report is read and kept here.
            report.close();
            if let Ok(report) = report.try_recv() {
                self.shared.keep_failed(report);
            }
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
