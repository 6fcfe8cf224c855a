//! One relay round: claim keys, publish their events in per-key order, record the outcome,
//! all in one transaction.
//!
//! **Claiming.** A key is claimed with a transaction-scoped advisory lock
//! (`pg_try_advisory_xact_lock`), taken on the keys of the oldest pending rows, skipping keys
//! another relay holds. The claimed keys' pending rows are then read by a second statement,
//! whose fresh snapshot sees every round that released those keys before. A key is thus
//! published by one relay at a time, from its oldest pending row on, and PostgreSQL releases
//! the locks when the transaction ends, committed, rolled back, or cut off with a killed
//! relay's connection: no lease to expire, no row lock held past the round.
//!
//! **Publishing.** The claimed events go to [`EventBus::publish_batch`] in batches of up to
//! `batch_size`, in sequence order. The bus stores a key's events of one type in batch order,
//! and none after one that failed for a reason other than the event itself: a key's
//! transiently failed events are the tail of its batch, and the key takes no further part in
//! the round, so a later event of a key is never published ahead of an earlier one. A
//! permanently refused event is parked and its key goes on.
//!
//! **Pipelining.** A round reads up to `batches_per_round` batches of its keys' rows at once
//! and publishes them one batch after the other; while a batch is published, the
//! transaction's connection records the batch before it and the next batch is decoded, so
//! PostgreSQL's work, the decoding and the bus's work overlap.
//!
//! **Recording.** Delivered rows are marked, refused rows parked, failed rows counted, and the
//! transaction commits. A relay that dies before the commit leaves every row of the round
//! pending: they are published again, with the same ids.

use std::collections::HashSet;

use event_core::{Error as BusError, ErrorKind, Event, EventBus};
use sqlx::{PgConnection, Row as _};

use super::RelayInner;
use super::stats::Counters;
use crate::OutboxError;

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundReport {
    /// Events claimed.
    pub claimed: usize,
    /// Events published and marked delivered.
    pub delivered: usize,
    /// Events parked.
    pub parked: usize,
    /// Events whose publication failed transiently (with the later events of their keys, left
    /// for a later round).
    pub failed: usize,
}

/// One claimed row.
struct Claimed {
    seq: i64,
    key: String,
    event: Result<Event, String>,
}

/// What became of the claimed rows.
#[derive(Default)]
struct Outcome {
    delivered: Vec<i64>,
    parked: Vec<(i64, String)>,
    failed: Vec<(i64, String)>,
    /// The keys of the failed rows: they sit out the rest of the round.
    failed_keys: HashSet<String>,
}

pub(super) async fn run_round(relay: &RelayInner) -> Result<RoundReport, OutboxError> {
    let mut tx = relay.pool.begin().await?;
    let keys = claim_keys(&mut tx, relay).await?;
    if keys.is_empty() {
        tx.rollback().await?;
        return Ok(RoundReport::default());
    }
    let batch_size = relay.config.batch_size.max(1);
    let limit = batch_size * relay.config.batches_per_round.max(1);
    let mut stored = read_rows(&mut tx, &keys, limit).await?.into_iter();
    let mut next = parse(stored.by_ref().take(batch_size));
    let mut report = RoundReport::default();
    let mut stopped: HashSet<String> = HashSet::new();
    let mut unrecorded: Option<Outcome> = None;
    while !next.is_empty() {
        // A key with a failed event takes no further part: its later rows stay pending.
        let batch: Vec<Claimed> = std::mem::take(&mut next)
            .into_iter()
            .filter(|row| !stopped.contains(&row.key))
            .collect();
        report.claimed += batch.len();
        // While this batch is published, the connection records the one before, and the
        // next one is decoded.
        let upcoming: Vec<Stored> = stored.by_ref().take(batch_size).collect();
        let database = async {
            if let Some(outcome) = unrecorded.take() {
                record(&mut tx, &outcome).await?;
            }
            Ok::<_, OutboxError>(parse(upcoming))
        };
        let (outcome, decoded) = tokio::join!(publish_round(relay.bus.as_ref(), batch), database);
        next = decoded?;
        if let Some(hook) = &relay.after_publish {
            hook().await;
        }
        report.delivered += outcome.delivered.len();
        report.parked += outcome.parked.len();
        report.failed += outcome.failed.len();
        for (seq, reason) in &outcome.parked {
            tracing::warn!(seq, reason, "outbox relay: event parked");
        }
        stopped.extend(outcome.failed_keys.iter().cloned());
        unrecorded = Some(outcome);
    }
    if let Some(outcome) = unrecorded {
        record(&mut tx, &outcome).await?;
    }
    tx.commit().await?;
    let counters: &Counters = &relay.counters;
    Counters::add(&counters.rounds, 1);
    Counters::add(&counters.delivered, report.delivered);
    Counters::add(&counters.parked, report.parked);
    Counters::add(&counters.publish_failures, report.failed);
    Ok(report)
}

/// One row as read: its event still JSON text.
struct Stored {
    seq: i64,
    key: String,
    body: String,
}

/// The pending rows of the claimed `keys`, in sequence order, up to `limit`. Its own
/// statement, after the claim: its snapshot sees every round that released those keys.
async fn read_rows(
    tx: &mut PgConnection,
    keys: &[String],
    limit: usize,
) -> Result<Vec<Stored>, OutboxError> {
    let rows = sqlx::query(
        "SELECT seq, ordering_key, event::text FROM eventbus_outbox
         WHERE ordering_key = ANY($1) AND delivered_at IS NULL AND parked_at IS NULL
         ORDER BY seq LIMIT $2",
    )
    .bind(keys)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Stored {
                seq: row.try_get(0)?,
                key: row.try_get(1)?,
                body: row.try_get(2)?,
            })
        })
        .collect()
}

