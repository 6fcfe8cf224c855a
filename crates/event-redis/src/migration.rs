//! What a migration to another backend reads from this one (`eventbus copy`): the event
//! streams in stream order with each entry's id, where each handler's consumer group stands in
//! them, and whether the bus holds aggregate histories. Reads only; nothing here writes.

use std::collections::BTreeSet;

use event_core::{Error, Event, EventType, JsonCodec};
use fred::prelude::StreamsInterface;
use fred::types::Value;

use crate::bus::RedisBus;
use crate::{client, entry, replay, reply};

/// One entry of an event stream, in stream order.
#[derive(Debug)]
pub struct StreamEntry {
    /// The entry's stream id (`1732660000123-0`), the order consumer groups read in.
    pub entry_id: String,
    /// The event, or why the entry is not one (written by another producer); an event whose
    /// payload no configured key opens is kept sealed.
    pub event: Result<Event, Error>,
}

/// Where one handler's consumer group stands in one event stream (`XINFO GROUPS`,
/// `XPENDING`): the entries up to `last_delivered` were delivered to it, and those of them
/// still in `pending` are not acknowledged yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPosition {
    /// The handler.
    pub handler: String,
    /// Its consumer group (`{EVENT_CONSUMER_GROUP}.{handler}`).
    pub group: String,
    /// The stream id of the last entry delivered to the group (`0-0` when none).
    pub last_delivered: String,
    /// The stream ids of the entries delivered and not acknowledged.
    pub pending: BTreeSet<String>,
}

impl GroupPosition {
    /// Whether the group has finished the entry `entry_id`: delivered and acknowledged (a
    /// success, or a dead letter stored). An entry delivered and pending, or not delivered yet,
    /// is not finished. Entries before the group was created (at `$`) count as finished:
    /// the group was never meant to see them.
    pub fn finished(&self, entry_id: &str) -> bool {
        entry::id_order(entry_id) <= entry::id_order(&self.last_delivered)
            && !self.pending.contains(entry_id)
    }
}

/// `XPENDING` rows read per call.
const PENDING_PAGE: u64 = 1000;

impl RedisBus {
    /// Every event type with a stream under the key prefix.
    ///
    /// # Errors
    /// A backend error.
    pub async fn event_types(&self) -> Result<Vec<EventType>, Error> {
        replay::event_types(&self.inner).await
    }

    /// Up to `count` entries of `event_type`'s stream after the stream id `after` (from the
    /// beginning when `None`), in stream order: the order every consumer group reads. Unlike
    /// [`replay`](event_core::EventBus::replay) it names each entry's stream id, which
    /// [`GroupPosition::finished`] takes.
    ///
    /// # Errors
    /// A backend error.
    pub async fn read_stream(
        &self,
        event_type: &EventType,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<StreamEntry>, Error> {
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let page: Value = self
            .inner
            .client
            .xrange(
                self.inner.keys.stream(event_type),
                start.as_str(),
                "+",
                Some(count.max(1) as u64),
            )
            .await
            .map_err(|e| client::error("XRANGE", e))?;
        Ok(reply::entries(page)
            .into_iter()
            .map(|raw| StreamEntry {
                event: JsonCodec::keep_sealed(entry::decode(&self.inner.codec, &raw)),
                entry_id: raw.id,
            })
            .collect())
    }

    /// Where the consumer group of each handler (of this bus's `EVENT_CONSUMER_GROUP`) stands
    /// in `event_type`'s stream; groups of other consumer-group names are left out.
    ///
    /// # Errors
    /// A backend error.
    pub async fn group_positions(
        &self,
        event_type: &EventType,
    ) -> Result<Vec<GroupPosition>, Error> {
        let stream = self.inner.keys.stream(event_type);
        let reply: Result<Value, _> = self.inner.client.xinfo_groups(stream.as_str()).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.details().contains("no such key") => return Ok(Vec::new()),
            Err(e) => return Err(client::error("XINFO GROUPS", e)),
        };
        let prefix = format!("{}.", self.inner.config.consumer_group);
        let mut positions = Vec::new();
        for group in reply.into_array() {
            let fields = reply::fields_of(group);
            let text = |name: &str| fields.get(name).and_then(Value::as_string);
            let Some(group) = text("name") else { continue };
            let Some(handler) = group.strip_prefix(&prefix).map(str::to_string) else {
                continue;
            };
            let last_delivered = text("last-delivered-id").unwrap_or_else(|| "0-0".into());
            let pending = self.pending_ids(&stream, &group).await?;
            positions.push(GroupPosition {
                handler,
                group,
                last_delivered,
                pending,
            });
        }
        positions.sort_by(|a, b| a.handler.cmp(&b.handler));
        Ok(positions)
    }

