//! Stats (`XLEN`, `XINFO GROUPS`), health (`PING`, consumer loops, stalls) and the
//! dead-letter operations (list, redrive, purge).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use event_core::{
    BusStats, ConsumerHealth, DeadLetter, DeadLetterSelection, Error, HandlerStats, Health,
    RedriveReport,
};
use fred::prelude::{
    ClientLike, KeysInterface, SetsInterface, StreamsInterface, TransactionInterface,
};
use fred::types::Value;

use crate::bus::{Inner, LocalHandler};
use crate::{client, entry, replay};

/// One group's numbers on one stream, from `XINFO GROUPS`.
#[derive(Default, Clone, Copy)]
struct GroupInfo {
    pending: u64,
    lag: u64,
}

/// `XINFO GROUPS` of a stream: group name to its pending count and lag. A lag Redis cannot
/// compute (reported as nil after deletions) is counted from the entries after the group's
/// last delivered id.
async fn groups_of(inner: &Inner, stream: &str) -> Result<HashMap<String, GroupInfo>, Error> {
    let reply: Result<Value, _> = inner.client.xinfo_groups(stream).await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.details().contains("no such key") => return Ok(HashMap::new()),
        Err(e) => return Err(client::error("XINFO GROUPS", e)),
    };
    let mut groups = HashMap::new();
    for group in reply.into_array() {
        let fields = fields_of(group);
        let Some(name) = fields.get("name").and_then(Value::as_string) else {
            continue;
        };
        let pending = fields.get("pending").and_then(Value::as_u64).unwrap_or(0);
        let lag = match fields.get("lag").and_then(Value::as_u64) {
            Some(lag) => lag,
            None => {
                let last = fields
                    .get("last-delivered-id")
                    .and_then(Value::as_string)
                    .unwrap_or_else(|| "0-0".into());
                let after: Vec<(String, HashMap<String, Value>)> = inner
                    .client
                    .xrange_values(stream, format!("({last}"), "+", Some(100_000))
                    .await
                    .map_err(|e| client::error("XRANGE", e))?;
                after.len() as u64
            }
        };
        groups.insert(name, GroupInfo { pending, lag });
    }
    Ok(groups)
}

/// A flat `[name, value, ...]` array (RESP2) or a map (RESP3) as a map.
fn fields_of(value: Value) -> HashMap<String, Value> {
    match value {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string()?, v)))
            .collect(),
        other => {
            let mut out = HashMap::new();
            let mut items = other.into_array().into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = k.as_string() {
                    out.insert(k, v);
                }
            }
            out
        }
    }
}

/// Trims every stream to the retention exactly (publishes trim approximately), so counts
/// never include expired events, and returns the length of each.
async fn trimmed_lengths(inner: &Inner) -> Result<BTreeMap<String, (String, u64)>, Error> {
    let types = replay::event_types(inner).await?;
    let minid = entry::id_at(inner.cutoff_ms());
    let pipeline = inner.client.pipeline();
    for t in &types {
        let key = inner.keys.stream(t);
        let _: Result<Value, _> = pipeline
            .xtrim(key.as_str(), ("MINID", "=", minid.as_str()))
            .await;
        let _: Result<Value, _> = pipeline.xlen(key.as_str()).await;
    }
    let replies: Vec<Value> = pipeline.all().await.map_err(|e| client::error("XLEN", e))?;
    Ok(types
        .iter()
        .zip(replies.chunks(2))
        .map(|(t, r)| {
            let len = r.get(1).and_then(Value::as_u64).unwrap_or(0);
            (t.to_string(), (inner.keys.stream(t), len))
        })
        .collect())
}

async fn dead_letter_depth(inner: &Inner, group: &str) -> Result<u64, Error> {
    inner
        .client
        .xlen(inner.keys.dead_letters(group))
        .await
        .map_err(|e| client::error("XLEN", e))
}

