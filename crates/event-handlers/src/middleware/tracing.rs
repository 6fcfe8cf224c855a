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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::middleware::SharedHandler;
    use event_core::{EventType, handler_fn};
    use tower::Layer;

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_handlers_lines_carry_the_events_ids() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let handler =
            TracingLayer::new().layer(SharedHandler::new(handler_fn("mailer", |_e| async {
                tracing::info!("sending the welcome mail");
                Err::<(), _>(HandlerError::transient("smtp down"))
            })));
        let event = Event::builder(EventType::USER_REGISTERED, "user_service")
            .correlation_id("req-9")
            .causation_id("cause-1")
            .build()
            .unwrap();
        handler.handle(&event).await.unwrap_err();
        handler
            .on_error(&event, &HandlerError::transient("smtp down"), 1)
            .await;

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            "handle_event{".to_owned(),
            "handler=\"mailer\"".to_owned(),
            format!("event_id={}", event.id),
            "event_type=user.registered".to_owned(),
            "correlation_id=\"req-9\"".to_owned(),
            "causation_id=\"cause-1\"".to_owned(),
        ];
        for message in [
            "sending the welcome mail",
            "event failed: smtp down",
            "handler failed: smtp down",
        ] {
            let line = lines
                .iter()
                .find(|l| l.contains(message))
                .unwrap_or_else(|| panic!("no line with {message:?} in:\n{text}"));
            for field in &expected {
                assert!(line.contains(field.as_str()), "{field} missing from {line}");
            }
        }
    }
}
