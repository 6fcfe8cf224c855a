//! Handler middleware in the tower shape: a layer ([`tower::Layer`]) wraps an
//! [`EventHandler`](event_core::EventHandler) and returns one, so layers stack with [`tower::ServiceBuilder`] and the
//! result subscribes like any handler.
//!
//! Redelivery, retry with backoff and dead-lettering belong to the backends (the dispatcher in
//! `event-core`); these layers add what the backends do not:
//!
//! | layer | wraps into | what it adds |
//! |---|---|---|
//! | [`TracingLayer`] | [`Traced`] | a span with handler, event id, type, correlation and causation ids |
//! | [`MetricsLayer`] | [`Metered`] | handled / failed / retried / dead-lettered counters and a duration histogram |
//! | [`IdempotencyLayer`] | [`Idempotent`] | skips an event this handler already handled (by event id) |
//! | [`CircuitBreakerLayer`] | [`CircuitBreaker`] | pauses the handler while its dependency keeps failing |
//! | [`ConcurrencyLimitLayer`] | [`ConcurrencyLimit`] | at most N events in the handler at once |
//! | [`TimeoutLayer`] | [`Timeout`] | a handler that runs too long fails as transient |
//!
//! # Order
//!
//! [`ServiceBuilder`](tower::ServiceBuilder) applies the first layer outermost. The right
//! order is the table's, top to bottom:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use event_core::{handler_fn, HandlerError, RetryPolicy};
//! use event_handlers::middleware::*;
//! use tower::ServiceBuilder;
//!
//! let handler = handler_fn("mailer", |_event| async { Ok::<(), HandlerError>(()) });
//! let store = Arc::new(MemoryIdempotencyStore::new());
//! let handler = ServiceBuilder::new()
//!     .layer(TracingLayer::new())                         // every line below carries the span
//!     .layer(MetricsLayer::new(RetryPolicy::default()))   // counts duplicates and waits too
//!     .layer(IdempotencyLayer::new(store))                // a duplicate touches nothing below
//!     .layer(CircuitBreakerLayer::new())                  // pauses before taking a permit
//!     .layer(ConcurrencyLimitLayer::new(8))               // queues before the clock starts
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))  // times the handler alone
//!     .service(SharedHandler::new(handler));
//! assert_eq!(event_core::EventHandler::name(&handler), "mailer");
//! ```
//!
//! The reasons, layer by layer:
//!
//! - **Timeout innermost.** It must time the handler, not the queue in front of it: outside
//!   [`ConcurrencyLimit`] an event waiting for a permit under load times out without ever
//!   running; outside [`CircuitBreaker`] a paused handler fails every waiting event.
//! - **Timeout inside idempotency.** A timeout drops the future it wraps. Dropped inside
//!   [`Idempotent`], only the handler stops and `Idempotent` releases its claim, so the
//!   retry runs. Dropped outside, `Idempotent` itself is cancelled between claiming the
//!   event and releasing it: the claim stays until its lease expires, and every retry until
//!   then waits for that claim and is cut by the same timeout (the `middleware_order` test
//!   shows both).
//! - **Idempotency outside the breaker and the limit**, so a duplicate is acknowledged at once
//!   without waiting for a paused dependency or a permit.
//! - **Metrics and tracing outermost**, so skipped duplicates, breaker pauses and timeouts are
//!   all counted and logged inside the span.
//!
//! The wrong order, for contrast (it compiles, and misbehaves as described above):
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use event_core::{handler_fn, HandlerError};
//! # use event_handlers::middleware::*;
//! # use tower::ServiceBuilder;
//! # let handler = handler_fn("mailer", |_event| async { Ok::<(), HandlerError>(()) });
//! # let store = Arc::new(MemoryIdempotencyStore::new());
//! // WRONG: the timeout cancels Idempotent mid-claim (retries refused until the lease
//! // expires) and counts the time spent waiting for a permit.
//! let handler = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .layer(ConcurrencyLimitLayer::new(8))
//!     .layer(IdempotencyLayer::new(store))
//!     .service(SharedHandler::new(handler));
//! ```

mod circuit_breaker;
mod concurrency;
mod idempotency;
mod metrics;
mod shared;
mod timeout;
mod tracing;

pub use circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitState};
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
#[cfg(feature = "redis")]
pub use idempotency::RedisIdempotencyStore;
pub use idempotency::{
    Claim, IdempotencyLayer, IdempotencyStore, Idempotent, MemoryIdempotencyStore, StoreError,
};
pub use metrics::{Metered, MetricsLayer, metric_names};
pub use shared::SharedHandler;
pub use timeout::{Timeout, TimeoutLayer};
pub use tracing::{Traced, TracingLayer};
