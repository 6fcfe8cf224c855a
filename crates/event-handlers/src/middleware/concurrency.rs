//! [`ConcurrencyLimitLayer`]: at most N events inside a handler at once, whatever the
//! subscription's concurrency; the others wait for a permit.
//!
//! The subscription's own concurrency (`EVENT_HANDLER_CONCURRENCY`) is per subscription; this
//! limit is per wrapped handler, or shared across handlers that use one dependency (a
//! connection pool of ten, say) with [`ConcurrencyLimitLayer::shared`].

use std::sync::Arc;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use tokio::sync::Semaphore;

/// Wraps a handler in [`ConcurrencyLimit`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    max: usize,
    shared: Option<Arc<Semaphore>>,
}

impl ConcurrencyLimitLayer {
    /// Each handler wrapped by this layer gets its own limit of `max` events at once (at
    /// least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            shared: None,
        }
    }

    /// Every handler wrapped by this layer (and its clones) shares one limit of `max` events
    /// at once, for handlers that use one scarce dependency.
    pub fn shared(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            shared: Some(Arc::new(Semaphore::new(max))),
        }
    }
}

impl<H: EventHandler> tower::Layer<H> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<H>;

    fn layer(&self, inner: H) -> ConcurrencyLimit<H> {
        ConcurrencyLimit {
            inner,
            max: self.max,
            permits: self
                .shared
                .clone()
                .unwrap_or_else(|| Arc::new(Semaphore::new(self.max))),
        }
    }
}

/// A handler with a bound on events in progress; made by [`ConcurrencyLimitLayer`].
#[derive(Debug)]
pub struct ConcurrencyLimit<H> {
    inner: H,
    max: usize,
    permits: Arc<Semaphore>,
}

impl<H> ConcurrencyLimit<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// Events in progress right now.
    pub fn in_flight(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for ConcurrencyLimit<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        // The semaphore is never closed, so acquiring fails only if that changes; treat it
        // as transient rather than panic.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HandlerError::transient("the concurrency limit was closed"))?;
        let gauge = ::metrics::gauge!(
            super::metric_names::IN_FLIGHT,
            "handler" => self.inner.name().to_owned(),
        );
        gauge.increment(1.0);
        let result = self.inner.handle(event).await;
        gauge.decrement(1.0);
        result
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::middleware::SharedHandler;
    use event_core::{EventType, handler_fn};
    use tokio::sync::Barrier;
    use tower::Layer;

    /// Five events at once through a limit of two: never more than two inside, and all five
    /// finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_the_limit_inside() {
        let inside = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (i, p) = (inside.clone(), peak.clone());
        let handler = handler_fn("limited", move |_e| {
            let (i, p) = (i.clone(), p.clone());
            async move {
                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                i.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        });
        let limited = Arc::new(ConcurrencyLimitLayer::new(2).layer(SharedHandler::new(handler)));
        let start = Arc::new(Barrier::new(5));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let limited = limited.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    let event = Event::builder(EventType::AGENT_STARTED, "t")
                        .build()
                        .unwrap();
                    start.wait().await;
                    limited.handle(&event).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert!(peak.load(Ordering::SeqCst) >= 1);
        assert_eq!(limited.in_flight(), 0);
    }
}
