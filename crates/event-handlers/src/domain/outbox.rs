//! [`Outbox`]: follow-up events (alerts, re-analysis requests) a handler decided to publish.
//!
//! A view is updated once per event id; the events it calls for wait here until they are
//! published. If publishing fails, the handler fails as transient and keeps them, and the
//! retry of the same event (which does not touch the view again) publishes them: nothing is
//! sent twice by a retry, nothing is lost by a failed publish.

use std::sync::{Arc, Mutex};

use event_core::{Event, EventBus, HandlerError};

use super::lock;

/// Events waiting to be published.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Mutex<Vec<Event>>,
    /// One flush at a time, so two events handled at once never publish the same follow-up.
    flushing: tokio::sync::Mutex<()>,
}

impl Outbox {
    pub(crate) fn push(&self, event: Event) {
        lock(&self.pending).push(event);
    }

    /// Takes every waiting event, in order, to be published by the caller.
    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Publishes every waiting event in order; on a failure, keeps it and those after it.
    pub(crate) async fn flush(&self, bus: &Arc<dyn EventBus>) -> Result<(), HandlerError> {
        let _one_at_a_time = self.flushing.lock().await;
        loop {
            let Some(next) = lock(&self.pending).first().cloned() else {
                return Ok(());
            };
            match bus.publish(next.clone()).await {
                Ok(_) => {
                    lock(&self.pending).remove(0);
                }
                Err(error) => {
                    return Err(HandlerError::transient(format!(
                        "could not publish {} event {}: {error}; it stays queued and is retried with this event",
                        next.event_type, next.id
                    )));
                }
            }
        }
    }
}
