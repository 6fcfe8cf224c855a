//! The route handlers of the HTTP API.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_core::{
    DeadLetter, DeadLetterSelection, Event, EventType, HealthStatus, RedriveReport, ReplayQuery,
    timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::ApiState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use event_publishers::EventPublisher;

use crate::paging::{ReplayCursor, recent_events, replay_page};

type ApiResult<T> = Result<T, ApiError>;
type Shared = State<Arc<ApiState>>;

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API is under /api/v1/events")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

pub(super) async fn stats(State(s): Shared) -> ApiResult<Response> {
    Ok(Json(s.manager.stats().await?).into_response())
}

pub(super) async fn health(State(s): Shared) -> Response {
    let health = s.manager.health().await;
    let status = if health.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

/// The standard types, and the custom types the bus holds events of.
pub(super) async fn types(State(s): Shared) -> Json<Vec<String>> {
    let mut types: Vec<String> = EventType::STANDARD.iter().map(|t| t.to_string()).collect();
    if let Ok(bus) = s.manager.bus()
        && let Ok(stats) = bus.stats().await
    {
        let standard: BTreeSet<String> = types.iter().cloned().collect();
        types.extend(
            stats
                .events_by_type
                .into_keys()
                .filter(|t| !standard.contains(t)),
        );
    }
    Json(types)
}

fn parse_type(value: &str) -> ApiResult<EventType> {
    Ok(EventType::new(value)?)
}

fn parse_time(field: &str, value: &str) -> ApiResult<OffsetDateTime> {
    timestamp::parse(value).map_err(|_| {
        ApiError::bad_request(format!(
            "{field} {value:?} is not an RFC 3339 timestamp such as 2026-11-26T22:00:00Z"
        ))
    })
}

/// The body of `POST /publish`.
#[derive(Deserialize)]
pub(super) struct PublishRequest {
    event_type: String,
    payload: Value,
    source: String,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    partition_key: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Serialize)]
pub(super) struct PublishResponse {
    event_id: String,
    event_type: String,
    /// The event's own timestamp (the original returned the time of the response).
    timestamp: String,
    success: bool,
}

pub(super) async fn publish(
    State(s): Shared,
    ApiJson(request): ApiJson<PublishRequest>,
) -> ApiResult<Response> {
    let event_type = parse_type(&request.event_type)?;
    let Value::Object(payload) = request.payload else {
        return Err(ApiError::bad_request("payload must be a JSON object"));
    };
    if request.source.trim().is_empty() {
        return Err(ApiError::bad_request(
            "source must name the publishing service, found an empty string",
        ));
    }
    let bus = s.manager.bus()?;
    // Through the publishers: payloads of the catalog's types are validated as typed ones
    // are, and the metadata (`publisher_source`, `published_at`) is the same.
    let mut publisher = EventPublisher::new(bus.clone(), request.source);
    if let Some(id) = request.correlation_id {
        publisher = publisher.for_request(id);
    }
    if let Some(id) = request.causation_id {
        publisher = publisher.with_causation_id(id);
    }
    for (name, value) in request.metadata.unwrap_or_default() {
        publisher = publisher.with_metadata(name, value);
    }
    let event = publisher
        .json_event(event_type, payload, request.partition_key)
        .map_err(publish_error)?;
    let (event_type, at) = (event.event_type.to_string(), event.timestamp);
    let id = bus.publish(event).await?;
    Ok(Json(PublishResponse {
        event_id: id.to_string(),
        event_type,
        timestamp: timestamp::format(at),
        success: true,
    })
    .into_response())
}

