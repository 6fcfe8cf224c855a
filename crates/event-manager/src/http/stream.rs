//! `GET /api/v1/events/stream`: server-sent events for the dashboard (read role).
//!
//! The stream sends, in this order:
//! - `ready` once, as soon as it is open (`{"tail_limit": n}`): the client fills its tail with
//!   `GET /recent` after it, so no event falls between the two;
//! - `events` whenever the store holds events the stream has not sent yet: a JSON array,
//!   oldest first, of at most [`PUSH_LIMIT`] of them (the newest, when more came at once). The
//!   store is read every [`EVENTS_EVERY`] from shortly before the newest event sent
//!   ([`LOOKBACK`], so events stored late by a publisher whose clock is slightly behind still
//!   come), never more than a minute back; a read that takes longer than half that period
//!   (a busy store, Kafka's reads by time) is followed by a pause twice its length, so a
//!   stream keeps the store busy a third of the time at most;
//! - `events_error` when the store cannot be read (`{"error": "..."}`: replay turned off, the
//!   backend unreachable), and again with `null` once it can;
//! - `snapshot` about every second: `{"stats": ..., "health": ..., "error": ...}`, the bodies
//!   of `GET /stats` and `GET /health` (`stats` is `null` and `error` says why when the
//!   stats could not be read);
//! - `end` when the server shuts down (`{"reason": ...}`), after which the stream ends;
//! - a comment (`: keep-alive`) after 15 s without anything else, so proxies keep it open.
//!
//! A stream does not hold one of the request slots of `EVENT_API_MAX_CONCURRENT`, nor is it
//! stopped by `EVENT_API_TIMEOUT_MS`: both apply until its headers are sent. Streams have
//! their own cap, `EVENT_API_MAX_STREAMS`; one more is answered 503 `too_many_streams` with
//! `Retry-After`. The open streams are the gauge `eventbus_http_streams_open`.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use event_core::{Event, EventId, ReplayQuery};
use futures::{Stream, StreamExt as _, stream};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::ApiState;
use super::error::ApiError;

/// The most events one `events` message holds.
const PUSH_LIMIT: usize = 200;
/// How often a stream looks for new events in the store.
const EVENTS_EVERY: Duration = Duration::from_millis(500);
/// How often a stream sends a `snapshot`.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// How far before the newest event sent each read of the store starts.
const LOOKBACK: Duration = Duration::from_secs(2);
/// The longest a read of the store looks back, whatever was sent last.
const FURTHEST: time::Duration = time::Duration::minutes(1);
/// The keep-alive comment's period.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The cap on open streams, shared by the router's routes.
pub(crate) struct Streams {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Streams {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Tells the streams that the server is shutting down: [`serve`](super::serve) and
/// [`serve_tls`](super::serve_tls) add it to the router and set it when their shutdown
/// future resolves, so the streams end and the graceful shutdown does not wait on them.
#[derive(Clone)]
pub(crate) struct ShutdownSignal(pub(crate) watch::Receiver<bool>);

/// The open streams' gauge, kept right however a stream ends.
struct Open {
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("eventbus_http_streams_open").increment(1.0);
        Self { _slot: permit }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("eventbus_http_streams_open").decrement(1.0);
    }
}

pub(super) async fn stream(
    State(s): State<Arc<ApiState>>,
    Extension(streams): Extension<Arc<Streams>>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Response {
    let Ok(permit) = streams.slots.clone().try_acquire_owned() else {
        let mut refusal = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "the API keeps as many live streams open as it may ({}, EVENT_API_MAX_STREAMS); poll the JSON endpoints instead, or try again later",
                streams.max
            ),
        )
        .into_response();
        refusal
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
        return refusal;
    };
    let shutdown = shutdown.map(|Extension(signal)| signal.0);
    let mut response = Sse::new(messages(s, Open::new(permit), shutdown))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Proxies must pass each message on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// What a stream remembers between reads of the store.
struct Cursor {
    /// The newest timestamp sent.
    newest: Option<OffsetDateTime>,
    /// The ids read (sent, or skipped for newer ones) with a timestamp within twice
    /// [`LOOKBACK`] of `newest`, in the order read: a later read, which starts [`LOOKBACK`]
    /// before `newest`, sends none of them again.
    sent: VecDeque<(OffsetDateTime, EventId)>,
    sent_ids: HashSet<EventId>,
    opened: OffsetDateTime,
}

impl Cursor {
    fn from(&self, now: OffsetDateTime) -> OffsetDateTime {
        let back = self.newest.unwrap_or(self.opened) - LOOKBACK;
        back.max(now - FURTHEST)
    }

