//! [`ApiError`]: every failure of the HTTP API as a JSON body that says what the client can do,
//! and never what the server's internals are.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;

/// An HTTP API error: a status, a stable code and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a message about the request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 for something the client cannot fix; the cause goes to the log, not the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("HTTP API internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<event_core::Error> for ApiError {
    fn from(e: event_core::Error) -> Self {
        use event_core::Error as E;
        match &e {
            E::InvalidEventType { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_event_type", e.to_string())
            }
            E::InvalidEvent { .. } | E::InvalidArgument(_) => Self::bad_request(e.to_string()),
            E::EventTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                e.to_string(),
            ),
            E::Disabled { .. } => Self::new(StatusCode::CONFLICT, "disabled", e.to_string()),
            E::UnknownHandler { name } => Self::not_found(format!("no handler named {name:?}")),
            E::Unsupported { .. } => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported", e.to_string())
            }
            E::VersionConflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::ShutDown { .. } => Self::unavailable("the event bus is shutting down"),
            _ => {
                // Backend errors can name hosts and client internals: log them, say little.
                tracing::error!("event bus error behind the HTTP API: {e}");
                Self::unavailable("the event bus backend is unavailable; try again later")
            }
        }
    }
}

impl ApiError {
    fn unavailable(message: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Bus(e) => e.into(),
            Error::NotRunning => Self::unavailable("the event bus is not running"),
            Error::UnknownHandler(name) => Self::not_found(format!("handler {name:?} not found")),
            Error::Publish(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_payload", e.to_string())
            }
            Error::DuplicateHandler(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other => Self::internal(&other),
        }
    }
}
