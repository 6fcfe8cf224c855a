//! Stats (offsets and high watermarks), health (a metadata round trip, consumer tasks,
//! stalls) and the dead-letter operations (list, redrive, purge) on the dead-letter topics.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;
use std::time::Duration;

use event_core::{
    BusStats, DeadLetter, DeadLetterSelection, Error, GroupMemberStats, HandlerStats, Health,
    RedriveReport,
};
use rskafka::record::Record;

use crate::assignor::Assignment;
use crate::consumer::{Groups, dlq_header};
use crate::control::OffsetSpec;
use crate::core::Inner;
use crate::data::{Fetched, OffsetAt};
use crate::record;

/// Bytes per fetch when reading a topic to its end.
const READ_BYTES: i32 = 4 * 1024 * 1024;

/// Every record of one partition from `from` up to `end` (exclusive).
pub(crate) async fn read_partition(
    inner: &Inner,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
) -> Result<Vec<(i64, Record)>, Error> {
    let mut out = Vec::new();
    let mut position = from;
    while position < end {
        match inner
            .plane
            .fetch(
                topic,
                partition,
                position,
                READ_BYTES,
                Duration::from_millis(10),
            )
            .await?
        {
            Fetched::Records {
                records,
                undecodable,
                next_offset,
                ..
            } => {
                for u in undecodable {
                    tracing::warn!(%topic, partition, first_offset = u.first_offset, last_offset = u.last_offset, "undecodable records skipped: {}", u.reason);
                }
                out.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= position && r.offset < end)
                        .map(|r| (r.offset, r.record)),
                );
                // Past transaction markers, aborted transactions and compaction gaps too.
                if next_offset <= position {
                    // Nothing more below `end`: a gap at the log's end.
                    break;
                }
                position = next_offset;
            }
            Fetched::OffsetOutOfRange => {
                let earliest = inner
                    .plane
                    .offset_at(topic, partition, OffsetAt::Earliest)
                    .await?;
                if earliest <= position {
                    break;
                }
                position = earliest;
            }
        }
    }
    Ok(out)
}

/// The retained records of a topic (latest − earliest, summed over partitions) and the
/// latest offset of each partition.
async fn retained(inner: &Inner, topic: &str) -> Result<(u64, HashMap<i32, i64>), Error> {
    let earliest = inner
        .control
        .list_offsets(topic, &[], OffsetSpec::Earliest)
        .await?;
    let latest: HashMap<i32, i64> = inner
        .control
        .list_offsets(topic, &[], OffsetSpec::Latest)
        .await?
        .into_iter()
        .map(|(p, l)| (p, l.unwrap_or(0)))
        .collect();
    let count = latest
        .iter()
        .map(|(p, l)| {
            let e = earliest.get(p).copied().flatten().unwrap_or(0);
            u64::try_from(l - e).unwrap_or(0)
        })
        .sum();
    Ok((count, latest))
}