pub(crate) async fn stats(inner: &Inner) -> Result<BusStats, Error> {
    let streams = trimmed_lengths(inner).await?;
    let mut stats = BusStats {
        backend: "redis".into(),
        ..BusStats::default()
    };
    let mut per_stream = Vec::new();
    for (event_type, (key, len)) in &streams {
        if *len > 0 {
            stats.total_events += len;
            stats.events_by_type.insert(event_type.clone(), *len);
        }
        per_stream.push((event_type.clone(), groups_of(inner, key).await?));
    }
    let handlers: Vec<String> = inner
        .client
        .smembers(inner.keys.handlers())
        .await
        .map_err(|e| client::error("SMEMBERS", e))?;
    let local: HashMap<String, (usize, event_core::dispatch::CounterSnapshot)> = inner
        .handlers()
        .iter()
        .map(|(name, h)| (name.clone(), (h.members.len(), h.counters.snapshot())))
        .collect();
    for handler in handlers {
        let group = inner.group(&handler);
        let mut handler_stats = HandlerStats {
            group: group.clone(),
            ..HandlerStats::default()
        };
        for (event_type, groups) in &per_stream {
            if let Some(info) = groups.get(&group) {
                handler_stats.event_types.push(event_type.clone());
                handler_stats.pending += info.pending;
                handler_stats.lag += info.lag;
            }
        }
        let redrive = groups_of(inner, &inner.keys.redrive(&group)).await?;
        if let Some(info) = redrive.get(&group) {
            handler_stats.pending += info.pending;
            handler_stats.lag += info.lag;
        }
        handler_stats.dead_letter_depth = dead_letter_depth(inner, &group).await?;
        if let Some((members, counters)) = local.get(&handler) {
            handler_stats.subscriptions = *members;
            handler_stats.processed = counters.processed;
            handler_stats.failed = counters.failed;
            handler_stats.retried = counters.retried;
            handler_stats.dead_lettered = counters.dead_lettered;
            handler_stats.last_event_at = counters.last_event_at;
            if *members > 0 {
                stats.active_subscribers += 1;
                stats.subscription_tasks += members;
            }
        }
        stats.handlers.insert(handler, handler_stats);
    }
    Ok(stats)
}

pub(crate) async fn health(inner: &Inner) -> Health {
    if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
        // The connection is closed: a PING would only wait for its error.
        return Health::shut_down("redis");
    }
    let started = Instant::now();
    let ping: Result<Value, _> = inner.client.ping(None).await;
    let round_trip = started.elapsed();
    if let Err(e) = ping {
        let problem = format!(
            "Redis at {} does not answer: {}",
            event_core::redact_url(&inner.config.redis_url),
            e.details()
        );
        return Health::unhealthy("redis", problem);
    }
    let local: Vec<(String, LocalHandler)> = inner
        .handlers()
        .iter()
        .filter(|(_, h)| !h.members.is_empty())
        .map(|(name, h)| (name.clone(), h.clone()))
        .collect();
    let mut consumers = Vec::new();
    let mut problems = Vec::new();
    for (
        handler,
        LocalHandler {
            group,
            streams,
            counters,
            members,
        },
    ) in local
    {
        // Work not yet finished: lag (not delivered) plus pending (delivered, not acknowledged).
        let mut backlog = 0;
        for stream in &streams {
            match groups_of(inner, stream).await {
                Ok(groups) => {
                    if let Some(info) = groups.get(&group) {
                        backlog += info.lag + info.pending;
                    }
                }
                Err(e) => problems.push(format!("cannot read the groups of {stream}: {e}")),
            }
        }
        let depth = dead_letter_depth(inner, &group).await.unwrap_or(0);
        let alive = members.iter().any(|m| inner.consumers.is_running(*m));
        let stalled = backlog > 0 && counters.idle_for(inner.config.stall_timeout);
        consumers.push(ConsumerHealth::new(handler, alive, stalled, backlog, depth));
    }
    Health::assess("redis", Some(round_trip), consumers, problems, false)
}

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
    let entries: Vec<(String, HashMap<String, Value>)> = inner
        .client
        .xrange_values(key, start, end, count)
        .await
        .map_err(|e| client::error("XRANGE", e))?;
    let mut letters = Vec::new();
    for (id, fields) in entries {
        let Some(raw) = fields.get("dead_letter") else {
            continue;
        };
        match serde_json::from_slice::<DeadLetter>(&entry::value_bytes(raw)) {
            Ok(mut letter) => {
                letter.id = id;
                letters.push(letter);
            }
            Err(e) => {
                tracing::warn!(stream = %key, entry = %id, "unreadable dead letter skipped: {e}")
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
        Some(limit as u64),
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
                .push((letter.id, "not a valid envelope: nothing to redrive".into()));
            continue;
        };
        let json = inner.codec.encode(event)?;
        // Moved, not copied: the redrive stream gains it and the queue loses it together.
        let tx = inner.client.multi();
        let _: Result<Value, _> = tx
            .xadd(
                redrive.as_str(),
                false,
                None,
                "*",
                entry::fields(event, json),
            )
            .await;
        let _: Result<Value, _> = tx.xdel(dlq.as_str(), letter.id.as_str()).await;
        tx.exec::<Value>(true)
            .await
            .map_err(|e| client::error("redriving a dead letter", e))?;
        report.redriven += 1;
    }
    Ok(report)
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
