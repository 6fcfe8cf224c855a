//! What one client can cost the API: a deadline per request, a cap on the requests served at
//! once (beyond it, 503 at once rather than a queue), a rate per token (beyond it, 429), each
//! refusal with `Retry-After`, and a bound on the events one `GET /recent` reads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use event_core::config::table::{EnvSettings, Reader, Rule, Secret, Variable};
use tokio::sync::Semaphore;

use super::error::ApiError;

pub(super) const EVENT_API_TIMEOUT_MS: Variable = Variable {
    name: "EVENT_API_TIMEOUT_MS",
    default: Some("30000"),
    default_note: "",
    rule: Rule::Whole {
        min: 100,
        max: 3_600_000,
    },
    secret: Secret::No,
    original: false,
    doc: "how long the HTTP API works on one request before it stops and answers 503 `timeout`. A publish or redrive stopped so may still have taken effect, as with any lost answer.",
};

pub(super) const EVENT_API_MAX_CONCURRENT: Variable = Variable {
    name: "EVENT_API_MAX_CONCURRENT",
    default: Some("128"),
    default_note: "",
    rule: Rule::Whole {
        min: 1,
        max: 100_000,
    },
    secret: Secret::No,
    original: false,
    doc: "how many requests the HTTP API serves at once; one more is answered 503 `overloaded` with `Retry-After: 1` at once, instead of waiting in a queue.",
};

pub(super) const EVENT_API_RATE_LIMIT: Variable = Variable {
    name: "EVENT_API_RATE_LIMIT",
    default: Some("100"),
    default_note: "",
    rule: Rule::Whole {
        min: 0,
        max: 1_000_000,
    },
    secret: Secret::No,
    original: false,
    doc: "requests per second each API token may make, in bursts of up to twice that; beyond, 429 `rate_limited` with `Retry-After`. 0: no limit.",
};

pub(super) const EVENT_API_MAX_SCAN: Variable = Variable {
    name: "EVENT_API_MAX_SCAN",
    default: Some("100000"),
    default_note: "",
    rule: Rule::Whole {
        min: 1_000,
        max: 100_000_000,
    },
    secret: Secret::No,
    original: false,
    doc: "how many events one `GET /recent` reads at most beyond the last minute's, per widening of its window; past that it answers with the newest events it read in full (`event_manager::recent_events`).",
};

pub(super) const EVENT_API_MAX_STREAMS: Variable = Variable {
    name: "EVENT_API_MAX_STREAMS",
    default: Some("16"),
    default_note: "",
    rule: Rule::Whole {
        min: 0,
        max: 10_000,
    },
    secret: Secret::No,
    original: false,
    doc: "how many live streams (`GET /api/v1/events/stream`, the dashboard's live updates) the HTTP API keeps open at once; one more is answered 503 `too_many_streams` and the dashboard polls instead. A stream holds none of `EVENT_API_MAX_CONCURRENT`'s slots and outlives `EVENT_API_TIMEOUT_MS`. 0: no streams.",
};

/// The limits of the HTTP API, part of [`ApiConfig`](super::ApiConfig).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiLimits {
    /// How long one request may take (`EVENT_API_TIMEOUT_MS`, default 30 s); then 503.
    pub timeout: Duration,
    /// Requests served at once (`EVENT_API_MAX_CONCURRENT`, default 128); one more gets 503.
    pub max_concurrent: usize,
    /// Requests per second per token (`EVENT_API_RATE_LIMIT`, default 100, bursts of twice
    /// that; 0 for none); beyond, 429.
    pub rate_per_token: u32,
    /// Events one `GET /recent` reads at most per widening of its window
    /// (`EVENT_API_MAX_SCAN`, default 100,000).
    pub max_scan: usize,
    /// Live streams open at once (`EVENT_API_MAX_STREAMS`, default 16; 0 for none); one
    /// more gets 503. A stream counts against `max_concurrent` and `timeout` only until its
    /// headers are sent.
    pub max_streams: usize,
}

impl Default for ApiLimits {
    /// The defaults of the variables' table.
    fn default() -> Self {
        Self::read(&mut Reader::new(&|_| None))
    }
}

