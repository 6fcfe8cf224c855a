//! The in-memory store: a log per event type with retention, consumer groups with their
//! positions and dead letters, and aggregate histories. Everything sits behind one mutex held
//! only for short, non-blocking sections.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::dispatch::{Delivery, HandlerCounters};
use crate::{
    BusStats, DeadLetter, DeadLetterSelection, Error, Event, EventId, EventType, HandlerStats,
    ReplayQuery, StartFrom,
};

/// A delivery's handle: where to acknowledge it.
#[derive(Debug)]
pub(super) enum Token {
    /// An entry of a type log.
    Log { type_idx: u32, offset: u64 },
    /// A redriven dead letter (not in any log).
    Redrive,
}

struct Entry {
    /// Publish order across all types.
    seq: u64,
    /// When it was stored, in Unix milliseconds: retention counts from here.
    stored_ms: i64,
    event: Arc<Event>,
}

struct TypeLog {
    event_type: EventType,
    /// The offset of `entries[0]`; grows as retention trims.
    base: u64,
    entries: VecDeque<Entry>,
    /// Consumers to wake when an event arrives, by member id.
    listeners: Vec<(u64, Arc<Notify>)>,
}

impl TypeLog {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&Entry> {
        offset
            .checked_sub(self.base)
            .and_then(|i| self.entries.get(i as usize))
    }
}

/// A group's position in one type log.
#[derive(Default)]
struct Cursor {
    /// The next offset to deliver.
    read: u64,
    /// Every offset below this is acknowledged.
    committed: u64,
    /// Acknowledgements from `committed` on: `acked[i]` is offset `committed + i`. Lanes
    /// finish out of order, so this window holds the gaps until they fill.
    acked: VecDeque<bool>,
}

impl Cursor {
    fn at(position: u64) -> Self {
        Self {
            read: position,
            committed: position,
            acked: VecDeque::new(),
        }
    }

    fn ack(&mut self, offset: u64) {
        let Some(i) = offset.checked_sub(self.committed) else {
            return;
        };
        let i = i as usize;
        if self.acked.len() <= i {
            self.acked.resize(i + 1, false);
        }
        self.acked[i] = true;
        self.advance();
    }

    /// Moves `committed` over the acknowledged offsets at the front of the window.
    fn advance(&mut self) {
        while self.acked.front() == Some(&true) {
            self.acked.pop_front();
            self.committed += 1;
        }
    }

    /// Whether `offset` was acknowledged (after a rewind, such offsets are not delivered again).
    fn is_acked(&self, offset: u64) -> bool {
        match offset.checked_sub(self.committed) {
            None => true,
            Some(i) => self.acked.get(i as usize) == Some(&true),
        }
    }

    /// Moves past offsets retention has trimmed; returns how many of them were never
    /// delivered.
    fn clamp(&mut self, base: u64) -> u64 {
        let never_delivered = base.saturating_sub(self.read);
        if self.committed < base {
            let trimmed = ((base - self.committed) as usize).min(self.acked.len());
            self.acked.drain(..trimmed);
            self.committed = base;
            self.advance();
        }
        self.read = self.read.max(self.committed);
        never_delivered
    }
}

/// One handler's consumer group.
pub(super) struct Group {
    pub(super) name: String,
    types: Vec<u32>,
    cursors: HashMap<u32, Cursor>,
    redrive: VecDeque<Arc<Event>>,
    dead_letters: VecDeque<DeadLetter>,
    pub(super) counters: Arc<HandlerCounters>,
    members: Vec<u64>,
    /// Delivered, not yet acknowledged.
    in_flight: u64,
}

pub(super) struct Store {
    pub(super) closed: bool,
    ttl_ms: i64,
    seq: u64,
    type_index: HashMap<EventType, u32>,
    logs: Vec<TypeLog>,
    groups: HashMap<String, Group>,
    aggregates: HashMap<(String, String), Vec<Arc<Event>>>,
    next_dead_letter: u64,
}

impl Store {
    pub(super) fn new(ttl: std::time::Duration) -> Self {
        Self {
            closed: false,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            seq: 0,
            type_index: HashMap::new(),
            logs: Vec::new(),
            groups: HashMap::new(),
            aggregates: HashMap::new(),
            next_dead_letter: 0,
        }
    }

