//! [`handler_fn`]: a handler from a name and an async closure.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Event, EventHandler, HandlerError};

/// A handler made from a closure by [`handler_fn`].
pub struct FnHandler<F> {
    name: String,
    f: F,
}

/// Makes a handler from a name and an async closure that receives each event by `Arc`.
///
/// ```
/// use event_core::{handler_fn, HandlerError};
///
/// let handler = handler_fn("printer", |event| async move {
///     println!("{} {}", event.event_type, event.id);
///     Ok::<(), HandlerError>(())
/// });
/// ```
pub fn handler_fn<F, Fut>(name: impl Into<String>, f: F) -> Arc<FnHandler<F>>
where
    F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(FnHandler {
        name: name.into(),
        f,
    })
}

#[async_trait]
impl<F, Fut> EventHandler for FnHandler<F>
where
    F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        (self.f)(Arc::new(event.clone())).await
    }
}
