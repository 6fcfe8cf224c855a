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
//!    failure, and when the handler **panics**, **release** the claim so the backend's retry
//!    can run (a panic is caught, the claim released, and the panic resumed, so the
//!    dispatcher still sees and reports it).
//! 3. An event already done is acknowledged without running the handler.
//! 4. An event claimed by another instance is **waited for**: the attempt polls the store
//!    (from 10 ms, doubling, at most every second) until the claim ends: done (acknowledged
//!    without running), released (claimed and run here) or expired because its holder died
//!    (taken over and run here). It waits at most
//!    [`wait_for_claim`](IdempotencyLayer::wait_for_claim), by default the lease plus a
//!    second, so one attempt outlasts any claim taken before it began.
//!
//! # Why an attempt waits instead of failing at once
//!
//! The backend retries a transient failure `EVENT_MAX_RETRIES` times (default 3) with a
//! backoff of `EVENT_RETRY_BASE_MS` doubling (100 ms: well under a second in all), and then
//! dead-letters the event as "retries exhausted". A claim lasts its lease (default 5
//! minutes). Answering "being handled elsewhere" as a plain transient failure would burn
//! those retries long before the claim of a crashed instance expires, and dead-letter an
//! event nobody handled. Waiting inside the attempt never reaches the retry limit, whatever
//! the lease and the retry policy: an unhandled event is never dead-lettered because of a
//! claim. The cost is that a lane waits: after a crash, the events the dead instance had
//! claimed hold their lanes (and later events of the same keys, as per-key order requires)
//! until its leases expire; other lanes go on. Keep the lease short enough for that wait
//! (it must still outlast the handler's timeout and any wait for a permit or a paused
//! circuit inside this layer). A shorter `wait_for_claim` makes attempts give up sooner, as
//! a transient failure: then keep `wait_for_claim × (EVENT_MAX_RETRIES + 1)` above the lease,
//! or such events can be dead-lettered unhandled.
//!
//! A cancelled attempt (an outer timeout, a shutdown that stops waiting for the handler)
//! keeps its claim until the lease expires: the next delivery waits for that.
//!
//! A store that cannot be reached fails the event as transient: handling it without knowing
//! whether it was handled would break the promise.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use futures::FutureExt;
use tokio::time::Instant;

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
    /// `None`: the lease plus [`CLAIM_WAIT_MARGIN`].
    wait_for_claim: Option<Duration>,
    remember_for: Duration,
    prefix: Arc<str>,
}