/// Decodes stored rows; one that cannot be read back is parked when published.
fn parse(rows: impl IntoIterator<Item = Stored>) -> Vec<Claimed> {
    rows.into_iter()
        .map(|row| Claimed {
            seq: row.seq,
            key: row.key,
            event: serde_json::from_str::<Event>(&row.body)
                .map_err(|e| format!("the stored event cannot be read back: {e}")),
        })
        .collect()
}

/// Locks up to `batch_size` keys of the oldest `scan_window` pending rows, oldest key first,
/// skipping keys another relay holds.
async fn claim_keys(tx: &mut PgConnection, relay: &RelayInner) -> Result<Vec<String>, OutboxError> {
    // The lock is a volatile function in the outer query: PostgreSQL evaluates it row by row
    // as the LIMIT pulls them, and never pushes it into the subquery, so only the keys
    // returned are locked.
    let keys = sqlx::query_scalar(
        "SELECT key FROM (
             SELECT key, min(seq) AS first FROM (
                 SELECT ordering_key AS key, seq FROM eventbus_outbox
                 WHERE delivered_at IS NULL AND parked_at IS NULL
                 ORDER BY seq LIMIT $1
             ) AS window_rows
             GROUP BY key
             ORDER BY first
         ) AS heads
         WHERE pg_try_advisory_xact_lock(hashtext('eventbus_outbox:' || current_schema()), hashtext(key))
         LIMIT $2",
    )
    .bind(i64::try_from(relay.config.scan_window.max(1)).unwrap_or(i64::MAX))
    .bind(i64::try_from(relay.config.batch_size.max(1)).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    Ok(keys)
}

/// Publishes a batch of claimed rows at once, in sequence order (the module docs say why a
/// key's order holds), and sorts them into delivered, parked and failed.
async fn publish_round(bus: &dyn EventBus, rows: Vec<Claimed>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut seqs = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for claimed in rows {
        match claimed.event {
            Ok(event) => {
                seqs.push((claimed.seq, claimed.key));
                events.push(event);
            }
            // Unreadable rows are parked without a publish; the key goes on.
            Err(reason) => outcome.parked.push((claimed.seq, reason)),
        }
    }
    if events.is_empty() {
        return outcome;
    }
    let mut results = bus.publish_batch(events).await.into_iter();
    for (seq, key) in seqs {
        let reason = match results.next() {
            Some(Ok(_)) => {
                outcome.delivered.push(seq);
                continue;
            }
            Some(Err(error)) if is_permanent(&error) => {
                outcome.parked.push((seq, error.to_string()));
                continue;
            }
            Some(Err(error)) => error.to_string(),
            None => "publish_batch returned fewer results than events".to_string(),
        };
        outcome.failed.push((seq, reason));
        outcome.failed_keys.insert(key);
    }
    outcome
}

/// Whether the bus will refuse the event again however often it is tried: an invalid event
/// (an unknown or invalid type, too large) or a refusal; not a lost connection, a time-out,
/// or a bus that is shutting down.
fn is_permanent(error: &BusError) -> bool {
    !error.is_transient()
        && matches!(
            error.kind(),
            ErrorKind::InvalidInput
                | ErrorKind::Refused
                | ErrorKind::Unsupported
                | ErrorKind::Configuration
        )
}

/// Marks, parks and counts the claimed rows in the round's transaction.
async fn record(tx: &mut PgConnection, outcome: &Outcome) -> Result<(), OutboxError> {
    if !outcome.delivered.is_empty() {
        sqlx::query("UPDATE eventbus_outbox SET delivered_at = now() WHERE seq = ANY($1)")
            .bind(&outcome.delivered)
            .execute(&mut *tx)
            .await?;
    }
    for (seq, reason) in &outcome.parked {
        sqlx::query(
            "UPDATE eventbus_outbox
             SET parked_at = now(), parked_reason = $2, attempts = attempts + 1
             WHERE seq = $1",
        )
        .bind(seq)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    }
    if !outcome.failed.is_empty() {
        let (seqs, reasons): (Vec<i64>, Vec<String>) = outcome.failed.iter().cloned().unzip();
        sqlx::query(
            "UPDATE eventbus_outbox AS o
             SET attempts = o.attempts + 1, last_error = f.reason
             FROM UNNEST($1::bigint[], $2::text[]) AS f(seq, reason)
             WHERE o.seq = f.seq",
        )
        .bind(&seqs)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Deletes delivered rows older than `retention`, a thousand at a time so that no statement
/// holds many row locks; returns how many.
pub(super) async fn clean_up(
    pool: &sqlx::PgPool,
    retention: std::time::Duration,
) -> Result<u64, OutboxError> {
    let seconds = retention.as_secs_f64();
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM eventbus_outbox WHERE seq IN (
                 SELECT seq FROM eventbus_outbox
                 WHERE delivered_at < now() - make_interval(secs => $1)
                 LIMIT 1000
             )",
        )
        .bind(seconds)
        .execute(pool)
        .await?
        .rows_affected();
        total += done;
        if done < 1000 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_event_itself_are_permanent() {
        assert!(is_permanent(&BusError::InvalidArgument("bad".into())));
        assert!(is_permanent(&BusError::backend("redis", "NOPERM", false)));
        assert!(!is_permanent(&BusError::backend(
            "redis",
            "connection reset",
            true
        )));
    }
}
