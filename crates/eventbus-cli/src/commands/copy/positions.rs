//! A handler's position carried from Redis to Kafka, by event: in each partition of the
//! target topic, the group starts at the first record whose event the handler had not
//! finished on the source (delivered and acknowledged), or at the partition's end when it had
//! finished them all.
//!
//! Kafka keeps one offset per partition, no holes, so what the handler had finished after its
//! first unfinished event in a partition is delivered again: [`Start::redelivered`] counts
//! those records exactly, and with the events that were pending (delivered on the source,
//! not acknowledged: perhaps handled, perhaps not) it bounds the repeats the handler sees.

use std::collections::HashSet;

use event_core::EventId;
use event_kafka::PartitionRecords;
use serde::Serialize;

/// Where a group starts in the partitions of one topic, and what that costs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Start {
    /// `(partition, offset)` to commit.
    pub(crate) offsets: Vec<(i32, i64)>,
    /// Records at or after the committed offsets whose events the handler had finished:
    /// each is delivered to it again.
    pub(crate) redelivered: u64,
    /// Records at or after the committed offsets whose events it had not finished.
    pub(crate) unfinished: u64,
    /// Records before the committed offsets (finished, so skipped).
    pub(crate) skipped: u64,
}

/// The start of a group that had finished the events in `finished`: a record whose event is
/// not in it (an event the source never had, a record that is no event) is not finished,
/// so it is delivered rather than skipped.
pub(crate) fn start(partitions: &[PartitionRecords], finished: &HashSet<EventId>) -> Start {
    let mut start = Start::default();
    for p in partitions {
        let is_finished =
            |id: &Option<EventId>| id.as_ref().is_some_and(|id| finished.contains(id));
        let first = p.records.iter().position(|(_, id)| !is_finished(id));
        let offset = first.map_or(p.end, |i| p.records[i].0);
        let at = first.unwrap_or(p.records.len());
        start.skipped += at as u64;
        for (_, id) in &p.records[at..] {
            if is_finished(id) {
                start.redelivered += 1;
            } else {
                start.unfinished += 1;
            }
        }
        start.offsets.push((p.partition, offset));
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<EventId> {
        (0..n).map(|_| EventId::new()).collect()
    }

    #[test]
    fn a_group_starts_at_its_first_unfinished_event_in_each_partition() {
        let e = ids(6);
        let partitions = vec![
            // Finished, finished, unfinished, finished (delivered again), unfinished.
            PartitionRecords {
                partition: 0,
                end: 15,
                records: vec![
                    (10, Some(e[0])),
                    (11, Some(e[1])),
                    (12, Some(e[2])),
                    (13, Some(e[3])),
                    (14, Some(e[4])),
                ],
            },
            // All finished: the partition's end.
            PartitionRecords {
                partition: 1,
                end: 1,
                records: vec![(0, Some(e[5]))],
            },
            // Empty.
            PartitionRecords {
                partition: 2,
                end: 0,
                records: vec![],
            },
        ];
        let finished: HashSet<EventId> = [e[0], e[1], e[3], e[5]].into_iter().collect();
        let s = start(&partitions, &finished);
        assert_eq!(s.offsets, [(0, 12), (1, 1), (2, 0)]);
        assert_eq!((s.skipped, s.redelivered, s.unfinished), (3, 1, 2));
    }

    #[test]
    fn records_that_are_no_events_or_unknown_events_are_not_skipped() {
        let e = ids(2);
        let partitions = vec![PartitionRecords {
            partition: 0,
            end: 3,
            records: vec![(0, Some(e[0])), (1, None), (2, Some(e[1]))],
        }];
        let finished: HashSet<EventId> = [e[0], e[1]].into_iter().collect();
        let s = start(&partitions, &finished);
        assert_eq!(s.offsets, [(0, 1)]);
        assert_eq!((s.skipped, s.redelivered, s.unfinished), (1, 1, 1));
    }
}
