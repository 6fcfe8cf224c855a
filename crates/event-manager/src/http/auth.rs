//! Bearer-token authentication with two roles, from `EVENT_API_TOKENS`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use event_core::config::table::{Rule, Secret, Variable};

use super::error::ApiError;
use super::limits::{RateLimits, rate_limited};
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
    doc: "the bearer tokens of the manager's HTTP API (`event_manager::http::ApiTokens::from_env`). `read` tokens may use the `GET` endpoints and `/metrics`; `admin` tokens also publish, replay, remove handlers, redrive and purge dead letters. A bad entry is named by its position, never shown; tokens never appear in `Debug` output, logs, stats or errors. Generate them with `openssl rand -hex 24`.",
};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read stats, health, types, recent events, dead letters, views, the schema, metrics.
    Read,
    /// Everything `Read` may, plus publish, replay, remove handlers, redrive and purge dead letters.
    Admin,
}

/// The shortest token accepted: guessing one must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// The shortest token accepted without a warning.
const GOOD_TOKEN_LEN: usize = 32;

/// A token's SHA-256 digest: what is kept and compared, so a comparison takes the same time
/// whatever the lengths of the token sent and the tokens kept.
type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// The API's bearer tokens and their roles, kept as SHA-256 digests. `Debug` shows how many,
/// never the tokens.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<(Role, Digest)>,
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
    pub fn with(mut self, role: Role, token: impl AsRef<str>) -> Self {
        self.tokens.push((role, digest(token.as_ref())));
        self
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
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
            let length = token.chars().count();
            if length < MIN_TOKEN_LEN {
                return Err(problem("has a token that is too short"));
            }
            if length < GOOD_TOKEN_LEN {
                tracing::warn!(
                    "EVENT_API_TOKENS entry {} has a token of {length} characters: use at least {GOOD_TOKEN_LEN} random ones (`openssl rand -hex 24` makes 48)",
                    n + 1
                );
            }
            tokens.push((role, digest(token)));
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

    /// The role of a presented token. Compares its digest against every token's in constant
    /// time, so the time taken says nothing about how close a guess was, nor how long the
    /// tokens are.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.find(presented).map(|(_, role, _)| role)
    }

    /// The position, role and digest of a presented token (the highest role if it is listed
    /// twice).
    fn find(&self, presented: &str) -> Option<(usize, Role, Digest)> {
        let presented = digest(presented);
        let mut found: Option<(usize, Role)> = None;
        for (index, (role, token)) in self.tokens.iter().enumerate() {
            let equal = token
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
            if equal && found.is_none_or(|(_, best)| *role > best) {
                found = Some((index, *role));
            }
        }
        found.map(|(index, role)| (index, role, presented))
    }
}

/// The state the auth layer needs: the tokens, their rate limits and the role a route
/// requires.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) tokens: Arc<ApiTokens>,
    pub(crate) rates: Arc<RateLimits>,
    pub(crate) required: Role,
}

/// How the access log names a token without showing it: the first 8 hexadecimal digits of its
/// SHA-256 (`printf %s "$TOKEN" | sha256sum | cut -c1-8` gives the same). Written only when
/// the log record is.
struct Fingerprint(Digest);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Refuses requests without a valid bearer token (401), over their token's rate (429) or
/// with too weak a role (403); counts and logs the others once answered.
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
    let Some((index, role, digest)) = guard.tokens.find(presented) else {
        super::metrics::count_unauthorized();
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        ));
    };
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = if let Err(seconds) = guard.rates.take(index) {
        rate_limited(seconds)
    } else if role < guard.required {
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
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    let status = response.status().as_u16();
    let token = Fingerprint(digest);
    // Who published, replayed, removed a handler or redrove dead letters, and what came of it.
    if guard.required == Role::Admin {
        tracing::info!(target: "eventbus::api::access", %token, ?role, %method, route, status, "admin request");
    } else {
        tracing::debug!(target: "eventbus::api::access", %token, ?role, %method, route, status, "read request");
    }
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
