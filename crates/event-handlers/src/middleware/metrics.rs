//! [`MetricsLayer`]: counters and a duration histogram through the `metrics` facade, labelled
//! by handler and event type. The names are in [`metric_names`] and `docs/operations.md`.
//!
//! Nothing is recorded until the application installs a recorder (for example
//! `metrics-exporter-prometheus`, which the manager's `GET /metrics` uses).

use std::time::Instant;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError, RetryPolicy};

/// The names of every metric this crate records (documented in `docs/operations.md`).
pub mod metric_names {
    /// Counter: events a handler finished successfully (duplicates skipped by idempotency
    /// included). Labels: `handler`, `event_type`.
    pub const HANDLED: &str = "eventbus_handler_events_handled_total";
    /// Counter: failed attempts. Labels: `handler`, `event_type`, `kind`
    /// (`transient`/`permanent`).
    pub const FAILED: &str = "eventbus_handler_events_failed_total";
    /// Counter: failed attempts the backend will retry (transient, retries left under the
    /// [`RetryPolicy`](event_core::RetryPolicy)). Labels: `handler`, `event_type`.
    pub const RETRIED: &str = "eventbus_handler_events_retried_total";
    /// Counter: events the backend moves to the dead-letter queue after this failure (a
    /// permanent error or the last attempt). Labels: `handler`, `event_type`.
    pub const DEAD_LETTERED: &str = "eventbus_handler_events_dead_lettered_total";
    /// Histogram, seconds: how long each attempt took. Labels: `handler`, `event_type`,
    /// `outcome` (`ok`/`error`).
    pub const DURATION: &str = "eventbus_handler_duration_seconds";
    /// Counter: attempts cancelled by the timeout layer. Labels: `handler`, `event_type`.
    pub const TIMEOUTS: &str = "eventbus_handler_timeouts_total";
    /// Counter: events skipped by the idempotency layer as already handled. Labels:
    /// `handler`, `event_type`.
    pub const DUPLICATES_SKIPPED: &str = "eventbus_handler_duplicates_skipped_total";
    /// Gauge: events inside a concurrency-limited handler. Label: `handler`.
    pub const IN_FLIGHT: &str = "eventbus_handler_in_flight";
    /// Gauge: 1 while a handler's circuit is open or half-open, 0 when closed. Label:
    /// `handler`.
    pub const CIRCUIT_OPEN: &str = "eventbus_handler_circuit_open";
    /// Counter: times a handler's circuit opened. Label: `handler`.
    pub const CIRCUIT_OPENED: &str = "eventbus_handler_circuit_opened_total";
    /// Counter: alert events published by the domain handlers. Labels: `handler`, `alert`.
    pub const ALERTS: &str = "eventbus_handler_alerts_total";
}

/// Wraps a handler in [`Metered`].
///
/// Whether a failure is retried or dead-lettered is decided by the backend with its
/// [`RetryPolicy`]; give this layer the same policy (`RetryPolicy::new(config.max_retries,
/// config.retry_base, config.retry_max)`) so the two counters agree with the backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer {
    retry: RetryPolicy,
}

impl MetricsLayer {
    /// Counts with the backend's retry policy.
    pub fn new(retry: RetryPolicy) -> Self {
        Self { retry }
    }
}

impl<H: EventHandler> tower::Layer<H> for MetricsLayer {
    type Service = Metered<H>;

    fn layer(&self, inner: H) -> Metered<H> {
        Metered {
            inner,
            retry: self.retry,
        }
    }
}

/// A handler whose outcomes and durations are recorded; made by [`MetricsLayer`].
#[derive(Debug)]
pub struct Metered<H> {
    inner: H,
    retry: RetryPolicy,
}

impl<H> Metered<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for Metered<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = self.inner.handle(event).await;
        let handler = self.inner.name().to_owned();
        let event_type = event.event_type.as_str().to_owned();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ::metrics::histogram!(
            metric_names::DURATION,
            "handler" => handler.clone(),
            "event_type" => event_type.clone(),
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => ::metrics::counter!(
                metric_names::HANDLED,
                "handler" => handler,
                "event_type" => event_type,
            )
            .increment(1),
            Err(error) => ::metrics::counter!(
                metric_names::FAILED,
                "handler" => handler,
                "event_type" => event_type,
                "kind" => if error.is_transient() { "transient" } else { "permanent" },
            )
            .increment(1),
        }
        result
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        // The same decision the dispatcher makes right after this call.
        let name = if error.is_transient() && self.retry.should_retry(attempt) {
            metric_names::RETRIED
        } else {
            metric_names::DEAD_LETTERED
        };
        ::metrics::counter!(
            name,
            "handler" => self.inner.name().to_owned(),
            "event_type" => event.event_type.as_str().to_owned(),
        )
        .increment(1);
        self.inner.on_error(event, error, attempt).await;
    }
}
