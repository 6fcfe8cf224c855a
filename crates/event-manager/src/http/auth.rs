//! Bearer-token authentication with two roles, from `EVENT_API_TOKENS`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use event_core::config::table::{Rule, Secret, Variable};

use super::error::ApiError;
use crate::Error;

/// `EVENT_API_TOKENS`: the bearer tokens, parsed by [`ApiTokens::parse`].
pub(super) const EVENT_API_TOKENS: Variable = Variable {
    name: "EVENT_API_TOKENS",
    default: None,
    default_note: "no tokens, every HTTP API request is refused (401) and `eventbus serve` does not start",
    rule: Rule::Text(
        "comma-separated `role:token` entries, role `read` or `admin`, tokens of at least 16 characters",
    ),
    secret: Secret::Whole,
    original: false,
    doc: "the bearer tokens of the manager's HTTP API (`event_manager::http::ApiTokens::from_env`). `read` tokens may use the `GET` endpoints and `/metrics`; `admin` tokens also publish, replay, remove handlers and redrive dead letters. A bad entry is named by its position, never shown; tokens never appear in `Debug` output, logs, stats or errors. Generate them with `openssl rand -hex 24`.",
};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read stats, health, types, recent events, dead letters, views, the schema, metrics.
    Read,
    /// Everything `Read` may, plus publish, replay, remove handlers and redrive dead letters.
    Admin,
}

/// The shortest token accepted: guessing one must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// The API's bearer tokens and their roles. `Debug` shows how many, never the tokens.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<(Role, String)>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admin = self
            .tokens
            .iter()
            .filter(|(r, _)| *r == Role::Admin)
            .count();
        f.debug_struct("ApiTokens")
            .field("admin", &admin)
            .field("read", &(self.tokens.len() - admin))
            .finish()
    }
}

impl ApiTokens {
    /// No tokens: every request is refused with 401.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds a token with a role.
    pub fn with(mut self, role: Role, token: impl Into<String>) -> Self {
        self.tokens.push((role, token.into()));
        self
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Parses `EVENT_API_TOKENS`: comma-separated `role:token` entries, role `read` or
    /// `admin`, each token at least 16 characters. Empty means no tokens.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the entry by position, never showing a token.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let mut tokens = Vec::new();
        for (n, entry) in value.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let problem = |what: &str| Error::InvalidSetting {
                variable: EVENT_API_TOKENS.name,
                problem: format!(
                    "entry {} {what}; expected comma-separated role:token entries, role read or admin, tokens of at least {MIN_TOKEN_LEN} characters",
                    n + 1
                ),
            };
            let Some((role, token)) = entry.split_once(':') else {
                return Err(problem("has no role"));
            };
            let role = match role.trim().to_ascii_lowercase().as_str() {
                "read" => Role::Read,
                "admin" => Role::Admin,
                _ => return Err(problem("has an unknown role")),
            };
            let token = token.trim();
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(problem("has a token that is too short"));
            }
            tokens.push((role, token.to_string()));
        }
        Ok(Self { tokens })
    }

    /// Reads `EVENT_API_TOKENS` (unset is no tokens).
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(&std::env::var(EVENT_API_TOKENS.name).unwrap_or_default())
    }

    /// The role of a presented token. Compares against every token in constant time, so the
    /// time taken says nothing about how close a guess was.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (role, token) in &self.tokens {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The state the auth layer needs: the tokens and the role a route requires.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) tokens: Arc<ApiTokens>,
    pub(crate) required: Role,
}

/// Refuses requests without a valid bearer token (401) or with too weak a role (403).
pub(crate) async fn require(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        super::metrics::count_unauthorized();
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a bearer token: Authorization: Bearer <token>",
        ));
    };
    let Some(role) = guard.tokens.role_of(presented) else {
        super::metrics::count_unauthorized();
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        ));
    };
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = if role < guard.required {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this operation needs an admin token",
        )
        .into_response()
    } else {
        next.run(request).await
    };
    super::metrics::count_request(&method, route.as_ref(), response.status());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_never_shows_tokens() {
        let tokens =
            ApiTokens::parse(" admin:aaaaaaaaaaaaaaaaaaaa , read:bbbbbbbbbbbbbbbbbbbb,").unwrap();
        assert_eq!(tokens.role_of("aaaaaaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(tokens.role_of("bbbbbbbbbbbbbbbbbbbb"), Some(Role::Read));
        assert_eq!(tokens.role_of("bbbbbbbbbbbbbbbbbbb"), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(format!("{tokens:?}"), "ApiTokens { admin: 1, read: 1 }");
        assert!(ApiTokens::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named_by_position_without_the_token() {
        for (value, what) in [
            ("admin:s3cr3t", "too short"),
            ("writer:cccccccccccccccccccc", "unknown role"),
            (
                "read:dddddddddddddddddddd,eeeeeeeeeeeeeeeeeeee",
                "entry 2 has no role",
            ),
        ] {
            let err = ApiTokens::parse(value).unwrap_err().to_string();
            assert!(
                err.contains("EVENT_API_TOKENS") && err.contains(what),
                "{err}"
            );
            for secret in ["s3cr3t", "cccccccccccccccccccc", "eeeeeeeeeeeeeeeeeeee"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
    }
}
