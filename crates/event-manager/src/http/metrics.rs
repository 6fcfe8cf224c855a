//! `GET /metrics`: Prometheus text through `metrics-exporter-prometheus`, with the bus's gauges
//! refreshed at each scrape and a counter of API requests.

use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use event_core::HealthStatus;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::ApiState;
use super::error::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once. If the
/// application installed another recorder first, ours only sees what is recorded through it
/// directly, and a warning says so.
pub(super) fn install_recorder() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed: /metrics shows only what reaches the event bus's own recorder"
            );
        }
        handle
    })
}

/// Renders every metric after refreshing the bus gauges.
pub(super) async fn scrape(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let handle = install_recorder();
    let health = s.manager.health().await;
    metrics::gauge!("eventbus_up").set(match health.status {
        HealthStatus::Healthy => 1.0,
        HealthStatus::Degraded => 0.5,
        _ => 0.0,
    });
    for consumer in &health.consumers {
        metrics::counter!("eventbus_consumer_loop_failures_total", "handler" => consumer.handler.clone())
            .absolute(consumer.loop_failures);
    }
    if let Ok(stats) = s.manager.stats().await {
        metrics::gauge!("eventbus_events_retained").set(stats.total_events as f64);
        for (event_type, count) in &stats.events_by_type {
            metrics::gauge!("eventbus_events_retained_by_type", "event_type" => event_type.clone())
                .set(*count as f64);
        }
        for (handler, h) in &stats.handlers {
            let labels = [("handler", handler.clone())];
            metrics::gauge!("eventbus_handler_lag", &labels).set(h.lag as f64);
            metrics::gauge!("eventbus_handler_pending", &labels).set(h.pending as f64);
            metrics::gauge!("eventbus_handler_dead_letter_depth", &labels)
                .set(h.dead_letter_depth as f64);
            metrics::gauge!("eventbus_handler_events_per_second", &labels).set(h.events_per_second);
            metrics::counter!("eventbus_handler_expired_total", &labels).absolute(h.expired);
        }
    }
    handle.run_upkeep();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}

/// Counts requests by method, endpoint (the first path segment under the API, so the label
/// set stays small) and status.
pub(super) async fn count_request(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path();
    let endpoint = match path.strip_prefix("/api/v1/events/") {
        Some(rest) => rest.split('/').next().unwrap_or_default().to_string(),
        None if path == "/metrics" => "metrics".to_string(),
        None => "other".to_string(),
    };
    let response = next.run(request).await;
    metrics::counter!(
        "eventbus_http_requests_total",
        "method" => method,
        "endpoint" => endpoint,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}
