//! What a migration from another backend writes besides the events (`eventbus copy`): where
//! each handler's consumer group starts (committed offsets), and dead letters with their
//! provenance; and the records of an event topic with their offsets, to decide those offsets.

use event_core::{DeadLetter, Error, EventId, EventType, JsonCodec};

use crate::admin::read_partition;
use crate::bus::KafkaBus;
use crate::consumer::dead_letter_record;
use crate::data::OffsetAt;
use crate::record;

/// The records of one partition of an event topic, in offset order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecords {
    /// The partition.
    pub partition: i32,
    /// The offset the next record will get (the high watermark when read).
    pub end: i64,
    /// Each retained record's offset and the id of its event (`None` for a record that is not
    /// an event envelope).
    pub records: Vec<(i64, Option<EventId>)>,
}

impl KafkaBus {
    /// Every retained record of `event_type`'s topic, partition by partition, with its
    /// offset and event id. Creates the topic (with `KAFKA_PARTITIONS`) when it does not
    /// exist, as a publish would, so that a group can be given a position in it.
    ///
    /// # Errors
    /// A backend error.
    pub async fn topic_records(
        &self,
        event_type: &EventType,
    ) -> Result<Vec<PartitionRecords>, Error> {
        let inner = &self.inner;
        let topic = inner.topics.events(event_type.as_str());
        let count = inner.topics.event_topic(&inner.control, &topic).await?;
        let mut out = Vec::with_capacity(count.max(0) as usize);
        for partition in 0..count {
            let start = inner
                .plane
                .offset_at(&topic, partition, OffsetAt::Earliest)
                .await?;
            let end = inner
                .plane
                .offset_at(&topic, partition, OffsetAt::Latest)
                .await?;
            let records = read_partition(inner, &topic, partition, start, end)
                .await?
                .into_iter()
                .map(|(offset, r)| {
                    let id = JsonCodec::keep_sealed(record::decode(&inner.codec, &r))
                        .ok()
                        .map(|e| e.id);
                    (offset, id)
                })
                .collect();
            out.push(PartitionRecords {
                partition,
                end,
                records,
            });
        }
        Ok(out)
    }

    /// Commits `(partition, offset)`s of `event_type`'s topic for `handler`'s consumer group:
    /// the offset of the next record each partition's member will read, as Kafka consumers
    /// commit. A group that subscribes later starts there, whatever its `StartFrom` (which
    /// applies to partitions without a committed offset only).
    ///
    /// # Errors
    /// A backend error; Kafka refuses the commit while the group has live members (stop the
    /// handler's processes first).
    pub async fn commit_group_offsets(
        &self,
        handler: &str,
        event_type: &EventType,
        offsets: &[(i32, i64)],
    ) -> Result<(), Error> {
        let topic = self.inner.topics.events(event_type.as_str());
        let offsets: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|&(partition, offset)| (topic.clone(), partition, offset))
            .collect();
        self.inner
            .control
            .commit_offsets(&self.inner.group(handler), -1, "", &offsets)
            .await
    }

    /// Stores `letter` in the dead-letter topic of its handler's group on this bus, keeping
    /// its provenance (reason, attempts, first and last error and their times, when it was
    /// dead-lettered); its `group` becomes this bus's group of the handler. It is listed,
    /// redriven and purged like the handler's own dead letters.
    ///
    /// # Errors
    /// A backend error.
    pub async fn import_dead_letter(&self, letter: &DeadLetter) -> Result<(), Error> {
        let inner = &self.inner;
        let group = inner.group(&letter.handler);
        let topic = inner.topics.dead_letters(&group);
        inner
            .topics
            .ensure(&inner.control, &[(topic.clone(), 1)])
            .await?;
        let mut letter = letter.clone();
        letter.group = group;
        let record = dead_letter_record(&inner.codec, &letter, None)?;
        inner.produce(&topic, 0, vec![record]).await?;
        Ok(())
    }
}