    /// The events not read before, the newest [`PUSH_LIMIT`] of them; all are remembered,
    /// so those skipped for newer ones are never sent late.
    fn take_new(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut fresh: VecDeque<Event> = VecDeque::new();
        for event in events {
            if !self.sent_ids.insert(event.id) {
                continue;
            }
            self.newest = Some(
                self.newest
                    .map_or(event.timestamp, |n| n.max(event.timestamp)),
            );
            self.sent.push_back((event.timestamp, event.id));
            fresh.push_back(event);
            if fresh.len() > PUSH_LIMIT {
                fresh.pop_front();
            }
        }
        if let Some(newest) = self.newest {
            let keep_from = newest - LOOKBACK * 2;
            // In the order read (by timestamp within one read): stop at the first to keep.
            while self.sent.front().is_some_and(|(at, _)| *at < keep_from) {
                if let Some((_, id)) = self.sent.pop_front() {
                    self.sent_ids.remove(&id);
                }
            }
        }
        fresh.into()
    }
}

/// Reads the events stored from `from` on (every type), in timestamp order.
/// The events read before an error are kept: the next read starts before them anyway.
async fn read_from(s: &ApiState, from: OffsetDateTime) -> (Vec<Event>, Option<String>) {
    let bus = match s.manager.bus() {
        Ok(bus) => bus,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut events = match bus.replay(ReplayQuery::new([], from)).await {
        Ok(events) => events,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut read = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => read.push(event),
            Err(e) => return (read, Some(e.to_string())),
        }
    }
    (read, None)
}

async fn snapshot(s: &ApiState) -> Value {
    let health = s.manager.health().await;
    match s.manager.stats().await {
        Ok(stats) => json!({"stats": stats, "health": health, "error": null}),
        Err(e) => json!({"stats": null, "health": health, "error": e.to_string()}),
    }
}

fn message(name: &str, data: &impl Serialize) -> Result<SseEvent, Infallible> {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Ok(SseEvent::default().event(name).data(data))
}

/// The stream's messages until the client goes or the server shuts down.
fn messages(
    s: Arc<ApiState>,
    open: Open,
    shutdown: Option<watch::Receiver<bool>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    struct Loop {
        s: Arc<ApiState>,
        _open: Open,
        shutdown: Option<watch::Receiver<bool>>,
        ticks: tokio::time::Interval,
        tick: u64,
        cursor: Cursor,
        /// When the store may be read again.
        next_read: tokio::time::Instant,
        /// Why the last read of the store failed.
        read_error: Option<String>,
        ended: bool,
    }
    let mut ticks = tokio::time::interval(EVENTS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Loop {
        s,
        _open: open,
        shutdown,
        ticks,
        tick: 0,
        cursor: Cursor {
            newest: None,
            sent: VecDeque::new(),
            sent_ids: HashSet::new(),
            opened: OffsetDateTime::now_utc(),
        },
        next_read: tokio::time::Instant::now(),
        read_error: None,
        ended: false,
    };
    let ready = stream::iter([message("ready", &json!({"tail_limit": PUSH_LIMIT}))]);
    let every = (SNAPSHOT_EVERY.as_millis() / EVENTS_EVERY.as_millis()).max(1) as u64;
    let rest = stream::unfold(state, move |mut l| async move {
        if l.ended {
            return None;
        }
        let shutdown = &mut l.shutdown;
        let stopping = async move {
            match shutdown.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|stop| *stop).await;
                }
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            biased;
            () = stopping => true,
            _ = l.ticks.tick() => false,
        };
        if stop {
            l.ended = true;
            let end = message("end", &json!({"reason": "the server is shutting down"}));
            return Some((vec![end], l));
        }
        let mut out = Vec::new();
        let started = tokio::time::Instant::now();
        if started >= l.next_read {
            let (read, error) = read_from(&l.s, l.cursor.from(OffsetDateTime::now_utc())).await;
            let fresh = l.cursor.take_new(read);
            if !fresh.is_empty() {
                out.push(message("events", &fresh));
            }
            // Said once, and again when it changes or clears (`null`).
            if error != l.read_error {
                out.push(message("events_error", &json!({"error": error})));
                l.read_error = error;
            }
            l.next_read = tokio::time::Instant::now() + started.elapsed() * 2;
        }
        if l.tick % every == 0 {
            out.push(message("snapshot", &snapshot(&l.s).await));
        }
        l.tick += 1;
        Some((out, l))
    })
    .flat_map(stream::iter);
    ready.chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::EventType;

    fn events(n: usize, at: OffsetDateTime) -> Vec<Event> {
        (0..n)
            .map(|i| {
                Event::builder(EventType::USER_REGISTERED, "test")
                    .field("n", i)
                    .timestamp(at + time::Duration::milliseconds(i as i64))
                    .build()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_burst_sends_its_newest_and_never_the_rest_later() {
        let now = OffsetDateTime::now_utc();
        let mut cursor = Cursor {
            newest: None,
            sent: VecDeque::new(),
            sent_ids: HashSet::new(),
            opened: now,
        };
        let burst = events(PUSH_LIMIT + 100, now);
        let sent = cursor.take_new(burst.clone());
        let newest: Vec<EventId> = burst[100..].iter().map(|e| e.id).collect();
        assert_eq!(sent.iter().map(|e| e.id).collect::<Vec<_>>(), newest);
        // Read again (the lookback overlaps): nothing, not even the 100 skipped.
        assert!(cursor.take_new(burst.clone()).is_empty());
        // One stored late with an older timestamp, within the lookback: sent.
        let late = events(1, now - time::Duration::milliseconds(500));
        assert_eq!(cursor.take_new(late.clone())[0].id, late[0].id);
        assert!(cursor.from(now) <= now - LOOKBACK + time::Duration::milliseconds(400));
    }
}