    fn type_idx(&mut self, event_type: &EventType) -> u32 {
        if let Some(idx) = self.type_index.get(event_type) {
            return *idx;
        }
        let idx = self.logs.len() as u32;
        self.logs.push(TypeLog {
            event_type: event_type.clone(),
            base: 0,
            entries: VecDeque::new(),
            listeners: Vec::new(),
        });
        self.type_index.insert(event_type.clone(), idx);
        idx
    }

    /// Drops events older than the retention from the front of every log.
    pub(super) fn trim(&mut self, now_ms: i64) {
        let oldest_kept = now_ms.saturating_sub(self.ttl_ms);
        for log in &mut self.logs {
            while log
                .entries
                .front()
                .is_some_and(|e| e.stored_ms < oldest_kept)
            {
                log.entries.pop_front();
                log.base += 1;
            }
        }
    }

    /// Appends events (already checked) and collects the consumers to wake.
    pub(super) fn append(
        &mut self,
        events: impl IntoIterator<Item = Event>,
        now_ms: i64,
        wake: &mut Vec<Arc<Notify>>,
    ) -> Vec<EventId> {
        let mut ids = Vec::new();
        let mut last_type = None;
        for event in events {
            let idx = match last_type {
                Some((ref t, idx)) if *t == event.event_type => idx,
                _ => {
                    let idx = self.type_idx(&event.event_type);
                    last_type = Some((event.event_type.clone(), idx));
                    idx
                }
            };
            self.seq += 1;
            ids.push(event.id);
            let log = &mut self.logs[idx as usize];
            log.entries.push_back(Entry {
                seq: self.seq,
                stored_ms: now_ms,
                event: Arc::new(event),
            });
            for (_, notify) in &log.listeners {
                if !wake.iter().any(|n| Arc::ptr_eq(n, notify)) {
                    wake.push(notify.clone());
                }
            }
        }
        self.trim(now_ms);
        ids
    }

    /// Joins `member` to the handler's group, creating the group at `start` if it is new.
    pub(super) fn join(
        &mut self,
        handler: &str,
        group_name: &str,
        event_types: &[EventType],
        start: StartFrom,
        member: u64,
        notify: Arc<Notify>,
    ) -> Result<Arc<HandlerCounters>, Error> {
        if self.closed {
            return Err(Error::ShutDown {
                operation: "subscriptions",
            });
        }
        let types: Vec<u32> = event_types.iter().map(|t| self.type_idx(t)).collect();
        let mut sorted = types.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if let Some(group) = self.groups.get(handler) {
            let mut current = group.types.clone();
            current.sort_unstable();
            if !group.members.is_empty() && current != sorted {
                return Err(Error::InvalidArgument(format!(
                    "handler {handler:?} is already subscribed to other event types; subscriptions of one handler share its group and must name the same types"
                )));
            }
        }
        let group = self
            .groups
            .entry(handler.to_string())
            .or_insert_with(|| Group {
                name: group_name.to_string(),
                types: Vec::new(),
                cursors: HashMap::new(),
                redrive: VecDeque::new(),
                dead_letters: VecDeque::new(),
                counters: {
                    let counters = Arc::new(HandlerCounters::default());
                    crate::telemetry::register("memory", handler, &counters);
                    counters
                },
                members: Vec::new(),
                in_flight: 0,
            });
        for &idx in &sorted {
            let log = &mut self.logs[idx as usize];
            group.cursors.entry(idx).or_insert_with(|| {
                let position = match start {
                    StartFrom::Latest => log.end(),
                    StartFrom::Earliest => log.base,
                    StartFrom::Time(t) => log
                        .entries
                        .iter()
                        .position(|e| e.event.timestamp >= t)
                        .map_or(log.end(), |i| log.base + i as u64),
                };
                Cursor::at(position)
            });
            log.listeners.push((member, notify.clone()));
        }
        group.types = sorted;
        group.members.push(member);
        group.counters.reset_stall_clock();
        Ok(group.counters.clone())
    }

    /// Removes `member` from its group. When it could not finish its deliveries, everything
    /// unacknowledged is delivered again.
    pub(super) fn leave(&mut self, handler: &str, member: u64, drained: bool) {
        for log in &mut self.logs {
            log.listeners.retain(|(m, _)| *m != member);
        }
        if let Some(group) = self.groups.get_mut(handler) {
            group.members.retain(|m| *m != member);
        }
        if !drained {
            self.rewind(handler);
        }
    }