/// The body of `POST /replay`.
#[derive(Deserialize)]
pub(super) struct ReplayRequest {
    /// One type (the original's field).
    event_type: Option<String>,
    /// Several types; with neither field, every type.
    #[serde(default)]
    event_types: Vec<String>,
    from_timestamp: String,
    to_timestamp: Option<String>,
    /// Events per page (default 100); above the page size it is served in pages.
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ReplayResponse {
    events: Vec<Event>,
    count: usize,
    /// Send it back as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

pub(super) async fn replay(
    State(s): Shared,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayResponse>> {
    let mut types = Vec::new();
    for t in request.event_type.iter().chain(&request.event_types) {
        types.push(parse_type(t)?);
    }
    let from = parse_time("from_timestamp", &request.from_timestamp)?;
    let mut query = ReplayQuery::new(types, from);
    if let Some(to) = &request.to_timestamp {
        query = query.to(parse_time("to_timestamp", to)?);
    }
    query.validate()?;
    let limit = request.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let cursor = request
        .cursor
        .as_deref()
        .map(str::parse::<ReplayCursor>)
        .transpose()?;
    let page_size = limit.min(s.config.max_page);
    let bus = s.manager.bus()?;
    let page = replay_page(bus.as_ref(), query, cursor, page_size).await?;
    Ok(Json(ReplayResponse {
        count: page.events.len(),
        events: page.events,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// The query of `GET /recent`.
#[derive(Deserialize)]
pub(super) struct RecentQuery {
    event_type: Option<String>,
    limit: Option<usize>,
    hours: Option<i64>,
}

pub(super) async fn recent(
    State(s): Shared,
    ApiQuery(query): ApiQuery<RecentQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 500"));
    }
    let hours = query.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(ApiError::bad_request("hours must be from 1 to 168"));
    }
    let types = query
        .event_type
        .as_deref()
        .map(parse_type)
        .transpose()?
        .into_iter()
        .collect();
    let bus = s.manager.bus()?;
    Ok(Json(
        recent_events(
            bus.as_ref(),
            types,
            limit,
            time::Duration::hours(hours),
            s.config.limits.max_scan,
        )
        .await?,
    ))
}

pub(super) async fn remove_handler(
    State(s): Shared,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    s.manager.remove_handler(&name).await?;
    Ok(Json(json!({
        "message": format!("Handler '{name}' removed successfully"),
        "remaining_handlers": s.manager.handler_names(),
    })))
}

/// The query of `GET /dead-letters`.
#[derive(Deserialize)]
pub(super) struct DeadLettersQuery {
    /// One handler; without it, every handler the bus knows.
    handler: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct DeadLettersResponse {
    dead_letters: Vec<DeadLetter>,
    count: usize,
}

pub(super) async fn dead_letters(
    State(s): Shared,
    ApiQuery(query): ApiQuery<DeadLettersQuery>,
) -> ApiResult<Json<DeadLettersResponse>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 1000"));
    }
    let bus = s.manager.bus()?;
    let handlers = match query.handler {
        Some(h) => vec![h],
        None => bus.stats().await?.handlers.into_keys().collect(),
    };
    let mut all = Vec::new();
    for handler in handlers {
        let left = limit - all.len();
        if left == 0 {
            break;
        }
        all.extend(bus.dead_letters(&handler, left).await?);
    }
    Ok(Json(DeadLettersResponse {
        count: all.len(),
        dead_letters: all,
    }))
}

/// The body of `POST /dead-letters/redrive` and `POST /dead-letters/purge`: a handler and
/// either `ids` or `"all": true`.
#[derive(Deserialize)]
pub(super) struct DeadLetterRequest {
    handler: String,
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

impl DeadLetterRequest {
    /// The handler and the letters the request selects.
    fn selection(self) -> ApiResult<(String, DeadLetterSelection)> {
        let selection = match (self.ids, self.all) {
            (Some(ids), false) if !ids.is_empty() => DeadLetterSelection::Ids(ids),
            (None, true) => DeadLetterSelection::All,
            _ => {
                return Err(ApiError::bad_request(
                    "give either \"ids\": [...] (non-empty) or \"all\": true",
                ));
            }
        };
        Ok((self.handler, selection))
    }
}

pub(super) async fn redrive(
    State(s): Shared,
    ApiJson(request): ApiJson<DeadLetterRequest>,
) -> ApiResult<Json<RedriveReport>> {
    let (handler, selection) = request.selection()?;
    let bus = s.manager.bus()?;
    Ok(Json(bus.redrive_dead_letters(&handler, selection).await?))
}

/// `POST /dead-letters/purge`: deletes the selected dead letters; answers how many.
pub(super) async fn purge(
    State(s): Shared,
    ApiJson(request): ApiJson<DeadLetterRequest>,
) -> ApiResult<Json<Value>> {
    let (handler, selection) = request.selection()?;
    let bus = s.manager.bus()?;
    let purged = bus.purge_dead_letters(&handler, selection).await?;
    Ok(Json(json!({ "purged": purged })))
}

pub(super) async fn views(State(s): Shared) -> Json<Vec<String>> {
    Json(s.manager.view_names())
}

pub(super) async fn view(
    State(s): Shared,
    ApiPath(handler): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let view = s
        .manager
        .view(&handler)
        .ok_or_else(|| ApiError::not_found(format!("handler {handler:?} keeps no view")))?;
    // A view stored outside the process first reads what the other processes applied.
    view.refresh().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "view_store_unavailable",
            format!("the {handler} view cannot be brought up to date: {e}"),
        )
    })?;
    Ok(Json(
        json!({"handler": handler, "view": view.name(), "snapshot": view.snapshot()}),
    ))
}

pub(super) async fn schema() -> Json<Value> {
    Json(crate::catalog_json())
}

fn publish_error(e: event_publishers::Error) -> ApiError {
    match e {
        event_publishers::Error::Bus(e) => e.into(),
        invalid @ event_publishers::Error::Invalid { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            invalid.to_string(),
        ),
        other => ApiError::bad_request(other.to_string()),
    }
}
