//! The bridge's consumer-group offsets, kept by Kafka's group coordinator in the original's
//! cluster (`__consumer_offsets`), as a Java consumer with `assign()` and `commitSync()` keeps
//! them: FindCoordinator, OffsetFetch and OffsetCommit with generation -1 and no member id (a
//! "simple" group, with no membership or rebalancing). `kafka-consumer-groups.sh --describe
//! --group NAME` shows its position and lag like any group's.
//!
//! rskafka has no group API and event-kafka's (which has one) reads only this bus's envelope
//! records, so these three requests are written here, on a plain TCP connection: the
//! original's `KafkaEventBus` had no TLS or SASL settings either.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::original_kafka::Partition;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts for a request the coordinator answers with a transient error.
const ATTEMPTS: u32 = 20;

const FIND_COORDINATOR: i16 = 10;
const OFFSET_FETCH: i16 = 9;
const OFFSET_COMMIT: i16 = 8;

/// The offsets of one consumer group, read and committed through its coordinator.
pub(crate) struct GroupOffsets {
    brokers: Vec<String>,
    group: String,
    coordinator: Option<TcpStream>,
    correlation: i32,
}

impl GroupOffsets {
    /// The group `group` of the cluster at `brokers` (comma-separated `host:port`).
    pub(crate) fn new(brokers: &str, group: &str) -> Self {
        Self {
            brokers: brokers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            group: group.to_string(),
            coordinator: None,
            correlation: 0,
        }
    }

    /// The committed offset (the next one to read) of each of `partitions` that has one.
    pub(crate) async fn fetch(
        &mut self,
        partitions: &[Partition],
    ) -> anyhow::Result<BTreeMap<Partition, i64>> {
        let mut body = Writer::default();
        body.string(&self.group);
        let by_topic = group_by_topic(partitions.iter().map(|p| (p, ())));
        body.i32(by_topic.len() as i32);
        for (topic, parts) in &by_topic {
            body.string(topic);
            body.i32(parts.len() as i32);
            for (partition, ()) in parts {
                body.i32(*partition);
            }
        }
        let response = self.request(OFFSET_FETCH, 3, &body.0).await?;
        let mut r = Reader(&response);
        r.i32()?; // throttle
        let mut offsets = BTreeMap::new();
        let mut failed = None;
        for _ in 0..r.i32()? {
            let topic = r.string()?;
            for _ in 0..r.i32()? {
                let partition = r.i32()?;
                let offset = r.i64()?;
                r.nullable_string()?;
                let error = r.i16()?;
                if error != 0 {
                    failed.get_or_insert(error);
                } else if offset >= 0 {
                    offsets.insert(
                        Partition {
                            topic: topic.clone(),
                            partition,
                        },
                        offset,
                    );
                }
            }
        }
        let top = r.i16()?;
        if let Some(error) = (top != 0).then_some(top).or(failed) {
            anyhow::bail!(
                "reading the offsets of group {}: {}",
                self.group,
                error_name(error)
            );
        }
        Ok(offsets)
    }