    /// Dead letters redriven to `handler` and not finished yet: the entries of its group's
    /// redrive stream not delivered, or delivered and pending. A migration that moves the
    /// handler now leaves them behind.
    ///
    /// # Errors
    /// A backend error.
    pub async fn unfinished_redrives(&self, handler: &str) -> Result<u64, Error> {
        let group = self.inner.group(handler);
        let stream = self.inner.keys.redrive(&group);
        let reply: Result<Value, _> = self.inner.client.xinfo_groups(stream.as_str()).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.details().contains("no such key") => return Ok(0),
            Err(e) => return Err(client::error("XINFO GROUPS", e)),
        };
        let Some(fields) = reply
            .into_array()
            .into_iter()
            .map(reply::fields_of)
            .find(|f| f.get("name").and_then(Value::as_string).as_deref() == Some(group.as_str()))
        else {
            return Ok(0);
        };
        let value = |name: &str| fields.get(name);
        let pending = value("pending").and_then(Value::as_u64).unwrap_or(0);
        let mut after = value("last-delivered-id")
            .and_then(Value::as_string)
            .unwrap_or_else(|| "0-0".into());
        let mut undelivered = 0;
        loop {
            let page: Value = self
                .inner
                .client
                .xrange(
                    stream.as_str(),
                    format!("({after}"),
                    "+",
                    Some(PENDING_PAGE),
                )
                .await
                .map_err(|e| client::error("XRANGE", e))?;
            let page = reply::entries(page);
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            undelivered += page.len() as u64;
            if (page.len() as u64) < PENDING_PAGE {
                break;
            }
        }
        Ok(pending + undelivered)
    }

    /// The ids of every entry pending in `group` on `stream`.
    async fn pending_ids(&self, stream: &str, group: &str) -> Result<BTreeSet<String>, Error> {
        let mut ids = BTreeSet::new();
        let mut start = "-".to_string();
        loop {
            let rows: Value = self
                .inner
                .client
                .xpending(stream, group, (start.as_str(), "+", PENDING_PAGE))
                .await
                .map_err(|e| client::error("XPENDING", e))?;
            let rows = rows.into_array();
            let full = rows.len() as u64 == PENDING_PAGE;
            let mut last = None;
            for row in rows {
                if let Some(id) = row.into_array().first().and_then(Value::as_string) {
                    last = Some(id.clone());
                    ids.insert(id);
                }
            }
            match last {
                Some(last) if full => start = format!("({last}"),
                _ => return Ok(ids),
            }
        }
    }

    /// Whether the bus holds at least one aggregate history (event sourcing,
    /// `append_to_aggregate`), on any primary.
    ///
    /// # Errors
    /// A backend error.
    pub async fn has_aggregates(&self) -> Result<bool, Error> {
        let pattern = format!("{}:aggregate:*", self.inner.redis.key_prefix);
        for node in client::every_primary(&self.inner.client) {
            let mut cursor = "0".to_string();
            loop {
                let (next, keys) =
                    client::scan_page(&self.inner.client, &node, &cursor, &pattern, "list").await?;
                cursor = next;
                if !keys.is_empty() {
                    return Ok(true);
                }
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_means_delivered_and_acknowledged() {
        let position = GroupPosition {
            handler: "h".into(),
            group: "g.h".into(),
            last_delivered: "100-1".into(),
            pending: BTreeSet::from(["99-0".to_string()]),
        };
        assert!(position.finished("98-5"));
        assert!(position.finished("100-1"));
        assert!(!position.finished("99-0"), "pending");
        assert!(!position.finished("100-2"), "not delivered");
        assert!(!position.finished("101-0"));
    }
}
