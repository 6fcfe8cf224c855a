//! [`Outbox`]: adds events to the outbox table inside the application's own transaction, so
//! they exist for the relay exactly when that transaction commits.

use event_core::{Event, EventId};
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use time::OffsetDateTime;

use crate::OutboxError;

/// The `LISTEN/NOTIFY` channel of [`Outbox::new`].
pub const DEFAULT_CHANNEL: &str = "eventbus_outbox";

/// Writes events to the outbox table (`eventbus_outbox`, in the transaction's current
/// schema) and reads its state.
///
/// Cheap to clone. An [`Outbox`] and the [`Relay`](crate::Relay) that delivers its events must
/// use the same channel.
#[derive(Clone, Debug)]
pub struct Outbox {
    channel: String,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// An outbox that wakes its relays on the channel [`DEFAULT_CHANNEL`].
    pub fn new() -> Self {
        Self::with_channel(DEFAULT_CHANNEL)
    }

    /// An outbox that wakes its relays on `channel`: one per outbox when several outboxes
    /// (in several schemas) share a database, so that their relays are not woken for each
    /// other's events.
    pub fn with_channel(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
        }
    }

    /// The `LISTEN/NOTIFY` channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Adds `events` to the outbox inside `tx`, in this order, and asks PostgreSQL to wake the
    /// relays when `tx` commits. Nothing is visible to the relays before the commit, and a
    /// rollback removes the events with the rest of the transaction.
    ///
    /// Events of one ordering key ([`Event::ordering_key`]) are published in the order they
    /// were added; across transactions, in the order the transactions added them, so
    /// transactions that add events of the same key should be serialised by the application
    /// (by locking the aggregate's row, as they would anyway to update it).
    ///
    /// # Errors
    /// [`OutboxError::Encode`] for an event JSON cannot hold, [`OutboxError::Database`] (an
    /// event id already in the outbox is a unique violation: an event is added once).
    pub async fn add(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<Vec<EventId>, OutboxError> {
        let mut ids = Vec::new();
        let mut uuids = Vec::new();
        let mut keys = Vec::new();
        let mut types = Vec::new();
        let mut bodies = Vec::new();
        for event in events {
            let body = serde_json::to_string(&event).map_err(|source| OutboxError::Encode {
                event_id: event.id,
                source,
            })?;
            ids.push(event.id);
            uuids.push(*event.id.as_uuid());
            keys.push(event.ordering_key().into_owned());
            types.push(event.event_type.as_str().to_owned());
            bodies.push(body);
        }
        if ids.is_empty() {
            return Ok(ids);
        }
        // ORDER BY the position, so the sequence numbers follow the order of `events`.
        sqlx::query(
            "INSERT INTO eventbus_outbox (event_id, ordering_key, event_type, event)
             SELECT id, key, type, body::json
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
                  WITH ORDINALITY AS e(id, key, type, body, position)
             ORDER BY position",
        )
        .bind(&uuids)
        .bind(&keys)
        .bind(&types)
        .bind(&bodies)
        .execute(&mut **tx)
        .await?;
        // Delivered at commit only, and once per transaction however often it is sent.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.channel)
            .execute(&mut **tx)
            .await?;
        Ok(ids)
    }

    /// How many rows wait, are parked, or are delivered and kept for the retention, and how
    /// old the oldest waiting one is.
    ///
    /// # Errors
    /// [`OutboxError::Database`].
    pub async fn stats(pool: &PgPool) -> Result<OutboxStats, OutboxError> {
        let row = sqlx::query(
            "SELECT
                 count(*) FILTER (WHERE delivered_at IS NULL AND parked_at IS NULL),
                 count(*) FILTER (WHERE parked_at IS NOT NULL),
                 count(*) FILTER (WHERE delivered_at IS NOT NULL),
                 min(created_at) FILTER (WHERE delivered_at IS NULL AND parked_at IS NULL)
             FROM eventbus_outbox",
        )
        .fetch_one(pool)
        .await?;
        Ok(OutboxStats {
            pending: count(row.try_get(0)?),
            parked: count(row.try_get(1)?),
            delivered: count(row.try_get(2)?),
            oldest_pending: row.try_get(3)?,
        })
    }

    /// Up to `limit` parked events, oldest first, with the reason the bus gave.
    ///
    /// # Errors
    /// [`OutboxError::Database`].
    pub async fn parked(pool: &PgPool, limit: u32) -> Result<Vec<ParkedEvent>, OutboxError> {
        let rows = sqlx::query(
            "SELECT event_id, event_type, ordering_key, parked_reason, parked_at, attempts
             FROM eventbus_outbox WHERE parked_at IS NOT NULL ORDER BY parked_at, seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ParkedEvent {
                    event_id: EventId::from_uuid(row.try_get(0)?),
                    event_type: row.try_get(1)?,
                    ordering_key: row.try_get(2)?,
                    reason: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                    parked_at: row.try_get(4)?,
                    attempts: u32::try_from(row.try_get::<i32, _>(5)?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Puts parked events back in line (after the cause was fixed: the type registered, the
    /// size limit raised); returns how many were parked. They are delivered after the events
    /// of their key that are waiting now.
    ///
    /// # Errors
    /// [`OutboxError::Database`].
    pub async fn unpark(pool: &PgPool, ids: &[EventId]) -> Result<u64, OutboxError> {
        let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        // A new sequence number: the row goes to the end of its key's line.
        let done = sqlx::query(
            "WITH parked AS (
                 DELETE FROM eventbus_outbox WHERE event_id = ANY($1) AND parked_at IS NOT NULL
                 RETURNING event_id, ordering_key, event_type, event, created_at
             )
             INSERT INTO eventbus_outbox (event_id, ordering_key, event_type, event, created_at)
             SELECT event_id, ordering_key, event_type, event, created_at FROM parked",
        )
        .bind(&uuids)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The outbox's rows by state; see [`Outbox::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Committed and not yet delivered (nor parked).
    pub pending: u64,
    /// Refused by the bus for good, kept with their reason until unparked or deleted by hand.
    pub parked: u64,
    /// Delivered and not yet past the retention.
    pub delivered: u64,
    /// When the oldest pending event was added: a relay that is down or stuck shows here.
    pub oldest_pending: Option<OffsetDateTime>,
}

/// An event the bus refused for good; see [`Outbox::parked`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The event's id.
    pub event_id: EventId,
    /// Its type.
    pub event_type: String,
    /// Its ordering key.
    pub ordering_key: String,
    /// Why: the bus's error, or why the stored row could not be read back.
    pub reason: String,
    /// When it was parked.
    pub parked_at: Option<OffsetDateTime>,
    /// Failed attempts before it was parked (transient failures, then the permanent one).
    pub attempts: u32,
}
