//! [`SharedHandler`]: an `Arc<dyn EventHandler>` (or any `Arc` of a handler) as a handler
//! value that layers can wrap.

use std::sync::Arc;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};

/// A handler held by `Arc`, usable where a layer wants a handler by value.
///
/// `event-core` implements [`EventHandler`] for concrete types only; this newtype lets a layer
/// wrap an `Arc<dyn EventHandler>` (what the registry and [`handler_fn`](event_core::handler_fn)
/// hand out) without cloning the handler.
///
/// ```
/// use event_core::{handler_fn, EventHandler, HandlerError};
/// use event_handlers::middleware::SharedHandler;
///
/// let shared = SharedHandler::new(handler_fn("audit", |_e| async { Ok::<(), HandlerError>(()) }));
/// assert_eq!(shared.name(), "audit");
/// ```
pub struct SharedHandler(Arc<dyn EventHandler>);

impl SharedHandler {
    /// Wraps a shared handler.
    pub fn new(handler: Arc<dyn EventHandler>) -> Self {
        Self(handler)
    }

    /// The handler inside.
    pub fn inner(&self) -> &Arc<dyn EventHandler> {
        &self.0
    }
}

impl Clone for SharedHandler {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl std::fmt::Debug for SharedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedHandler")
            .field(&self.0.name())
            .finish()
    }
}

#[async_trait]
impl EventHandler for SharedHandler {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.0.handle(event).await
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.0.on_error(event, error, attempt).await;
    }
}
