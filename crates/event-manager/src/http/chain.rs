//! `GET /api/v1/events/chain/{id}?hours=1` (read role): an event's causation chain, for the
//! dashboard's tail. The ancestors are followed through `causation_id` (the event that
//! caused it, and so on up to the root); the descendants are the events whose
//! `causation_id` is the event's id, and theirs, breadth first.
//!
//! Bounded like `GET /recent`: it reads the events of the last `hours` (from 1 to 24, by
//! default one) and at most `EVENT_API_MAX_SCAN` of them, twice (first their ids and causes
//! only, then the chain's events themselves), and answers at most [`MAX_LINKS`] descendants.
//! `complete: false` says a bound was reached; an ancestor older than the window is named in
//! `missing_ancestor`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use event_core::{Event, EventBus, ReplayQuery};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};

/// The most descendants one answer holds.
const MAX_LINKS: usize = 200;
/// The most ancestors followed (a cycle of ids stops earlier).
const MAX_DEPTH: usize = 100;

/// The query of `GET /chain/{id}`.
#[derive(Deserialize)]
pub(super) struct ChainQuery {
    hours: Option<i64>,
}

/// One descendant: the event, how far below the asked one, and its cause.
#[derive(Serialize)]
pub(super) struct Link {
    depth: usize,
    parent: String,
    event: Event,
}

#[derive(Serialize)]
pub(super) struct Chain {
    /// From the root down to the event's direct cause.
    ancestors: Vec<Event>,
    event: Event,
    /// Breadth first, each after its cause.
    descendants: Vec<Link>,
    /// The cause of the oldest ancestor found, when it is not in the window.
    missing_ancestor: Option<String>,
    /// Events read in the window (once).
    scanned: usize,
    window_hours: i64,
    /// Whether every event of the window was read and every descendant answered.
    complete: bool,
}

/// The ids and causes of the window's events, at most `max_scan`; `true` if all were read.
async fn index(
    bus: &dyn EventBus,
    from: OffsetDateTime,
    max_scan: usize,
) -> Result<(HashMap<String, Option<String>>, bool), ApiError> {
    let mut events = bus.replay(ReplayQuery::new([], from)).await?;
    let mut causes = HashMap::new();
    while let Some(event) = events.next().await {
        if causes.len() >= max_scan {
            return Ok((causes, false));
        }
        let event = event?;
        causes.insert(event.id.to_string(), event.causation_id);
    }
    Ok((causes, true))
}

pub(super) async fn chain(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ChainQuery>,
) -> Result<Json<Chain>, ApiError> {
    let hours = query.hours.unwrap_or(1);
    if !(1..=24).contains(&hours) {
        return Err(ApiError::bad_request("hours must be from 1 to 24"));
    }
    let bus = s.manager.bus()?;
    let from = OffsetDateTime::now_utc() - time::Duration::hours(hours);
    let (causes, mut complete) = index(bus.as_ref(), from, s.config.limits.max_scan).await?;
    if !causes.contains_key(&id) {
        return Err(ApiError::not_found(format!(
            "no event {id:?} among the {} events of the last {hours} hour(s) read",
            causes.len()
        )));
    }
    // Up through the causes.
    let mut ancestors = Vec::new();
    let mut missing_ancestor = None;
    let mut at = id.clone();
    while let Some(Some(cause)) = causes.get(&at) {
        if ancestors.len() >= MAX_DEPTH || ancestors.contains(cause) || *cause == id {
            break;
        }
        if !causes.contains_key(cause) {
            missing_ancestor = Some(cause.clone());
            break;
        }
        ancestors.push(cause.clone());
        at = cause.clone();
    }
    ancestors.reverse();
    // Down through the effects, breadth first.
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (child, cause) in &causes {
        if let Some(cause) = cause {
            children
                .entry(cause.as_str())
                .or_default()
                .push(child.as_str());
        }
    }
    let mut below: Vec<(String, usize, String)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::from([id.as_str()]);
    let mut queue = VecDeque::from([(id.as_str(), 0usize)]);
    while let Some((parent, depth)) = queue.pop_front() {
        let mut kids = children.get(parent).cloned().unwrap_or_default();
        kids.sort_unstable();
        for kid in kids {
            if !seen.insert(kid) {
                continue;
            }
            if below.len() >= MAX_LINKS {
                complete = false;
                break;
            }
            below.push((kid.to_string(), depth + 1, parent.to_string()));
            queue.push_back((kid, depth + 1));
        }
    }
    // The chain's events themselves.
    let wanted: HashSet<&str> = ancestors
        .iter()
        .map(String::as_str)
        .chain(below.iter().map(|(kid, _, _)| kid.as_str()))
        .chain([id.as_str()])
        .collect();
    let mut found: HashMap<String, Event> = HashMap::new();
    let mut events = bus.replay(ReplayQuery::new([], from)).await?;
    let mut read = 0;
    while let Some(event) = events.next().await {
        read += 1;
        if read > causes.len() || found.len() == wanted.len() {
            break;
        }
        let event = event?;
        let key = event.id.to_string();
        if wanted.contains(key.as_str()) {
            found.insert(key, event);
        }
    }
    let event = found
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} left the window meanwhile")))?;
    Ok(Json(Chain {
        ancestors: ancestors.iter().filter_map(|a| found.remove(a)).collect(),
        event,
        descendants: below
            .into_iter()
            .filter_map(|(kid, depth, parent)| {
                found.remove(&kid).map(|event| Link {
                    depth,
                    parent,
                    event,
                })
            })
            .collect(),
        missing_ancestor,
        scanned: causes.len(),
        window_hours: hours,
        complete,
    }))
}
