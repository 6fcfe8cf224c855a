//! The original's Kafka data, written as its `KafkaEventBus.publish_event` wrote it: the helper
//! of `migrate_original_kafka.rs`. A record per event on `{prefix}.{str(type) with dots as
//! dashes}`, key `partition_key or event_id` (UTF-8), value `json.dumps(event.to_dict())`
//! (UTF-8), gzip, no headers, the partition chosen as aiokafka's default partitioner does
//! (murmur2 of the key, as the Java client).

use std::io;
use std::time::Duration;

use rskafka::chrono::DateTime;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde::Serialize;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

/// Enum topics: created by the original's admin client with `KAFKA_PARTITIONS` (3).
pub(crate) const ENUM_PARTITIONS: i32 = 3;
/// String topics: auto-created by the broker (`num.partitions`, 2 here).
pub(crate) const STRING_PARTITIONS: i32 = 2;

/// `Event.to_dict()`: the dataclass fields in order, `timestamp` as `isoformat()`.
#[derive(Serialize, Clone)]
pub(crate) struct PythonEvent {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) payload: Json,
    pub(crate) timestamp: String,
    pub(crate) source: String,
    pub(crate) correlation_id: Option<String>,
    pub(crate) metadata: Json,
}

/// `json.dumps` with its defaults: `", "` and `": "` separators, non-ASCII escaped.
pub(crate) fn python_json(event: &PythonEvent) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Strings and maps of JSON values always serialize.
    let _ = event.serialize(&mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// `datetime.isoformat()` of an aware UTC time: no fraction when it is zero.
pub(crate) fn isoformat(t: OffsetDateTime) -> String {
    let fraction = match t.microsecond() {
        0 => String::new(),
        us => format!(".{us:06}"),
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `str(uuid.uuid4())`.
pub(crate) fn uuid4(rng: &mut fastrand::Rng) -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect();
    let variant = char::from_digit(rng.u32(8..12), 16).unwrap_or('8');
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

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

/// The `n`th event of a mixed stream over seven types in both spellings.
pub(crate) fn make(n: usize, rng: &mut fastrand::Rng) -> Made {
    let micros = if n.is_multiple_of(40) {
        0
    } else {
        rng.i64(1..1_000_000)
    };
    let at = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        - time::Duration::seconds(rng.i64(60..5 * 86_400))
        + time::Duration::microseconds(micros);
    let published = isoformat(at + time::Duration::microseconds(70));
    let correlation = Some(format!("corr-{}", n % 5));
    let enriched = |source: &str| json!({"publisher_source": source, "published_at": published});
    let mut sourcing = None;
    let (type_name, dotted, key_field, source, payload, metadata, correlation) = match n % 8 {
        0 => (
            "EventType.OPPORTUNITY_CREATED",
            "opportunity.created",
            Some("opportunity_id"),
            "opportunity_service",
            json!({"opportunity_id": format!("opp-{n}"), "title": format!("Caf\u{e9} analytics {n}"),
                   "description": "Automated support", "ai_solution_type": "nlp",
                   "market_size_estimate": null, "created_by": null}),
            enriched("opportunity_service"),
            correlation,
        ),
        1 => (
            "EventType.USER_REGISTERED",
            "user.registered",
            Some("user_id"),
            "user_service",
            json!({"user_id": format!("user-{n}"), "email": format!("u{n}@example.com"),
                   "username": null, "user_type": "user"}),
            enriched("user_service"),
            correlation,
        ),
        2 => (
            "EventType.AGENT_TASK_COMPLETED",
            "agent.task_completed",
            Some("agent_id"),
            "agent_orchestrator",
            json!({"agent_id": format!("agent-{}", n % 4), "task_id": format!("task-{n}"),
                   "task_type": "scan_subreddit", "duration_seconds": 12.5, "success": true,
                   "result": {"signals_found": n % 5}}),
            enriched("agent_orchestrator"),
            correlation,
        ),
        // maintenance_scheduled: no partition key, so the record key is the event id.
        3 => (
            "EventType.SYSTEM_MAINTENANCE",
            "system.maintenance",
            None,
            "system",
            json!({"maintenance_type": "upgrade", "start_time": published,
                   "estimated_duration": "2h", "affected_components": ["api"]}),
            enriched("system"),
            correlation,
        ),
        // The API's /publish: a plain string type, the caller's metadata only.
        4 => (
            "opportunity.created",
            "opportunity.created",
            Some("opportunity_id"),
            "admin_api",
            json!({"opportunity_id": format!("opp-{n}"), "title": "Posted by hand",
                   "description": "From the API", "ai_solution_type": "vision"}),
            json!({"requested_by": "admin-1"}),
            None,
        ),
        5 => (
            "feature_flag.updated",
            "feature_flag.updated",
            None,
            "feature_flags",
            json!({"flag_name": "new_ranking", "enabled": n.is_multiple_of(2), "updated_by": "admin-1"}),
            json!({}),
            None,
        ),
        6 => (
            "api.request_completed",
            "api.request_completed",
            None,
            "api_middleware",
            json!({"method": "GET", "path": "/api/v1/opportunities", "status_code": 200,
                   "response_time_ms": 18.75, "success": true}),
            json!({"correlation_id": "req-77", "component": "api_middleware"}),
            correlation,
        ),
        // publish_event_with_sourcing: the sourcing fields in the metadata.
        _ => {
            let cause = format!("cmd-{n}");
            sourcing = Some((format!("opp-{}", n % 7), (n / 8 + 1) as u64, cause.clone()));
            (
                "EventType.OPPORTUNITY_UPDATED",
                "opportunity.updated",
                Some("opportunity_id"),
                "opportunity_service",
                json!({"opportunity_id": format!("opp-{}", n % 7), "changes": {"title": "New title"},
                       "updated_by": "user-456", "change_count": 1}),
                json!({"aggregate_id": format!("opp-{}", n % 7), "aggregate_type": "opportunity",
                       "aggregate_version": n / 8 + 1, "causation_id": cause, "command_id": cause,
                       "version": "1.0"}),
                correlation,
            )
        }
    };
    let event = PythonEvent {
        id: uuid4(rng),
        event_type: type_name.to_string(),
        payload,
        timestamp: isoformat(at),
        source: source.to_string(),
        correlation_id: correlation,
        metadata,
    };
    let partition_key = key_field.map(|f| event.payload[f].clone());
    let key = partition_key
        .as_ref()
        .and_then(Json::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| event.id.clone());
    Made {
        type_name: type_name.to_string(),
        key,
        value: python_json(&event).into_bytes(),
        id: event.id.clone(),
        expected: Some(expected(&event, dotted, partition_key, sourcing)),
    }
}

/// What the bus must hold for `event`.
fn expected(
    event: &PythonEvent,
    dotted: &str,
    partition_key: Option<Json>,
    sourcing: Option<(String, u64, String)>,
) -> Json {
    let mut metadata = event.metadata.clone();
    let (mut aggregate_id, mut aggregate_type, mut aggregate_version, mut causation) =
        (Json::Null, Json::Null, Json::Null, Json::Null);
    if let Some((id, version, cause)) = sourcing {
        if let Some(m) = metadata.as_object_mut() {
            for moved in [
                "aggregate_id",
                "aggregate_type",
                "aggregate_version",
                "causation_id",
                "version",
            ] {
                m.remove(moved);
            }
        }
        aggregate_id = json!(id);
        aggregate_type = json!("opportunity");
        aggregate_version = json!(version);
        causation = json!(cause);
    }
    let at = event_core::timestamp::parse(&event.timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    json!({
        "id": event.id,
        "event_type": dotted,
        "payload": event.payload,
        "timestamp": event_core::timestamp::format(at),
        "source": event.source,
        "correlation_id": event.correlation_id,
        "causation_id": causation,
        "metadata": metadata,
        "aggregate_id": aggregate_id,
        "aggregate_type": aggregate_type,
        "aggregate_version": aggregate_version,
        "partition_key": partition_key.unwrap_or(Json::Null),
    })
}

/// Records that cannot be imported: one not JSON, one failing its schema, two of a type that
/// is not known. Their type names and records.
pub(crate) fn bad(rng: &mut fastrand::Rng) -> Vec<Made> {
    let now = isoformat(OffsetDateTime::now_utc() - time::Duration::seconds(30));
    let mut made = Vec::new();
    let id = uuid4(rng);
    made.push(Made {
        type_name: "EventType.AGENT_STARTED".into(),
        key: "agent-1".into(),
        value: b"{'id': 'agent-1', not json".to_vec(),
        id,
        expected: None,
    });
    for (type_name, payload) in [
        (
            "EventType.USER_REGISTERED",
            json!({"user_id": "user-x", "username": "no-email"}),
        ),
        ("EventType.BILLING_PAID", json!({"invoice": 1})),
        ("EventType.BILLING_PAID", json!({"invoice": 2})),
    ] {
        let event = PythonEvent {
            id: uuid4(rng),
            event_type: type_name.into(),
            payload,
            timestamp: now.clone(),
            source: "svc".into(),
            correlation_id: None,
            metadata: json!({}),
        };
        made.push(Made {
            type_name: type_name.into(),
            key: event.id.clone(),
            value: python_json(&event).into_bytes(),
            id: event.id.clone(),
            expected: None,
        });
    }
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
