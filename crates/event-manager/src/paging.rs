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
/// `within`, newest first, across types: windows reaching back from now grow fourfold from
/// one minute until `limit` events are found or `within` is covered, so a busy bus is not read
/// back a whole day.
///
/// A window after the first that holds more than `max_scan` events is not read to its end:
/// the events of the window before it are returned (the newest there are, fewer than
/// `limit`), so one call reads at most the first minute's events and `max_scan` more per
/// window, however much the bus retains.
///
/// # Errors
/// The bus's error.
pub async fn recent_events(
    bus: &dyn EventBus,
    event_types: Vec<EventType>,
    limit: usize,
    within: Duration,
    max_scan: usize,
) -> Result<Vec<Event>, Error> {
    let now = OffsetDateTime::now_utc();
    let first = Duration::minutes(1).min(within);
    let mut span = first;
    let mut found = Vec::new();
    loop {
        let query = ReplayQuery::new(event_types.clone(), now - span);
        let mut stream = bus.replay(query).await?;
        let mut newest: VecDeque<Event> = VecDeque::with_capacity(limit + 1);
        let mut scanned = 0usize;
        while let Some(event) = stream.next().await {
            scanned += 1;
            if span > first && scanned > max_scan {
                return Ok(found);
            }
            newest.push_back(event?);
            if newest.len() > limit {
                newest.pop_front();
            }
        }
        let complete = newest.len() >= limit || span >= within;
        found = newest.into_iter().rev().collect();
        if complete {
            return Ok(found);
        }
        span = (span * 4_i32).min(within);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::{Config, MemoryBus};

    /// 50 events half an hour ago and 2,000 three hours ago: the windows of 1, 4, 16 and 64
    /// minutes read 50 at most; the next, of 256 minutes, holds 2,050.
    async fn bus() -> MemoryBus {
        let bus = MemoryBus::new(Config::default()).unwrap();
        let now = OffsetDateTime::now_utc();
        let events = (0..2_050)
            .map(|n| {
                let ago = if n < 2_000 {
                    Duration::hours(3)
                } else {
                    Duration::minutes(30)
                };
                Event::builder(EventType::USER_REGISTERED, "paging_test")
                    .field("n", n)
                    .timestamp(now - ago)
                    .build()
                    .unwrap()
            })
            .collect();
        for result in bus.publish_batch(events).await {
            result.unwrap();
        }
        bus
    }

    #[tokio::test]
    async fn recent_events_widen_their_window_until_the_limit_or_the_scan_bound() {
        let bus = bus().await;
        let types = vec![EventType::USER_REGISTERED];
        let unbounded = recent_events(&bus, types.clone(), 100, Duration::hours(24), 100_000)
            .await
            .unwrap();
        assert_eq!(unbounded.len(), 100);
        assert_eq!(unbounded[0].payload["n"], 2_049);
        // The 256-minute window holds more than 1,000: the 64-minute window's 50 come back.
        let bounded = recent_events(&bus, types, 100, Duration::hours(24), 1_000)
            .await
            .unwrap();
        assert_eq!(bounded.len(), 50);
        assert_eq!(bounded[0].payload["n"], 2_049);
        assert_eq!(bounded[49].payload["n"], 2_000);
    }
}
