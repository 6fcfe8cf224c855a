//! [`TimeoutLayer`]: a handler that runs too long fails as transient, so the backend retries
//! it with backoff and, after the last attempt, dead-letters it.

use std::time::Duration;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};

/// Wraps a handler in [`Timeout`].
///
/// The handler's future is dropped when the time is up: work it had not finished is cancelled
/// at its next `.await`. Put this layer innermost (see the [module docs](super)).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// Each event may take at most `after`.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }
}

impl<H: EventHandler> tower::Layer<H> for TimeoutLayer {
    type Service = Timeout<H>;

    fn layer(&self, inner: H) -> Timeout<H> {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

/// A handler whose every event must finish within a time limit; made by [`TimeoutLayer`].
#[derive(Debug)]
pub struct Timeout<H> {
    inner: H,
    after: Duration,
}

impl<H> Timeout<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for Timeout<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        match tokio::time::timeout(self.after, self.inner.handle(event)).await {
            Ok(result) => result,
            Err(_) => {
                ::metrics::counter!(
                    super::metric_names::TIMEOUTS,
                    "handler" => self.inner.name().to_owned(),
                    "event_type" => event.event_type.as_str().to_owned(),
                )
                .increment(1);
                Err(HandlerError::transient(format!(
                    "handler {} did not finish event {} within {:?}; it was cancelled and will be retried",
                    self.inner.name(),
                    event.id,
                    self.after
                )))
            }
        }
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::{EventType, handler_fn};
    use tower::Layer;

    #[tokio::test(start_paused = true)]
    async fn slow_handler_fails_as_transient_and_fast_one_passes() {
        let slow = handler_fn("slow", |_e| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), HandlerError>(())
        });
        let event = Event::builder(EventType::AGENT_STARTED, "test")
            .build()
            .unwrap();
        let timed =
            TimeoutLayer::new(Duration::from_secs(1)).layer(super::super::SharedHandler::new(slow));
        let error = timed.handle(&event).await.unwrap_err();
        assert!(error.is_transient());
        assert!(error.message().contains("within 1s"), "{error}");

        let fast = handler_fn("fast", |_e| async { Ok::<(), HandlerError>(()) });
        let timed =
            TimeoutLayer::new(Duration::from_secs(1)).layer(super::super::SharedHandler::new(fast));
        timed.handle(&event).await.unwrap();
        assert_eq!(timed.name(), "fast");
    }
}
