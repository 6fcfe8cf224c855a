//! Replay in pages ([`replay_page`], [`ReplayCursor`]) and the most recent events across types
//! ([`recent_events`]): what the HTTP API and the CLI read with.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use event_core::{Error, Event, EventBus, EventId, EventType, ReplayQuery};
use futures::StreamExt;
use time::{Duration, OffsetDateTime};

/// Where the next page of a replay starts: after the event with this timestamp and id (the
/// replay order). Written as `{unix microseconds}-{event id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayCursor {
    /// The last event's timestamp.
    pub timestamp: OffsetDateTime,
    /// The last event's id.
    pub id: EventId,
}

impl ReplayCursor {
    /// The cursor just after `event`.
    pub fn after(event: &Event) -> Self {
        Self {
            timestamp: event.timestamp,
            id: event.id,
        }
    }

    fn is_past(&self, event: &Event) -> bool {
        (event.timestamp, event.id) > (self.timestamp, self.id)
    }
}

impl fmt::Display for ReplayCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.timestamp.unix_timestamp_nanos() / 1000,
            self.id
        )
    }
}

impl FromStr for ReplayCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?} is not a replay cursor (use the next_cursor of the previous page)"
            ))
        };
        let (micros, id) = s.split_once('-').ok_or_else(bad)?;
        let micros: i128 = micros.parse().map_err(|_| bad())?;
        let timestamp =
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| bad())?;
        let id = id.parse::<EventId>().map_err(|_| bad())?;
        Ok(Self { timestamp, id })
    }
}

/// One page of a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayPage {
    /// The events, in timestamp order (ties by id).
    pub events: Vec<Event>,
    /// Where the next page starts; `None` when this is the last.
    pub next_cursor: Option<ReplayCursor>,
}

/// Reads up to `limit` events of `query`'s types and window after `cursor` (from the window's
/// start when `None`). A window larger than a page is read page by page, never refused.
///
/// # Errors
/// The bus's error (replay disabled, bad window, backend unreachable).
pub async fn replay_page(
    bus: &dyn EventBus,
    query: ReplayQuery,
    cursor: Option<ReplayCursor>,
    limit: usize,
) -> Result<ReplayPage, Error> {
    let limit = limit.max(1);
    let mut query = query;
    if let Some(cursor) = cursor {
        query.from = query.from.max(cursor.timestamp);
    }
    query.limit = None;
    let mut stream = bus.replay(query).await?;
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    while let Some(event) = stream.next().await {
        let event = event?;
        if cursor.is_some_and(|c| !c.is_past(&event)) {
            continue;
        }
        if events.len() == limit {
            more = true;
            break;
        }
        events.push(event);
    }
    let next_cursor = if more {
        events.last().map(ReplayCursor::after)
    } else {
        None
    };
    Ok(ReplayPage {
        events,
        next_cursor,
    })
}

/// The `limit` most recent events of `event_types` (every type when empty) from the last
/// `within`, newest first, across types: windows reaching back from now double until `limit`
/// events are found or `within` is covered, so a busy bus is not read back a whole day.
///
/// # Errors
/// The bus's error.
pub async fn recent_events(
    bus: &dyn EventBus,
    event_types: Vec<EventType>,
    limit: usize,
    within: Duration,
) -> Result<Vec<Event>, Error> {
    let now = OffsetDateTime::now_utc();
    let mut span = Duration::minutes(1).min(within);
    loop {
        let query = ReplayQuery::new(event_types.clone(), now - span);
        let mut stream = bus.replay(query).await?;
        let mut newest: VecDeque<Event> = VecDeque::with_capacity(limit + 1);
        while let Some(event) = stream.next().await {
            newest.push_back(event?);
            if newest.len() > limit {
                newest.pop_front();
            }
        }
        if newest.len() >= limit || span >= within {
            return Ok(newest.into_iter().rev().collect());
        }
        span = (span * 4_i32).min(within);
    }
}
