//! The dead-letter operations: list, redrive, purge.

use event_core::{DeadLetter, DeadLetterSelection, Error, RedriveReport};
use fred::prelude::{KeysInterface, SetsInterface, StreamsInterface, TransactionInterface};
use fred::types::Value;

use crate::core::Inner;
use crate::{client, entry, reply};

/// Refuses handlers this Redis has never seen.
async fn known(inner: &Inner, handler: &str) -> Result<String, Error> {
    let known: bool = inner
        .client
        .sismember(inner.keys.handlers(), handler)
        .await
        .map_err(|e| client::error("SISMEMBER", e))?;
    if known {
        Ok(inner.group(handler))
    } else {
        Err(Error::UnknownHandler {
            name: handler.to_string(),
        })
    }
}

/// Reads dead letters; the id of each is its entry id in the dead-letter stream.
async fn read_dead_letters(
    inner: &Inner,
    key: &str,
    start: &str,
    end: &str,
    count: Option<u64>,
) -> Result<Vec<DeadLetter>, Error> {
    let entries: Value = inner
        .client
        .xrange(key, start, end, count)
        .await
        .map_err(|e| client::error("XRANGE", e))?;
    let mut letters = Vec::new();
    // Raw entries: one entry another program wrote here cannot hide the others.
    for raw in reply::entries(entries) {
        let Some(json) = raw
            .fields
            .as_deref()
            .and_then(|fields| entry::field(fields, "dead_letter"))
        else {
            tracing::warn!(stream = %key, entry = %raw.id, "an entry that is not a dead letter skipped");
            continue;
        };
        match inner.codec.decode_letter(json) {
            Ok(mut letter) => {
                letter.id = raw.id;
                letters.push(letter);
            }
            Err(e) => {
                tracing::warn!(stream = %key, entry = %raw.id, "unreadable dead letter skipped: {e}")
            }
        }
    }
    Ok(letters)
}

async fn selected(
    inner: &Inner,
    key: &str,
    selection: &DeadLetterSelection,
) -> Result<Vec<DeadLetter>, Error> {
    match selection {
        DeadLetterSelection::Ids(ids) => {
            let mut out = Vec::new();
            for id in ids {
                out.extend(read_dead_letters(inner, key, id, id, Some(1)).await?);
            }
            Ok(out)
        }
        _ => read_dead_letters(inner, key, "-", "+", None).await,
    }
}

pub(crate) async fn dead_letters(
    inner: &Inner,
    handler: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, Error> {
    let group = known(inner, handler).await?;
    read_dead_letters(
        inner,
        &inner.keys.dead_letters(&group),
        "-",
        "+",
        // fred refuses a COUNT of i64::MAX or more: such a limit is no limit.
        u64::try_from(limit).ok().filter(|&n| n < i64::MAX as u64),
    )
    .await
}

pub(crate) async fn redrive(
    inner: &Inner,
    handler: &str,
    selection: &DeadLetterSelection,
) -> Result<RedriveReport, Error> {
    let group = known(inner, handler).await?;
    let dlq = inner.keys.dead_letters(&group);
    let redrive = inner.keys.redrive(&group);
    let mut report = RedriveReport::default();
    for letter in selected(inner, &dlq, selection).await? {
        let Some(event) = &letter.event else {
            report
                .skipped
                .push((letter.id, event_core::backend::NOT_AN_ENVELOPE.into()));
            continue;
        };
        let json = inner.codec.encode(event)?;
        move_letter(
            inner,
            &dlq,
            &redrive,
            &letter.id,
            entry::fields(event, json),
        )
        .await
        .map_err(|e| client::error("redriving a dead letter", e))?;
        report.redriven += 1;
    }
    Ok(report)
}

/// Moves the dead letter `id` to the redrive stream as an entry of `fields`: the redrive
/// stream gains it and the dead-letter stream loses it together (`MULTI`), or, on a Redis
/// Cluster where the two lie in different hash slots, it is deleted once it was added (a
/// failure between the two leaves it in both: redriven again later, never lost).
async fn move_letter(
    inner: &Inner,
    dlq: &str,
    redrive: &str,
    id: &str,
    fields: Vec<(&'static str, Value)>,
) -> Result<(), fred::error::Error> {
    if inner.keys.one_slot(&[dlq, redrive]) {
        let tx = inner.client.multi();
        let _: Result<Value, _> = tx.xadd(redrive, false, None, "*", fields).await;
        let _: Result<Value, _> = tx.xdel(dlq, id).await;
        return tx.exec::<Value>(true).await.map(drop);
    }
    let _: Value = inner.client.xadd(redrive, false, None, "*", fields).await?;
    let _: Value = inner.client.xdel(dlq, id).await?;
    Ok(())
}

pub(crate) async fn purge(
    inner: &Inner,
    handler: &str,
    selection: &DeadLetterSelection,
) -> Result<u64, Error> {
    let group = known(inner, handler).await?;
    let dlq = inner.keys.dead_letters(&group);
    match selection {
        DeadLetterSelection::Ids(ids) if ids.is_empty() => Ok(0),
        DeadLetterSelection::Ids(ids) => inner
            .client
            .xdel(dlq.as_str(), ids.clone())
            .await
            .map_err(|e| client::error("XDEL", e)),
        _ => {
            let tx = inner.client.multi();
            let _: Result<Value, _> = tx.xlen(dlq.as_str()).await;
            let _: Result<Value, _> = tx.del(dlq.as_str()).await;
            let replies: Vec<Value> = tx
                .exec(true)
                .await
                .map_err(|e| client::error("purging dead letters", e))?;
            Ok(replies.first().and_then(Value::as_u64).unwrap_or(0))
        }
    }
}
