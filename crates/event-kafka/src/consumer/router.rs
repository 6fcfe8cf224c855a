//! The handler a group's dispatcher calls: the [`Router`] hands each event to one of the
//! subscriptions of the handler in this process, and counts what each is running so that a
//! leaving subscription can wait for its own calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use tokio::sync::Notify;

/// One subscription's handler, as the router sees it.
pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) busy: AtomicUsize,
    pub(super) idle: Notify,
}

struct Busy<'a>(&'a Subscriber);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The handler the group's dispatcher calls: it hands each event to one subscription.
pub(super) struct Router {
    pub(super) name: String,
    pub(super) subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

impl Router {
    pub(super) fn subscribers(&self) -> MutexGuard<'_, Vec<Arc<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscription that handles an event: fixed by the event id while the subscribers stay.
    fn pick(&self, event: &Event) -> Option<Arc<Subscriber>> {
        let subscribers = self.subscribers();
        if subscribers.is_empty() {
            return None;
        }
        let i = (event.id.as_uuid().as_u128() % subscribers.len() as u128) as usize;
        Some(subscribers[i].clone())
    }
}

#[async_trait]
impl EventHandler for Router {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(member) = self.pick(event) else {
            return Err(HandlerError::transient(
                "no subscription of the handler is left to handle the event",
            ));
        };
        member.busy.fetch_add(1, Ordering::AcqRel);
        let _busy = Busy(&member);
        member.handler.handle(event).await
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        if let Some(member) = self.pick(event) {
            member.handler.on_error(event, error, attempt).await;
        }
    }
}