/// The live dead letters of a group, in offset order (the id of each is its offset), and for
/// each the ids of its copies.
///
/// A copy is a later dead letter of the same record (the same original topic, partition and
/// offset): a record dead-lettered but not yet committed when its partition moved (a
/// rebalance, a broker restart, a crashed member) is delivered again, fails again, and is
/// stored again. A copy is also a later dead letter of the same event from another record: a
/// publish whose answer was lost when the broker went down is written again by its retry
/// (Kafka writes without an idempotent producer here), so the topic holds the event twice and
/// both records fail alike. The topic keeps every copy (at least once); the list shows each
/// record's and each event's dead letter once, and redrive and purge take its copies with it,
/// also the copies of the same record written after them.
async fn read_dead_letters(
    inner: &Inner,
    group: &str,
) -> Result<(Vec<DeadLetter>, HashMap<String, Vec<String>>), Error> {
    let topic = inner.topics.dead_letters(group);
    if inner
        .topics
        .existing(&inner.control, &topic)
        .await?
        .is_none()
    {
        return Ok((Vec::new(), HashMap::new()));
    }
    let start = inner.plane.offset_at(&topic, 0, OffsetAt::Earliest).await?;
    let end = inner.plane.offset_at(&topic, 0, OffsetAt::Latest).await?;
    let records = read_partition(inner, &topic, 0, start, end).await?;
    let mut removed = HashSet::new();
    let mut letters = Vec::new();
    for (offset, r) in records {
        if let Some(id) = r.headers.get(dlq_header::REMOVED) {
            removed.insert(String::from_utf8_lossy(id).into_owned());
            continue;
        }
        let Some(value) = r.value.as_deref() else {
            continue;
        };
        match inner.codec.decode_letter(value) {
            Ok(mut letter) => {
                letter.id = offset.to_string();
                letters.push((origin(&r), letter));
            }
            Err(e) => {
                tracing::warn!(%topic, offset, "unreadable dead letter skipped: {e}");
            }
        }
    }
    // A copy written after its record's dead letter was redriven or purged (the record was
    // delivered again, by a member that had not committed it) is gone with that letter: the
    // operator already dealt with the record.
    let removed_origins: HashSet<String> = letters
        .iter()
        .filter(|(_, l)| removed.contains(&l.id))
        .filter_map(|(origin, _)| origin.clone())
        .collect();
    letters.retain(|(origin, l)| {
        !removed.contains(&l.id) && origin.as_ref().is_none_or(|o| !removed_origins.contains(o))
    });
    Ok(first_letters(letters))
}

/// The first live letter of each record and of each event, and for each the ids of its later
/// copies.
fn first_letters(
    letters: Vec<(Option<String>, DeadLetter)>,
) -> (Vec<DeadLetter>, HashMap<String, Vec<String>>) {
    // Keyed by the origin ("topic/partition/offset") and by the event id ("event:{id}"): a
    // letter matching a first letter on either is its copy.
    let mut first_of: HashMap<String, String> = HashMap::new();
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    let mut live = Vec::new();
    for (origin, letter) in letters {
        let keys: Vec<String> = origin
            .into_iter()
            .chain(letter.event.as_ref().map(|e| format!("event:{}", e.id)))
            .collect();
        if let Some(first) = keys.iter().find_map(|k| first_of.get(k)) {
            copies.entry(first.clone()).or_default().push(letter.id);
            continue;
        }
        for key in keys {
            first_of.insert(key, letter.id.clone());
        }
        live.push(letter);
    }
    (live, copies)
}

/// Where a dead letter's record came from (topic, partition, offset), from its headers.
fn origin(record: &Record) -> Option<String> {
    let header = |name| record.headers.get(name).map(|v| String::from_utf8_lossy(v));
    Some(format!(
        "{}/{}/{}",
        header(dlq_header::TOPIC)?,
        header(dlq_header::PARTITION)?,
        header(dlq_header::OFFSET)?
    ))
}

/// Records that hide dead letters (redriven or purged).
async fn remove(inner: &Inner, group: &str, ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let topic = inner.topics.dead_letters(group);
    let now = record::kafka_timestamp(time::OffsetDateTime::now_utc());
    let markers = ids
        .iter()
        .map(|id| Record {
            key: None,
            value: None,
            headers: BTreeMap::from([(dlq_header::REMOVED.to_string(), id.clone().into_bytes())]),
            timestamp: now,
        })
        .collect();
    inner.produce(&topic, 0, markers).await?;
    Ok(())
}