impl EnvSettings for ApiLimits {
    const VARIABLES: &'static [Variable] = &[
        EVENT_API_TIMEOUT_MS,
        EVENT_API_MAX_CONCURRENT,
        EVENT_API_RATE_LIMIT,
        EVENT_API_MAX_SCAN,
        EVENT_API_MAX_STREAMS,
    ];

    fn read(reader: &mut Reader<'_>) -> Self {
        Self {
            timeout: reader.millis(&EVENT_API_TIMEOUT_MS),
            max_concurrent: reader.whole(&EVENT_API_MAX_CONCURRENT),
            rate_per_token: reader.whole(&EVENT_API_RATE_LIMIT),
            max_scan: reader.whole(&EVENT_API_MAX_SCAN),
            max_streams: reader.whole(&EVENT_API_MAX_STREAMS),
        }
    }

    fn write(&self, name: &str) -> Option<String> {
        Some(match name {
            "EVENT_API_TIMEOUT_MS" => self.timeout.as_millis().to_string(),
            "EVENT_API_MAX_CONCURRENT" => self.max_concurrent.to_string(),
            "EVENT_API_RATE_LIMIT" => self.rate_per_token.to_string(),
            "EVENT_API_MAX_SCAN" => self.max_scan.to_string(),
            "EVENT_API_MAX_STREAMS" => self.max_streams.to_string(),
            _ => return None,
        })
    }
}

/// A refusal that says when to come back.
fn retry_after(error: ApiError, seconds: u64) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The outermost layer: a request beyond the concurrency cap is refused at once, one that
/// outlives the deadline is stopped (its future dropped) and answered 503. Both hold until
/// the response's headers: a live stream's body (`GET /stream`) holds no slot and has no
/// deadline; `EVENT_API_MAX_STREAMS` bounds the streams.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
}

impl Gate {
    pub(crate) fn new(limits: &ApiLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent)),
            max_concurrent: limits.max_concurrent,
            timeout: limits.timeout,
        }
    }
}

pub(crate) async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = gate.slots.clone().try_acquire_owned() else {
        return retry_after(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "the API is serving as many requests as it takes at once ({}, EVENT_API_MAX_CONCURRENT); try again shortly",
                    gate.max_concurrent
                ),
            ),
            1,
        );
    };
    match tokio::time::timeout(gate.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} ms (EVENT_API_TIMEOUT_MS) and was stopped; a publish or redrive may still have taken effect",
                gate.timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// A token bucket.
struct Bucket {
    /// Requests that may be made now.
    available: f64,
    /// When `available` was last brought up to date.
    at: Instant,
}

/// One token bucket per configured token: the keys are the tokens' positions, so the state
/// is as small as the token list, whatever clients send.
pub(crate) struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: Vec<Mutex<Bucket>>,
}

impl RateLimits {
    pub(crate) fn new(rate_per_second: u32, tokens: usize) -> Self {
        let rate = f64::from(rate_per_second);
        let burst = (rate * 2.0).max(1.0);
        let now = Instant::now();
        Self {
            rate,
            burst,
            buckets: (0..tokens)
                .map(|_| {
                    Mutex::new(Bucket {
                        available: burst,
                        at: now,
                    })
                })
                .collect(),
        }
    }

    /// Takes one request from the bucket of token `index`: `Err(seconds)` when it is empty,
    /// with the whole seconds until a request is available again.
    pub(crate) fn take(&self, index: usize) -> Result<(), u64> {
        let Some(bucket) = self.buckets.get(index).filter(|_| self.rate > 0.0) else {
            return Ok(());
        };
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.available = (bucket.available + refill).min(self.burst);
        bucket.at = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            Ok(())
        } else {
            // At most 1 / rate seconds, and 1 at least: `Retry-After` counts whole seconds.
            Err(((1.0 - bucket.available) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// The answer to a token over its rate.
pub(crate) fn rate_limited(seconds: u64) -> Response {
    retry_after(
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this token made more requests than EVENT_API_RATE_LIMIT allows; retry after the seconds in Retry-After",
        ),
        seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_come_back() {
        let limits = RateLimits::new(5, 2);
        for _ in 0..10 {
            assert_eq!(limits.take(0), Ok(()));
        }
        assert_eq!(limits.take(0), Err(1));
        // The other token has its own bucket; an unknown index and no limit are never refused.
        assert_eq!(limits.take(1), Ok(()));
        assert_eq!(limits.take(7), Ok(()));
        let unlimited = RateLimits::new(0, 1);
        for _ in 0..1000 {
            assert_eq!(unlimited.take(0), Ok(()));
        }
    }
}