/// Added to the lease for the default wait: the store's clock (Redis expires keys on its own)
/// may run a little behind ours.
const CLAIM_WAIT_MARGIN: Duration = Duration::from_secs(1);
/// The first pause between polls of a claim held elsewhere; it doubles up to
/// [`CLAIM_POLL_MAX`].
const CLAIM_POLL_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between polls: a holder that finishes is seen within this.
const CLAIM_POLL_MAX: Duration = Duration::from_secs(1);

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("lease", &self.lease)
            .field("wait_for_claim", &self.claim_wait())
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
            wait_for_claim: None,
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

    /// How long one attempt waits for a claim held by another instance to end before it fails
    /// as transient (default: the lease plus one second, so a claim whose holder died is
    /// taken over within one attempt). See the module documentation before lowering it:
    /// the backend's retries must still outlast the lease.
    pub fn wait_for_claim(mut self, wait: Duration) -> Self {
        self.wait_for_claim = Some(wait);
        self
    }

    fn claim_wait(&self) -> Duration {
        self.wait_for_claim
            .unwrap_or_else(|| self.lease.saturating_add(CLAIM_WAIT_MARGIN))
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

impl<H: EventHandler> Idempotent<H> {
    /// Claims `key`; while another instance holds it, polls until its claim ends (done,
    /// released, expired) or the layer's wait for a claim has passed.
    async fn claim(&self, key: &str, token: &str) -> Result<Claim, HandlerError> {
        let store = &self.layer.store;
        let deadline = Instant::now() + self.layer.claim_wait();
        let mut pause = CLAIM_POLL_FIRST;
        loop {
            let claim = store
                .claim(key, token, self.layer.lease)
                .await
                .map_err(store_failure)?;
            let now = Instant::now();
            if claim != Claim::InProgress || now >= deadline {
                return Ok(claim);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(CLAIM_POLL_MAX);
        }
    }

    async fn release(&self, key: &str, token: &str, event: &Event) {
        if let Err(release) = self.layer.store.release(key, token).await {
            // The claim then lasts until its lease expires; the retry waits for that.
            tracing::warn!(handler = self.inner.name(), event_id = %event.id, "{release}");
        }
    }
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
        match self.claim(&key, &token).await? {
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
                    "event {} is still being handled by another instance of {} after waiting {:?} for its claim; retrying later",
                    event.id,
                    self.inner.name(),
                    self.layer.claim_wait()
                )));
            }
            Claim::Claimed => {}
        }
        // A panic must not leave the claim behind: every retry would find it held until the
        // lease expires. Caught, the claim released, and resumed for the dispatcher.
        let outcome = AssertUnwindSafe(self.inner.handle(event))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => {
                store
                    .complete(&key, self.layer.remember_for)
                    .await
                    .map_err(store_failure)?;
                Ok(())
            }
            Ok(Err(error)) => {
                self.release(&key, &token, event).await;
                Err(error)
            }
            Err(panic) => {
                self.release(&key, &token, event).await;
                panic::resume_unwind(panic)
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

    /// With a short wait, a claim held elsewhere for longer fails the attempt as transient.
    #[tokio::test]
    async fn claimed_elsewhere_is_a_transient_failure() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let handler = IdempotencyLayer::new(store.clone())
            .wait_for_claim(Duration::from_millis(20))
            .layer(counting(calls.clone(), 0));
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

    /// A claim whose holder died (never released) is waited out within one attempt and
    /// taken over: the event runs here, once.
    #[tokio::test(start_paused = true)]
    async fn a_dead_instances_claim_is_waited_out_and_taken_over() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let lease = Duration::from_secs(60);
        let handler = IdempotencyLayer::new(store.clone())
            .lease(lease)
            .layer(counting(calls.clone(), 0));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        let key = format!("eventbus:idempotency:counter:{}", event.id);
        let claimed_at = Instant::now();
        assert_eq!(
            store.claim(&key, "dead", lease).await.unwrap(),
            Claim::Claimed
        );
        handler.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            claimed_at.elapsed() >= lease,
            "ran before the lease expired"
        );
        handler.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "done: not run again");
    }

    /// A claim whose holder finishes while this attempt waits: skipped, not run.
    #[tokio::test(start_paused = true)]
    async fn a_claim_completed_meanwhile_is_skipped() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let handler = IdempotencyLayer::new(store.clone()).layer(counting(calls.clone(), 0));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        let key = format!("eventbus:idempotency:counter:{}", event.id);
        let lease = Duration::from_secs(300);
        assert_eq!(
            store.claim(&key, "busy", lease).await.unwrap(),
            Claim::Claimed
        );
        let holder = {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                store.complete(&key, Duration::from_secs(3600)).await
            })
        };
        handler.handle(&event).await.unwrap();
        holder.await.unwrap().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    /// A panicking handler's claim is released and the panic goes on to the caller; the
    /// retry runs the handler.
    #[tokio::test]
    async fn a_panic_releases_the_claim_and_is_resumed() {
        let store = Arc::new(MemoryIdempotencyStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let handler = IdempotencyLayer::new(store.clone())
            .wait_for_claim(Duration::ZERO)
            .layer(SharedHandler::new(handler_fn("panicky", move |_e| {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("deliberate panic in a test handler");
                    }
                    Ok::<(), HandlerError>(())
                }
            })));
        let event = Event::builder(EventType::USER_REGISTERED, "t")
            .build()
            .unwrap();
        let first = AssertUnwindSafe(handler.handle(&event))
            .catch_unwind()
            .await;
        assert!(first.is_err(), "the panic reaches the caller");
        handler.handle(&event).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