    /// Hands out again everything of the handler that was taken and not acknowledged (a
    /// consumer that left unfinished, or a consumer loop restarted after a failure).
    pub(super) fn rewind(&mut self, handler: &str) {
        if let Some(group) = self.groups.get_mut(handler) {
            for cursor in group.cursors.values_mut() {
                cursor.read = cursor.committed;
            }
            group.in_flight = 0;
        }
    }

    /// Takes up to `max` deliveries for the handler: redriven dead letters first, then the
    /// logs in publish order.
    pub(super) fn take(&mut self, handler: &str, max: usize) -> Vec<Delivery<Token>> {
        let Some(group) = self.groups.get_mut(handler) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(event) = group.redrive.pop_front() else {
                break;
            };
            out.push(Delivery::new(event, Token::Redrive));
        }
        for &idx in &group.types {
            if let Some(cursor) = group.cursors.get_mut(&idx) {
                let expired = cursor.clamp(self.logs[idx as usize].base);
                group.counters.add_expired(handler, expired);
            }
        }
        while out.len() < max {
            // The next entry across the group's types, by publish order.
            let mut best: Option<(u32, u64, u64)> = None;
            for &idx in &group.types {
                let Some(cursor) = group.cursors.get_mut(&idx) else {
                    continue;
                };
                let log = &self.logs[idx as usize];
                // Skip entries acknowledged before a rewind.
                while cursor.is_acked(cursor.read) {
                    cursor.read += 1;
                }
                if let Some(entry) = log.get(cursor.read)
                    && best.is_none_or(|(_, _, seq)| entry.seq < seq)
                {
                    best = Some((idx, cursor.read, entry.seq));
                }
            }
            let Some((idx, offset, _)) = best else { break };
            if let Some(cursor) = group.cursors.get_mut(&idx) {
                cursor.read += 1;
            }
            if let Some(entry) = self.logs[idx as usize].get(offset) {
                out.push(Delivery::new(
                    entry.event.clone(),
                    Token::Log {
                        type_idx: idx,
                        offset,
                    },
                ));
            }
        }
        group.in_flight += out.len() as u64;
        out
    }

    pub(super) fn ack(&mut self, handler: &str, tokens: impl IntoIterator<Item = Token>) {
        let Some(group) = self.groups.get_mut(handler) else {
            return;
        };
        for token in tokens {
            group.in_flight = group.in_flight.saturating_sub(1);
            if let Token::Log { type_idx, offset } = token
                && let Some(cursor) = group.cursors.get_mut(&type_idx)
            {
                cursor.ack(offset);
            }
        }
    }

    pub(super) fn dead_letter(&mut self, handler: &str, token: Token, mut letter: DeadLetter) {
        self.next_dead_letter += 1;
        letter.id = format!("dl-{}", self.next_dead_letter);
        if let Some(group) = self.groups.get_mut(handler) {
            group.dead_letters.push_back(letter);
        }
        self.ack(handler, [token]);
    }

    fn group(&self, handler: &str) -> Result<&Group, Error> {
        self.groups
            .get(handler)
            .ok_or_else(|| Error::UnknownHandler {
                name: handler.to_string(),
            })
    }

    fn group_mut(&mut self, handler: &str) -> Result<&mut Group, Error> {
        self.groups
            .get_mut(handler)
            .ok_or_else(|| Error::UnknownHandler {
                name: handler.to_string(),
            })
    }

    pub(super) fn dead_letters(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        Ok(self
            .group(handler)?
            .dead_letters
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    /// Moves selected dead letters back to the handler; returns them, and the members to wake.
    pub(super) fn redrive(
        &mut self,
        handler: &str,
        selection: &DeadLetterSelection,
    ) -> Result<(Vec<DeadLetter>, Vec<DeadLetter>), Error> {
        let group = self.group_mut(handler)?;
        let (selected, kept): (Vec<_>, Vec<_>) = group
            .dead_letters
            .drain(..)
            .partition(|d| selection.includes(&d.id));
        let (redriven, unusable): (Vec<_>, Vec<_>) =
            selected.into_iter().partition(|d| d.event.is_some());
        group.dead_letters = kept.into_iter().chain(unusable.iter().cloned()).collect();
        for letter in &redriven {
            if let Some(event) = &letter.event {
                group.redrive.push_back(Arc::new(event.clone()));
            }
        }
        Ok((redriven, unusable))
    }

    /// Wakes the members of the handler's group.
    pub(super) fn listeners_of(&self, handler: &str) -> Vec<Arc<Notify>> {
        let Some(group) = self.groups.get(handler) else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Notify>> = Vec::new();
        for &idx in &group.types {
            for (member, notify) in &self.logs[idx as usize].listeners {
                if group.members.contains(member) && !out.iter().any(|n| Arc::ptr_eq(n, notify)) {
                    out.push(notify.clone());
                }
            }
        }
        out
    }

    pub(super) fn purge(
        &mut self,
        handler: &str,
        selection: &DeadLetterSelection,
    ) -> Result<u64, Error> {
        let group = self.group_mut(handler)?;
        let before = group.dead_letters.len();
        group.dead_letters.retain(|d| !selection.includes(&d.id));
        Ok((before - group.dead_letters.len()) as u64)
    }

    /// Events matching the query, in timestamp order (ties by id), limited.
    pub(super) fn replay(&self, query: &ReplayQuery) -> Vec<Arc<Event>> {
        let mut out: Vec<Arc<Event>> = self
            .logs
            .iter()
            .filter(|log| {
                query.event_types.is_empty() || query.event_types.contains(&log.event_type)
            })
            .flat_map(|log| log.entries.iter())
            .filter(|e| query.matches(&e.event))
            .map(|e| e.event.clone())
            .collect();
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
        if let Some(limit) = query.limit {
            out.truncate(limit);
        }
        out
    }

    fn lag(&self, group: &Group) -> u64 {
        group
            .types
            .iter()
            .filter_map(|idx| {
                let log = &self.logs[*idx as usize];
                let cursor = group.cursors.get(idx)?;
                Some(log.end().saturating_sub(cursor.read.max(log.base)))
            })
            .sum()
    }

    pub(super) fn stats(&self) -> BusStats {
        let mut stats = BusStats {
            backend: "memory".into(),
            ..BusStats::default()
        };
        for log in &self.logs {
            let n = log.entries.len() as u64;
            if n > 0 {
                stats.total_events += n;
                stats.events_by_type.insert(log.event_type.to_string(), n);
            }
        }
        for (handler, group) in &self.groups {
            if !group.members.is_empty() {
                stats.active_subscribers += 1;
                stats.subscription_tasks += group.members.len();
            }
            let counters = group.counters.snapshot();
            stats.handlers.insert(
                handler.clone(),
                HandlerStats {
                    group: group.name.clone(),
                    event_types: group
                        .types
                        .iter()
                        .map(|i| self.logs[*i as usize].event_type.to_string())
                        .collect(),
                    subscriptions: group.members.len(),
                    processed: counters.processed,
                    failed: counters.failed,
                    retried: counters.retried,
                    dead_lettered: counters.dead_lettered,
                    dead_letter_depth: group.dead_letters.len() as u64,
                    expired: counters.expired,
                    pending: group.in_flight,
                    lag: self.lag(group) + group.redrive.len() as u64,
                    last_event_at: counters.last_event_at,
                    ..HandlerStats::default()
                },
            );
        }
        stats
    }

    /// `(handler, has members, lag, dead-letter depth, counters)` of every group with members.
    pub(super) fn consumers(&self) -> Vec<(String, u64, u64, Arc<HandlerCounters>)> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(h, g)| {
                (
                    h.clone(),
                    self.lag(g) + g.in_flight,
                    g.dead_letters.len() as u64,
                    g.counters.clone(),
                )
            })
            .collect()
    }

    pub(super) fn aggregate_version(&self, key: &(String, String)) -> u64 {
        self.aggregates.get(key).map_or(0, |h| h.len() as u64)
    }

    pub(super) fn record_aggregate(&mut self, key: (String, String), events: &[Event]) {
        let history = self.aggregates.entry(key).or_default();
        history.extend(events.iter().cloned().map(Arc::new));
    }

    pub(super) fn load_aggregate(&self, key: &(String, String)) -> Vec<Event> {
        self.aggregates
            .get(key)
            .map(|h| h.iter().map(|e| (**e).clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