pub(crate) async fn stats(inner: &Inner, groups: &Groups) -> Result<BusStats, Error> {
    let mut stats = BusStats {
        backend: "kafka".into(),
        ..BusStats::default()
    };
    let topics = inner.topics.all_event_topics(&inner.control).await?;
    let mut latest = HashMap::new();
    for (event_type, topic, _) in &topics {
        let (n, ends) = retained(inner, topic).await?;
        latest.insert(topic.clone(), ends);
        if n > 0 {
            stats.total_events += n;
            stats.events_by_type.insert(event_type.to_string(), n);
        }
    }
    let local: Vec<_> = inner
        .handlers
        .lock()
        .iter()
        .map(|(name, h)| (name.clone(), h.clone()))
        .collect();
    for (handler, local) in local {
        let snapshot = local.counters.snapshot();
        let mut handler_stats = HandlerStats {
            group: local.group.clone(),
            event_types: local.sources.clone(),
            subscriptions: local.members.len(),
            processed: snapshot.processed,
            failed: snapshot.failed,
            retried: snapshot.retried,
            dead_lettered: snapshot.dead_lettered,
            last_event_at: snapshot.last_event_at,
            ..HandlerStats::default()
        };
        let group = groups.get(&handler);
        // Partitions this process owns: lag from its own positions; the others' from what
        // their owners committed.
        let mut owned = HashSet::new();
        if let Some(group) = &group {
            handler_stats.pending = group.pending();
            handler_stats.lag = group.lag();
            owned.extend(group.owned());
            let generation = group.standing().generation;
            handler_stats.generation = (generation >= 0).then_some(generation);
        }
        let request: Vec<(String, Vec<i32>)> = topics
            .iter()
            .filter(|(event_type, _, _)| local.sources.iter().any(|t| t == event_type.as_str()))
            .map(|(_, topic, n)| (topic.clone(), (0..*n).collect()))
            .collect();
        if !request.is_empty() {
            let committed = inner.control.fetch_offsets(&local.group, &request).await?;
            handler_stats.lag += committed_lag(&committed, &latest, &owned);
        }
        handler_stats.members = members(inner, &local.group).await;
        handler_stats.dead_letter_depth =
            read_dead_letters(inner, &local.group).await?.0.len() as u64;
        if !local.members.is_empty() {
            stats.active_subscribers += 1;
            stats.subscription_tasks += local.members.len();
        }
        stats.handlers.insert(handler, handler_stats);
    }
    remote_handlers(inner, &topics, &latest, &mut stats).await?;
    Ok(stats)
}

/// A group's lag from its committed offsets: latest − committed, summed over the partitions
/// with a commit, except those this process owns (it knows their lag from its own positions).
fn committed_lag(
    committed: &HashMap<(String, i32), Option<i64>>,
    latest: &HashMap<String, HashMap<i32, i64>>,
    owned: &HashSet<(String, i32)>,
) -> u64 {
    committed
        .iter()
        .filter(|(key, _)| !owned.contains(*key))
        .filter_map(|((topic, p), c)| {
            let c = (*c)?;
            let end = latest
                .get(topic)
                .and_then(|l| l.get(p))
                .copied()
                .unwrap_or(c);
            Some(u64::try_from(end - c).unwrap_or(0))
        })
        .sum()
}

/// The members of a group in every process, with their partitions, as the coordinator
/// describes them (none when it cannot be asked).
async fn members(inner: &Inner, group: &str) -> Vec<GroupMemberStats> {
    let described = match inner.control.describe_groups(&[group.to_string()]).await {
        Ok(described) => described,
        Err(e) => {
            tracing::debug!(%group, "cannot describe the group: {e}");
            return Vec::new();
        }
    };
    described
        .into_iter()
        .flat_map(|d| d.members)
        .map(|m| GroupMemberStats {
            partitions: Assignment::decode(&m.assignment)
                .map(|a| a.partitions)
                .unwrap_or_default(),
            member_id: m.member_id,
            instance_id: m.group_instance_id,
            client_id: m.client_id,
            host: m.client_host,
        })
        .collect()
}

