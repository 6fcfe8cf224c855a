//! [`IdempotencyLayer`]: an event this handler already handled (by event id) is skipped.
//!
//! Delivery is at least once, so a handler can see an event again: after a crash before the
//! acknowledgement, a redrive, a replay into the handler, or a publisher that retried. The
//! layer keeps, per handler and event id, a record in an [`IdempotencyStore`]:
//!
//! 1. **Claim** the id (`SET key pending NX PX lease` on Redis). Only one instance of the
//!    handler, in any process, gets the claim.
//! 2. Run the handler. On success, mark the id **done** for `remember_for` (default 7 days,
//!    the default `EVENT_TTL_SECONDS`: an event older than that cannot be redelivered). On
//!    failure, **release** the claim so the backend's retry can run.
//! 3. An event already done is acknowledged without running the handler. One claimed by
//!    another instance that has not finished fails as transient, so the backend retries it
//!    later and then finds it done (or the claim's lease expired because that instance
//!    died, and runs it).
//!
//! The lease must outlast everything inside this layer: the handler's
//! [timeout](super::TimeoutLayer), plus any wait for a [permit](super::ConcurrencyLimitLayer)
//! or a paused [circuit](super::CircuitBreakerLayer) (default lease 5 minutes). A store that cannot be reached fails the event as transient: handling it without
//! knowing whether it was handled would break the promise.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};

pub use memory::MemoryIdempotencyStore;
#[cfg(feature = "redis")]
pub use redis::RedisIdempotencyStore;

/// The answer of [`IdempotencyStore::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the claim and must [`complete`](IdempotencyStore::complete) or
    /// [`release`](IdempotencyStore::release) it.
    Claimed,
    /// The key was handled already.
    Done,
    /// Another caller holds an unexpired claim.
    InProgress,
}

/// A failure of an [`IdempotencyStore`]; the event fails as transient.
#[derive(Debug, thiserror::Error)]
#[error("idempotency store ({store}) failed: {message}; the event will be retried")]
pub struct StoreError {
    store: &'static str,
    message: String,
}

impl StoreError {
    /// A failure of the store named `store` (`memory`, `redis`).
    pub fn new(store: &'static str, message: impl Into<String>) -> Self {
        Self {
            store,
            message: message.into(),
        }
    }
}

/// Where handled event ids are remembered. Implement it to use another database.
///
/// `token` identifies the claimant, so that a release after the lease expired and another
/// instance claimed the key does not delete that instance's claim.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for `lease` unless it is done or claimed.
    async fn claim(&self, key: &str, token: &str, lease: Duration) -> Result<Claim, StoreError>;

    /// Marks `key` done for `remember_for`.
    async fn complete(&self, key: &str, remember_for: Duration) -> Result<(), StoreError>;

    /// Drops the claim on `key` if `token` still holds it.
    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError>;
}

/// Wraps a handler in [`Idempotent`].
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
    lease: Duration,
    remember_for: Duration,
    prefix: Arc<str>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("lease", &self.lease)
            .field("remember_for", &self.remember_for)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// Remembers handled ids in `store`: claims last 5 minutes, done ids 7 days, keys
    /// `eventbus:idempotency:{handler}:{event id}`.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            lease: Duration::from_secs(300),
            remember_for: Duration::from_secs(604_800),
            prefix: Arc::from("eventbus:idempotency"),
        }
    }

    /// How long a claim lasts if its holder dies (default 5 minutes); longer than the
    /// handler's timeout.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a handled id is remembered (default 7 days, as `EVENT_TTL_SECONDS`).
    pub fn remember_for(mut self, remember_for: Duration) -> Self {
        self.remember_for = remember_for;
        self
    }

    /// The key prefix (default `eventbus:idempotency`), to share one store between
    /// applications.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }
}

impl<H: EventHandler> tower::Layer<H> for IdempotencyLayer {
    type Service = Idempotent<H>;

    fn layer(&self, inner: H) -> Idempotent<H> {
        Idempotent {
            inner,
            layer: self.clone(),
        }
    }
}

/// A handler that skips events it already handled; made by [`IdempotencyLayer`].
#[derive(Debug)]
pub struct Idempotent<H> {
    inner: H,
    layer: IdempotencyLayer,
}

impl<H: EventHandler> Idempotent<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    fn key(&self, event: &Event) -> String {
        format!("{}:{}:{}", self.layer.prefix, self.inner.name(), event.id)
    }
}

fn store_failure(error: StoreError) -> HandlerError {
    HandlerError::transient(error)
}

#[async_trait]
impl<H: EventHandler> EventHandler for Idempotent<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let key = self.key(event);
        let token = event_core::EventId::new().to_string();
        let store = &self.layer.store;
        match store
            .claim(&key, &token, self.layer.lease)
            .await
            .map_err(store_failure)?
        {
            Claim::Done => {
                tracing::debug!(handler = self.inner.name(), event_id = %event.id, "duplicate event skipped");
                ::metrics::counter!(
                    super::metric_names::DUPLICATES_SKIPPED,
                    "handler" => self.inner.name().to_owned(),
                    "event_type" => event.event_type.as_str().to_owned(),
                )
                .increment(1);
                return Ok(());
            }
            Claim::InProgress => {
                return Err(HandlerError::transient(format!(
                    "event {} is being handled by another instance of {}; retrying later",
                    event.id,
                    self.inner.name()
                )));
            }
            Claim::Claimed => {}
        }
        match self.inner.handle(event).await {
            Ok(()) => {
                store
                    .complete(&key, self.layer.remember_for)
                    .await
                    .map_err(store_failure)?;
                Ok(())
            }
            Err(error) => {
                if let Err(release) = store.release(&key, &token).await {
                    // The claim then lasts until its lease expires; the retry waits for that.
                    tracing::warn!(handler = self.inner.name(), event_id = %event.id, "{release}");
                }
                Err(error)
            }
        }
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::middleware::SharedHandler;
    use event_core::{EventType, handler_fn};
    use tower::Layer;

    fn counting(calls: Arc<AtomicU32>, fail_first: u32) -> SharedHandler {
        SharedHandler::new(handler_fn("counter", move |_e| {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < fail_first {
                    Err(HandlerError::transient("not yet"))
                } else {
                    Ok(())
                }
            }
        }))
    }

    #[tokio::test]
    async fn second_delivery_is_skipped_and_a_failure_can_be_retried() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let handler = IdempotencyLayer::new(store.clone()).layer(counting(calls.clone(), 1));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        // First attempt fails: the claim is released, so the retry runs.
        handler.handle(&event).await.unwrap_err();
        handler.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Done: a redelivery is acknowledged without running the handler.
        handler.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Another event runs.
        let other = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        handler.handle(&other).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn handlers_with_different_names_do_not_share_ids() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryIdempotencyStore::new());
        let layer = IdempotencyLayer::new(store);
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let a = layer.layer(counting(calls.clone(), 0));
        let b = layer.layer(SharedHandler::new(handler_fn("other", move |_e| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        a.handle(&event).await.unwrap();
        b.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn claimed_elsewhere_is_a_transient_failure() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let handler = IdempotencyLayer::new(store.clone()).layer(counting(calls.clone(), 0));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        let key = format!("eventbus:idempotency:counter:{}", event.id);
        assert_eq!(
            store
                .claim(&key, "someone-else", Duration::from_secs(60))
                .await
                .unwrap(),
            Claim::Claimed
        );
        let error = handler.handle(&event).await.unwrap_err();
        assert!(error.is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
