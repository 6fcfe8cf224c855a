//! [`TracingLayer`]: every event handled inside a span carrying the handler, event id, type,
//! correlation id and causation id, so every log line of the handler (and of the layers
//! inside) can be tied to the request that caused it.

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use tracing::Instrument as _;

/// Wraps a handler in [`Traced`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingLayer {
    _private: (),
}

impl TracingLayer {
    /// A layer that opens an `info` span named `handle_event` per event.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<H: EventHandler> tower::Layer<H> for TracingLayer {
    type Service = Traced<H>;

    fn layer(&self, inner: H) -> Traced<H> {
        Traced { inner }
    }
}

/// A handler that runs each event in a span; made by [`TracingLayer`].
#[derive(Debug)]
pub struct Traced<H> {
    inner: H,
}

impl<H> Traced<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

/// The span for one event: `handle_event{handler, event_id, event_type, correlation_id,
/// causation_id, source}`.
fn span_for(handler: &str, event: &Event) -> tracing::Span {
    tracing::info_span!(
        "handle_event",
        handler,
        event_id = %event.id,
        event_type = %event.event_type,
        correlation_id = event.correlation_id.as_deref().unwrap_or(""),
        causation_id = event.causation_id.as_deref().unwrap_or(""),
        source = %event.source,
    )
}

#[async_trait]
impl<H: EventHandler> EventHandler for Traced<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let span = span_for(self.inner.name(), event);
        async {
            let result = self.inner.handle(event).await;
            match &result {
                Ok(()) => tracing::debug!("event handled"),
                Err(error) => {
                    tracing::debug!(transient = error.is_transient(), "event failed: {error}")
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        let span = span_for(self.inner.name(), event);
        self.inner
            .on_error(event, error, attempt)
            .instrument(span)
            .await;
    }
}
