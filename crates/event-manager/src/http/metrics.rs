//! `GET /metrics`: Prometheus text through `metrics-exporter-prometheus`, with the bus's gauges
//! refreshed at each scrape and a counter of API requests.

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, State};
use axum::http::{Method, StatusCode, header};
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
    // The backends' consumer counters, fresh rather than up to a second old.
    event_core::telemetry::export();
    let health = s.manager.health().await;
    metrics::gauge!("eventbus_up").set(match health.status {
        HealthStatus::Healthy => 1.0,
        HealthStatus::Degraded => 0.5,
        _ => 0.0,
    });
    for consumer in &health.consumers {
        let labels = [("handler", consumer.handler.clone())];
        metrics::gauge!("eventbus_handler_alive", &labels).set(f64::from(consumer.alive));
        metrics::gauge!("eventbus_handler_stalled", &labels).set(f64::from(consumer.stalled));
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
        }
    }
    handle.run_upkeep();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}

/// Counts an authenticated request by method, route and status, once answered. Every label
/// comes from a closed set: the method and route are those of the route that matched (a route
/// template such as `/api/v1/events/views/{handler}`, never the path sent), the status is a
/// number. Requests refused before (no or a bad token, an unknown path or method) are only
/// counted in `eventbus_http_unauthorized_total`, without labels, so no request can add a
/// series.
pub(super) fn count_request(method: &Method, route: Option<&MatchedPath>, status: StatusCode) {
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    let endpoint = route.map_or("other", |route| {
        let path = route.as_str();
        path.strip_prefix("/api/v1/events/").unwrap_or(path)
    });
    metrics::counter!(
        "eventbus_http_requests_total",
        "method" => method,
        "endpoint" => endpoint.to_string(),
        "status" => status.as_u16().to_string(),
    )
    .increment(1);
}

/// Counts a request refused for its missing or invalid token.
pub(super) fn count_unauthorized() {
    metrics::counter!("eventbus_http_unauthorized_total").increment(1);
}
