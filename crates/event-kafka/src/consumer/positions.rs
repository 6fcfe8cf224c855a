//! Where a group's members start in each partition: the group's committed offsets; for a
//! partition of a topic the group never consumed, where the subscription says (`StartFrom`);
//! for a partition added to a topic it consumes, the partition's beginning.

use std::collections::HashMap;

use event_core::{Error, StartFrom};

use crate::core::Inner;
use crate::data::OffsetAt;
use crate::record;

/// Where a new group starts in one partition.
async fn start_position(
    inner: &Inner,
    topic: &str,
    partition: i32,
    start: StartFrom,
) -> Result<i64, Error> {
    let at = match start {
        StartFrom::Earliest => OffsetAt::Earliest,
        StartFrom::Time(t) => OffsetAt::Timestamp(record::unix_millis(t)),
        _ => OffsetAt::Latest,
    };
    inner.plane.offset_at(topic, partition, at).await
}

/// The positions of `request`'s partitions (each topic one of `topics`, the redrive topic
/// last): the group's committed offsets, and where the group starts in the partitions it never
/// consumed (`start`; the redrive topic from its beginning), which the caller commits. Returns
/// every partition's position by (topic index, partition), and the new ones to commit.
pub(super) async fn positions(
    inner: &Inner,
    group_name: &str,
    start: StartFrom,
    topics: &[String],
    request: &[(String, Vec<i32>)],
) -> Result<(Vec<((usize, i32), i64)>, Vec<(String, i32, i64)>), Error> {
    if request.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let committed = inner.control.fetch_offsets(group_name, request).await?;
    let mut positions = Vec::new();
    let mut new_positions = Vec::new();
    for (topic, partitions) in request {
        let i = topics.iter().position(|t| t == topic).unwrap_or(0);
        let uncommitted = partitions.iter().any(|p| {
            committed
                .get(&(topic.clone(), *p))
                .copied()
                .flatten()
                .is_none()
        });
        let start = if i == topics.len() - 1
            || (uncommitted
                && start != StartFrom::Earliest
                && consumed_before(inner, group_name, topic, &committed).await?)
        {
            StartFrom::Earliest
        } else {
            start
        };
        for &p in partitions {
            let position = match committed.get(&(topic.clone(), p)).copied().flatten() {
                Some(offset) => offset,
                None => {
                    let position = start_position(inner, topic, p, start).await?;
                    new_positions.push((topic.clone(), p, position));
                    position
                }
            };
            positions.push(((i, p), position));
        }
    }
    Ok((positions, new_positions))
}

/// Whether the group has a committed position in some partition of `topic`: then a partition
/// without one was added to the topic after the group started on it, and is read from its
/// beginning whatever the subscription's `StartFrom` says (that is for a new group), so that
/// nothing written to the new partition before the rebalance is skipped.
async fn consumed_before(
    inner: &Inner,
    group_name: &str,
    topic: &str,
    committed: &HashMap<(String, i32), Option<i64>>,
) -> Result<bool, Error> {
    if committed
        .iter()
        .any(|((t, _), offset)| t == topic && offset.is_some())
    {
        return Ok(true);
    }
    let Some(count) = inner.topics.existing(&inner.control, topic).await? else {
        return Ok(false);
    };
    let all = inner
        .control
        .fetch_offsets(group_name, &[(topic.to_string(), (0..count).collect())])
        .await?;
    Ok(all.values().any(Option::is_some))
}

/// A group that never consumed a partition starts where the subscription says: those
/// positions are committed before the first member joins, so events published after
/// `subscribe` returns are never skipped, whenever the assignment comes. Kafka accepts such
/// a commit only while the group has no members; with members elsewhere, the member that
/// is assigned the partition commits its start position instead.
pub(super) async fn start_positions(
    inner: &Inner,
    start: StartFrom,
    group_name: &str,
    topics: &[String],
    counts: &[i32],
) -> Result<(), Error> {
    let request: Vec<(String, Vec<i32>)> = topics
        .iter()
        .zip(counts)
        .map(|(t, n)| (t.clone(), (0..*n).collect()))
        .collect();
    let (_, new_positions) = positions(inner, group_name, start, topics, &request).await?;
    if let Err(e) = inner
        .control
        .commit_offsets(group_name, -1, "", &new_positions)
        .await
    {
        tracing::debug!(group = %group_name, "start positions left to the assigned members: {e}");
    }
    Ok(())
}
