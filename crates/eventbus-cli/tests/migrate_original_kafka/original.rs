//! The original's Kafka data, written as its `KafkaEventBus.publish_event` wrote it: the helper
//! of `migrate_original_kafka.rs`. A record per event on `{prefix}.{str(type) with dots as
//! dashes}`, key `partition_key or event_id` (UTF-8), value `json.dumps(event.to_dict())`
//! (UTF-8), gzip, no headers, the partition chosen as aiokafka's default partitioner does
//! (murmur2 of the key, as the Java client).

use std::time::Duration;

use rskafka::chrono::DateTime;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

use super::original_data::{
    Case, Mix, NOT_JSON, Nth, agent_task_completed, feature_flag_updated, isoformat,
    opportunity_created, opportunity_updated_with_sourcing, posted_opportunity, python_json,
    request_completed, unimportable, user_registered, uuid4,
};

/// Enum topics: created by the original's admin client with `KAFKA_PARTITIONS` (3).
pub(crate) const ENUM_PARTITIONS: i32 = 3;
/// String topics: auto-created by the broker (`num.partitions`, 2 here).
pub(crate) const STRING_PARTITIONS: i32 = 2;

/// One record as the original's publishers made it, and what the bus must hold for it.
pub(crate) struct Made {
    /// `str(event_type)`: `EventType.X` or a dotted string.
    pub(crate) type_name: String,
    /// The record key: the publisher's partition key, or the event id.
    pub(crate) key: String,
    /// The record value.
    pub(crate) value: Vec<u8>,
    pub(crate) id: String,
    /// `Some` when the import must store it: the fields compared.
    pub(crate) expected: Option<Json>,
}

/// The original's topic of a type: `f"{prefix}.{str(type).replace('.', '-')}"`.
pub(crate) fn topic(prefix: &str, type_name: &str) -> String {
    format!("{prefix}.{}", type_name.replace('.', "-"))
}

/// Eight kinds over five days, in both spellings of the type; every 40th on a whole second.
fn mix() -> Mix {
    Mix {
        kinds: vec![
            |nth| opportunity_created(nth, Json::Null),
            user_registered,
            agent_task_completed,
            maintenance_scheduled,
            posted_opportunity,
            feature_flag_updated,
            request_completed,
            opportunity_updated_with_sourcing,
        ],
        whole_second_every: 40,
        oldest: 5 * 86_400,
    }
}

/// `publish_maintenance_scheduled`: no partition key, so the record key is the event id.
fn maintenance_scheduled(nth: &Nth) -> Case {
    Case::published(
        nth,
        ("EventType.SYSTEM_MAINTENANCE", "system.maintenance"),
        None,
        "system",
        json!({"maintenance_type": "upgrade", "start_time": nth.published,
               "estimated_duration": "2h", "affected_components": ["api"]}),
    )
}

/// The `n`th event of a mixed stream over seven types in both spellings.
pub(crate) fn make(n: usize, rng: &mut fastrand::Rng) -> Made {
    let made = super::original_data::make(n, rng, &mix(), format!("corr-{}", n % 5));
    let event = &made.event;
    let key = made
        .partition_key()
        .as_ref()
        .and_then(Json::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| event.id.clone());
    Made {
        type_name: event.event_type.clone(),
        key,
        value: python_json(event).into_bytes(),
        id: event.id.clone(),
        expected: Some(made.expected()),
    }
}

/// Records that cannot be imported: one not JSON, one failing its schema, two of a type that
/// is not known. Their type names and records.
pub(crate) fn bad(rng: &mut fastrand::Rng) -> Vec<Made> {
    let now = isoformat(OffsetDateTime::now_utc() - time::Duration::seconds(30));
    let (not_json_type, not_json) = NOT_JSON;
    let mut made = vec![Made {
        type_name: not_json_type.into(),
        key: "agent-1".into(),
        value: not_json.as_bytes().to_vec(),
        id: uuid4(rng),
        expected: None,
    }];
    made.extend(unimportable(rng, &now).into_iter().map(|event| Made {
        type_name: event.event_type.clone(),
        key: event.id.clone(),
        value: python_json(&event).into_bytes(),
        id: event.id,
        expected: None,
    }));
    made
}

/// Kafka's murmur2, as the Java client and aiokafka's default partitioner use it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A Kafka client for the original's cluster.
pub(crate) async fn client(brokers: &str) -> anyhow::Result<Client> {
    let servers = brokers.split(',').map(str::to_string).collect();
    Ok(
        tokio::time::timeout(Duration::from_secs(30), ClientBuilder::new(servers).build())
            .await??,
    )
}

/// Creates the original's topic of `type_name`: an enum type's as its admin client did, a
/// string type's as the broker's auto-creation would.
pub(crate) async fn create_topic(
    client: &Client,
    prefix: &str,
    type_name: &str,
) -> anyhow::Result<()> {
    let partitions = if type_name.starts_with("EventType.") {
        ENUM_PARTITIONS
    } else {
        STRING_PARTITIONS
    };
    client
        .controller_client()?
        .create_topic(topic(prefix, type_name), partitions, 1, 10_000)
        .await?;
    Ok(())
}

/// `send_and_wait` for each of `made`, in order, on topics that exist.
pub(crate) async fn publish(client: &Client, prefix: &str, made: &[Made]) -> anyhow::Result<()> {
    let mut by_partition: std::collections::BTreeMap<(String, i32), Vec<Record>> =
        Default::default();
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let timestamp = DateTime::from_timestamp_millis(now as i64).unwrap_or_default();
    for m in made {
        let partitions = if m.type_name.starts_with("EventType.") {
            ENUM_PARTITIONS
        } else {
            STRING_PARTITIONS
        };
        let partition = ((murmur2(m.key.as_bytes()) & 0x7fff_ffff) % partitions as u32) as i32;
        by_partition
            .entry((topic(prefix, &m.type_name), partition))
            .or_default()
            .push(Record {
                key: Some(m.key.clone().into_bytes()),
                value: Some(m.value.clone()),
                headers: Default::default(),
                timestamp,
            });
    }
    for ((topic, partition), records) in by_partition {
        let partition_client = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await?;
        for chunk in records.chunks(200) {
            partition_client
                .produce(chunk.to_vec(), Compression::Gzip)
                .await?;
        }
    }
    Ok(())
}

/// Deletes the original's topics under `prefix`.
pub(crate) async fn delete_topics(client: &Client, prefix: &str) -> anyhow::Result<()> {
    let controller = client.controller_client()?;
    for t in client.list_topics().await? {
        if t.name.starts_with(&format!("{prefix}.")) {
            controller.delete_topic(t.name, 10_000).await?;
        }
    }
    Ok(())
}