    /// Commits `offsets` (each the next offset to read).
    pub(crate) async fn commit(
        &mut self,
        offsets: &BTreeMap<Partition, i64>,
    ) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut body = Writer::default();
        body.string(&self.group);
        body.i32(-1); // generation: no membership
        body.string(""); // member id
        body.i64(-1); // retention: the broker's
        let by_topic = group_by_topic(offsets.iter());
        body.i32(by_topic.len() as i32);
        for (topic, parts) in &by_topic {
            body.string(topic);
            body.i32(parts.len() as i32);
            for (partition, offset) in parts {
                body.i32(*partition);
                body.i64(**offset);
                body.i16(-1); // metadata: null
            }
        }
        let response = self.request(OFFSET_COMMIT, 3, &body.0).await?;
        let mut r = Reader(&response);
        r.i32()?;
        for _ in 0..r.i32()? {
            let topic = r.string()?;
            for _ in 0..r.i32()? {
                let partition = r.i32()?;
                let error = r.i16()?;
                if error != 0 {
                    if is_coordinator_error(error) {
                        self.coordinator = None;
                    }
                    anyhow::bail!(
                        "committing the offset of {topic}/{partition} for group {}: {}{}",
                        self.group,
                        error_name(error),
                        if matches!(error, 22 | 25) {
                            " (the group has members: give the bridge a group of its own, --group)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Ok(())
    }

    /// One request to the coordinator, found first; again on a transient error.
    async fn request(&mut self, api: i16, version: i16, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)))).await;
            }
            if self.coordinator.is_none() {
                match self.find_coordinator().await {
                    Ok(stream) => self.coordinator = Some(stream),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let Some(stream) = self.coordinator.as_mut() else {
                continue;
            };
            self.correlation = self.correlation.wrapping_add(1);
            match call(stream, self.correlation, api, version, body).await {
                Ok(response) => {
                    // OffsetFetch's and OffsetCommit's first errors sit deeper; a coordinator
                    // that moved answers every partition with one, seen by the caller.
                    if let Some(error) = coordinator_error_anywhere(api, &response)
                        && is_coordinator_error(error)
                    {
                        self.coordinator = None;
                        last = Some(anyhow::anyhow!("{}", error_name(error)));
                        continue;
                    }
                    return Ok(response);
                }
                Err(e) => {
                    self.coordinator = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer"))).with_context(|| {
            format!(
                "the group coordinator of {} at {}",
                self.group,
                self.brokers.join(",")
            )
        })
    }

    /// A connection to the group's coordinator.
    async fn find_coordinator(&mut self) -> anyhow::Result<TcpStream> {
        let mut errors = Vec::new();
        for broker in self.brokers.clone() {
            let attempt = async {
                let mut stream = connect(&broker).await?;
                let mut body = Writer::default();
                body.string(&self.group);
                body.0.push(0); // key type: group
                self.correlation = self.correlation.wrapping_add(1);
                let response =
                    call(&mut stream, self.correlation, FIND_COORDINATOR, 1, &body.0).await?;
                let mut r = Reader(&response);
                r.i32()?;
                let error = r.i16()?;
                let message = r.nullable_string()?;
                anyhow::ensure!(
                    error == 0,
                    "FindCoordinator: {}{}",
                    error_name(error),
                    message.map(|m| format!(" ({m})")).unwrap_or_default()
                );
                r.i32()?;
                let host = r.string()?;
                let port = r.i32()?;
                connect(&format!("{host}:{port}")).await
            };
            match attempt.await {
                Ok(stream) => return Ok(stream),
                Err(e) => errors.push(format!("{broker}: {e:#}")),
            }
        }
        anyhow::bail!("{}", errors.join("; "))
    }
}

async fn connect(address: &str) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {address} timed out"))?
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request (header v1) and reads its response body (after the correlation id).
async fn call(
    stream: &mut TcpStream,
    correlation: i32,
    api: i16,
    version: i16,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut header = Writer::default();
        header.i16(api);
        header.i16(version);
        header.i32(correlation);
        header.string("eventbus-bridge");
        let size = (header.0.len() + body.len()) as i32;
        let mut frame = size.to_be_bytes().to_vec();
        frame.extend_from_slice(&header.0);
        frame.extend_from_slice(body);
        stream.write_all(&frame).await?;
        let size = stream.read_i32().await?;
        anyhow::ensure!(
            (4..64 * 1024 * 1024).contains(&size),
            "a response of {size} bytes"
        );
        let mut response = vec![0; size as usize];
        stream.read_exact(&mut response).await?;
        let answered = i32::from_be_bytes([response[0], response[1], response[2], response[3]]);
        anyhow::ensure!(
            answered == correlation,
            "the answer to request {answered}, not {correlation}"
        );
        response.drain(..4);
        anyhow::Ok(response)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {TIMEOUT:?}"))?
}

/// The first partition error of an OffsetFetch or OffsetCommit (v3) response, if any.
fn coordinator_error_anywhere(api: i16, response: &[u8]) -> Option<i16> {
    let mut r = Reader(response);
    r.i32().ok()?;
    for _ in 0..r.i32().ok()? {
        r.string().ok()?;
        for _ in 0..r.i32().ok()? {
            r.i32().ok()?;
            if api == OFFSET_FETCH {
                r.i64().ok()?;
                r.nullable_string().ok()?;
            }
            let error = r.i16().ok()?;
            if error != 0 {
                return Some(error);
            }
        }
    }
    if api == OFFSET_FETCH {
        return r.i16().ok().filter(|e| *e != 0);
    }
    None
}

/// The coordinator is loading, moved or gone: find it again and retry.
fn is_coordinator_error(error: i16) -> bool {
    matches!(error, 14..=16)
}

fn error_name(error: i16) -> String {
    let name = match error {
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        22 => "ILLEGAL_GENERATION",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        _ => "",
    };
    format!("Kafka error {error} {name}").trim_end().to_string()
}

fn group_by_topic<'a, T>(
    items: impl Iterator<Item = (&'a Partition, T)>,
) -> BTreeMap<&'a str, Vec<(i32, T)>> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, T)>> = BTreeMap::new();
    for (p, value) in items {
        by_topic
            .entry(p.topic.as_str())
            .or_default()
            .push((p.partition, value));
    }
    by_topic
}

/// Kafka's big-endian encoding.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn string(&mut self, s: &str) {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        anyhow::ensure!(self.0.len() >= N, "a response shorter than its fields");
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into()?)
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> anyhow::Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn nullable_string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        anyhow::ensure!(self.0.len() >= len, "a response shorter than its fields");
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }
    fn string(&mut self) -> anyhow::Result<String> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }
}