/// Handlers subscribed in other processes: the cluster's groups named
/// `{EVENT_CONSUMER_GROUP}.{handler}` with committed offsets on this bus's event topics, with
/// their lag (latest − committed) and dead-letter depth.
async fn remote_handlers(
    inner: &Inner,
    topics: &[(event_core::EventType, String, i32)],
    latest: &HashMap<String, HashMap<i32, i64>>,
    stats: &mut BusStats,
) -> Result<(), Error> {
    if topics.is_empty() {
        return Ok(());
    }
    let prefix = format!("{}.", inner.config.consumer_group);
    let remote: Vec<(String, String)> = inner
        .control
        .list_groups()
        .await?
        .into_iter()
        .filter_map(|g| {
            let handler = g.group_id.strip_prefix(&prefix)?.to_string();
            (!stats.handlers.contains_key(&handler)).then_some((handler, g.group_id))
        })
        .collect();
    let request: Vec<(String, Vec<i32>)> = topics
        .iter()
        .map(|(_, topic, n)| (topic.clone(), (0..*n).collect()))
        .collect();
    let request = &request;
    let offsets: Vec<_> = futures::stream::iter(remote)
        .map(|(handler, group)| async move {
            let committed = inner.control.fetch_offsets(&group, request).await;
            (handler, group, committed)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (handler, group, committed) in offsets {
        let committed = match committed {
            Ok(committed) => committed,
            Err(e) => {
                tracing::debug!(%group, "cannot read the committed offsets of a group: {e}");
                continue;
            }
        };
        let mut handler_stats = HandlerStats {
            group: group.clone(),
            ..HandlerStats::default()
        };
        handler_stats.event_types = topics
            .iter()
            .filter(|(_, topic, _)| {
                committed
                    .iter()
                    .any(|((t, _), c)| t == topic && c.is_some())
            })
            .map(|(event_type, _, _)| event_type.to_string())
            .collect();
        handler_stats.lag = committed_lag(&committed, latest, &HashSet::new());
        if handler_stats.event_types.is_empty() {
            // A group of another bus (another topic prefix) on the same cluster.
            continue;
        }
        handler_stats.dead_letter_depth = read_dead_letters(inner, &group).await?.0.len() as u64;
        handler_stats.members = members(inner, &group).await;
        stats.handlers.insert(handler, handler_stats);
    }
    Ok(())
}

pub(crate) async fn health(inner: &Inner, groups: &Groups) -> Health {
    let ping = || inner.control.metadata(Some(&[]));
    let unreachable = |e: Error| {
        format!(
            "Kafka at {} does not answer: {e}",
            inner.kafka.bootstrap_servers.join(",")
        )
    };
    let round_trip = match inner.lifecycle.round_trip("kafka", ping, unreachable).await {
        Ok(round_trip) => round_trip,
        Err(health) => return health,
    };
    let mut consumers = Vec::new();
    let mut problems = inner.topics.misconfigured();
    for (handler, local) in inner.handlers.active() {
        let group = groups.get(&handler);
        let backlog = group.as_ref().map_or(0, |g| g.lag() + g.pending());
        let fetching = group.as_ref().is_some_and(|g| g.fetching());
        if let Some(group) = &group {
            let standing = group.standing();
            problems.extend(standing.fenced);
            problems.extend(standing.trouble);
            problems.extend(group.dead_letter_problems());
        }
        let depth = match read_dead_letters(inner, &local.group).await {
            Ok((letters, _)) => letters.len() as u64,
            Err(e) => {
                problems.push(format!(
                    "cannot read the dead letters of {}: {e}",
                    local.group
                ));
                0
            }
        };
        let alive = fetching && local.is_running(inner.lifecycle.consumers());
        let stall_timeout = inner.config.stall_timeout;
        consumers.push(local.health(handler, alive, backlog, depth, stall_timeout));
    }
    Health::assess("kafka", Some(round_trip), consumers, problems, false)
}

/// Refuses handlers neither this bus nor the cluster's groups know.
async fn known(inner: &Inner, handler: &str) -> Result<String, Error> {
    let group = inner.group(handler);
    if inner.handlers.contains(handler) {
        return Ok(group);
    }
    let groups = inner.control.list_groups().await?;
    if groups.iter().any(|g| g.group_id == group) {
        Ok(group)
    } else {
        Err(Error::UnknownHandler {
            name: handler.to_string(),
        })
    }
}

/// The selected live letters, each with the ids of its copies.
fn selected(
    (letters, mut copies): (Vec<DeadLetter>, HashMap<String, Vec<String>>),
    selection: &DeadLetterSelection,
) -> Vec<(DeadLetter, Vec<String>)> {
    letters
        .into_iter()
        .filter(|l| selection.includes(&l.id))
        .map(|l| {
            let copies = copies.remove(&l.id).unwrap_or_default();
            (l, copies)
        })
        .collect()
}

pub(crate) async fn dead_letters(
    inner: &Inner,
    handler: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, Error> {
    let group = known(inner, handler).await?;
    let (mut letters, _) = read_dead_letters(inner, &group).await?;
    letters.truncate(limit);
    Ok(letters)
}

pub(crate) async fn redrive(
    inner: &Inner,
    handler: &str,
    selection: &DeadLetterSelection,
) -> Result<RedriveReport, Error> {
    let group = known(inner, handler).await?;
    let topic = inner.topics.redrive(&group);
    inner
        .topics
        .ensure(&inner.control, &[(topic.clone(), 1)])
        .await?;
    let mut report = RedriveReport::default();
    let mut moved = Vec::new();
    let mut records = Vec::new();
    for (letter, copies) in selected(read_dead_letters(inner, &group).await?, selection) {
        let Some(event) = &letter.event else {
            report
                .skipped
                .push((letter.id, event_core::backend::NOT_AN_ENVELOPE.into()));
            continue;
        };
        records.push(record::encode(&inner.codec, event)?);
        moved.push(letter.id);
        moved.extend(copies);
    }
    report.redriven = records.len() as u64;
    // The events first, then the markers: a failure in between redelivers, never loses.
    inner.produce(&topic, 0, records).await?;
    remove(inner, &group, &moved).await?;
    Ok(report)
}

pub(crate) async fn purge(
    inner: &Inner,
    handler: &str,
    selection: &DeadLetterSelection,
) -> Result<u64, Error> {
    let group = known(inner, handler).await?;
    let chosen = selected(read_dead_letters(inner, &group).await?, selection);
    let purged = chosen.len() as u64;
    let ids: Vec<String> = chosen
        .into_iter()
        .flat_map(|(letter, copies)| std::iter::once(letter.id).chain(copies))
        .collect();
    remove(inner, &group, &ids).await?;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::{DeadLetterReason, Event, EventType};

    fn letter(id: &str, event: Option<&Event>) -> DeadLetter {
        let now = time::OffsetDateTime::now_utc();
        DeadLetter {
            id: id.to_string(),
            handler: "h".into(),
            group: "g".into(),
            reason: DeadLetterReason::PermanentFailure,
            event: event.cloned(),
            raw: None,
            attempts: 1,
            first_error: "e".into(),
            last_error: "e".into(),
            first_failed_at: now,
            last_failed_at: now,
            dead_lettered_at: now,
        }
    }

    #[test]
    fn later_letters_of_a_record_or_an_event_are_copies_of_the_first() {
        let event = |n: u64| {
            Event::builder(EventType::USER_REGISTERED, "s")
                .payload(serde_json::json!({"user_id": n.to_string()}))
                .build()
                .unwrap()
        };
        let (a, b) = (event(1), event(2));
        let origin = |o: i64| Some(format!("t/0/{o}"));
        let (live, copies) = first_letters(vec![
            (origin(10), letter("1", Some(&a))),
            // The same record dead-lettered again after a rebalance.
            (origin(10), letter("2", Some(&a))),
            // The same event written twice by a retried publish: another record.
            (origin(11), letter("3", Some(&a))),
            (origin(12), letter("4", Some(&b))),
            // Not an envelope: only its record identifies it.
            (origin(13), letter("5", None)),
            (origin(13), letter("6", None)),
            (None, letter("7", None)),
        ]);
        let ids: Vec<&str> = live.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["1", "4", "5", "7"]);
        assert_eq!(copies["1"], ["2", "3"]);
        assert_eq!(copies["5"], ["6"]);
        assert_eq!(copies.len(), 2);
    }
}
