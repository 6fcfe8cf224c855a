//! Dead letters of a group: the record written to its dead-letter topic, the letter of a
//! record that is no event (or could not be decoded at all), and the sink that stores letters
//! and acknowledges the finished deliveries.
//!
//! A dead letter that cannot be stored (the topic is gone, or refuses the record) must not be
//! lost and must not wedge the partition until a restart: the write is retried with backoff
//! for as long as this member owns the partition, health says so after the first few
//! attempts, and the partition's commit stays below that offset until the letter is stored.

use std::time::Duration;

use async_trait::async_trait;
use event_core::dispatch::DeliverySink;
use event_core::{DeadLetter, DeadLetterReason, Error, Event, JsonCodec};
use rskafka::record::{Record, UndecodableRecords};
use std::sync::Arc;
use time::OffsetDateTime;

use super::{Group, Token};
use crate::record;

/// Quick attempts at storing a dead letter before health reports the failure (the writes go
/// on after it, more slowly).
const QUICK_ATTEMPTS: u32 = 5;
/// The longest pause between attempts.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Headers of a dead-letter record.
pub(crate) mod dlq_header {
    pub(crate) const REASON: &str = "dlq_reason";
    pub(crate) const HANDLER: &str = "dlq_handler";
    pub(crate) const GROUP: &str = "dlq_group";
    pub(crate) const ATTEMPTS: &str = "dlq_attempts";
    pub(crate) const LAST_ERROR: &str = "dlq_last_error";
    pub(crate) const TOPIC: &str = "dlq_original_topic";
    pub(crate) const PARTITION: &str = "dlq_original_partition";
    pub(crate) const OFFSET: &str = "dlq_original_offset";
    /// On a marker record: the id (offset) of a dead letter that was redriven or purged.
    pub(crate) const REMOVED: &str = "dlq_removed";
}

fn letter(
    group: &Group,
    (reason, event): (DeadLetterReason, Option<Event>),
    raw: Option<String>,
    error: String,
) -> DeadLetter {
    let now = OffsetDateTime::now_utc();
    DeadLetter {
        id: String::new(),
        handler: group.handler.clone(),
        group: group.name.clone(),
        reason,
        event,
        raw,
        attempts: 1,
        first_error: error.clone(),
        last_error: error,
        first_failed_at: now,
        last_failed_at: now,
        dead_lettered_at: now,
    }
}

/// The dead letter of a record that is not an event envelope, or whose sealed payload no key
/// opens (then the letter keeps the sealed event, to be redriven once the key is added).
pub(super) fn invalid_letter(group: &Group, record: &Record, error: Error) -> DeadLetter {
    let (reason, event, error) = JsonCodec::failed_decode(error);
    let raw = event.is_none().then(|| record::raw_text(record));
    letter(group, (reason, event), raw, error)
}

/// The dead letter of data the fetch could not decode (a record with an impossible
/// timestamp, a corrupt batch), with the offsets it covers.
pub(super) fn undecodable_letter(group: &Group, undecodable: &UndecodableRecords) -> DeadLetter {
    let offsets = if undecodable.first_offset == undecodable.last_offset {
        format!("offset {}", undecodable.first_offset)
    } else {
        format!(
            "offsets {} to {}",
            undecodable.first_offset, undecodable.last_offset
        )
    };
    letter(
        group,
        (DeadLetterReason::InvalidEnvelope, None),
        Some(record::raw_undecodable(undecodable)),
        format!(
            "undecodable Kafka data at {offsets}: {}",
            undecodable.reason
        ),
    )
}

/// The record of a dead letter: its JSON as value, provenance in headers.
pub(crate) fn dead_letter_record(
    codec: &JsonCodec,
    letter: &DeadLetter,
    origin: Option<(&str, i32, i64)>,
) -> Result<Record, Error> {
    let json = codec.encode_letter(letter)?;
    let mut headers = std::collections::BTreeMap::new();
    let reason = serde_json::to_value(letter.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    headers.insert(dlq_header::REASON.to_string(), reason.into_bytes());
    headers.insert(
        dlq_header::HANDLER.to_string(),
        letter.handler.clone().into_bytes(),
    );
    headers.insert(
        dlq_header::GROUP.to_string(),
        letter.group.clone().into_bytes(),
    );
    headers.insert(
        dlq_header::ATTEMPTS.to_string(),
        letter.attempts.to_string().into_bytes(),
    );
    headers.insert(
        dlq_header::LAST_ERROR.to_string(),
        letter.last_error.clone().into_bytes(),
    );
    if let Some((topic, partition, offset)) = origin {
        headers.insert(dlq_header::TOPIC.to_string(), topic.as_bytes().to_vec());
        headers.insert(
            dlq_header::PARTITION.to_string(),
            partition.to_string().into_bytes(),
        );
        headers.insert(
            dlq_header::OFFSET.to_string(),
            offset.to_string().into_bytes(),
        );
    }
    Ok(Record {
        key: letter.event.as_ref().map(|e| e.id.to_string().into_bytes()),
        value: Some(json),
        headers,
        timestamp: record::kafka_timestamp(OffsetDateTime::now_utc()),
    })
}

fn pause(attempt: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(10))).min(LONGEST_PAUSE)
}

/// Acknowledgements and dead letters of one group.
pub(super) struct KafkaSink {
    pub(super) group: Arc<Group>,
}

#[async_trait]
impl DeliverySink<Token> for KafkaSink {
    async fn ack(&self, tokens: Vec<Token>) {
        self.group.ack(&tokens);
    }

    /// Stores the letter, retrying while this member owns the partition; only then is the
    /// delivery finished (so the commit never passes a letter that was not stored).
    async fn dead_letter(&self, token: Token, mut letter: DeadLetter) {
        let group = &self.group;
        letter.id.clear();
        let topic = group.topics()[token.topic].as_str();
        let origin = Some((topic, token.partition, token.offset));
        let record = match dead_letter_record(&group.inner.codec, &letter, origin) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(handler = %group.handler, "dead letter cannot be encoded, left unacknowledged: {e}");
                return;
            }
        };
        let mut attempt = 0u32;
        loop {
            match group
                .inner
                .plane
                .produce(&group.dead_letters, 0, vec![record.clone()])
                .await
            {
                Ok(_) => {
                    if attempt >= QUICK_ATTEMPTS {
                        tracing::info!(handler = %group.handler, %topic, partition = token.partition, offset = token.offset, attempts = attempt + 1, "the dead letter was stored at last");
                    }
                    group.dead_letter_stored(token);
                    group.ack(&[token]);
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt == QUICK_ATTEMPTS || attempt.is_multiple_of(50) {
                        tracing::error!(handler = %group.handler, %topic, partition = token.partition, offset = token.offset, attempts = attempt, "storing a dead letter fails; retrying, and the partition's commit waits for it: {e}");
                    }
                    if attempt >= QUICK_ATTEMPTS {
                        group.dead_letter_failing(token, attempt, &e);
                    }
                }
            }
            tokio::time::sleep(pause(attempt)).await;
            if !group.owns(token) {
                // The partition went to another member (or the group stopped): the delivery
                // is not finished here, so its next owner handles it again.
                group.dead_letter_stored(token);
                tracing::warn!(handler = %group.handler, %topic, partition = token.partition, offset = token.offset, "gave up storing a dead letter: the partition is no longer this member's; its next owner delivers the event again");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_a_cap() {
        assert_eq!(pause(0), Duration::from_millis(50));
        assert_eq!(pause(1), Duration::from_millis(100));
        assert_eq!(pause(30), LONGEST_PAUSE);
    }
}
