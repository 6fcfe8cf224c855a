//! The data path on `rskafka`: produce to and fetch from one partition, offsets by position or
//! time, and the partition count of a topic.
//!
//! rskafka 0.6 has no request timeouts and, by default, retries forever, so [`DataPlane`]
//! bounds both: its backoff has a deadline and every call runs under [`tokio::time::timeout`].
//! It keeps `PartitionClient`s (each a connection to the partition's leader), built on first
//! use and dropped when an error says the connection or the leader is wrong, so the next call
//! starts afresh: one set for producing and one for fetching, and one more per [`Reader`],
//! because a broker answers one connection's requests in order and a long-polling fetch would
//! hold back whatever follows it ([`connections`]). There is no stream consumer here:
//! rskafka's ends on its first error, so the bus runs its own fetch loop over
//! [`Reader::fetch`].

mod connections;
mod error;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use event_core::Error;
use rskafka::BackoffConfig;
use rskafka::chrono::DateTime;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{self, PartitionClient};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset, UndecodableRecords};

use self::connections::PartitionClients;
use self::error::{backend_error, timeout_error};
use crate::config::{Compression, KafkaConfig};

/// How long one call may take (a fetch gets its `max_wait` on top).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client id brokers see in their logs and quotas.
const CLIENT_ID: &str = "eventbus";

/// Where to look up an offset, for [`DataPlane::offset_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OffsetAt {
    /// The first offset still kept (after retention trimmed older records).
    Earliest,
    /// The high watermark: the offset the next record produced will get.
    Latest,
    /// The first record whose timestamp is at or after these Unix milliseconds; the high
    /// watermark when there is none.
    Timestamp(i64),
}

/// The answer to a [`DataPlane::fetch`].
#[derive(Debug)]
pub(crate) enum Fetched {
    /// Records from the requested offset on, in offset order (empty when none arrived within
    /// `max_wait`), what could not be decoded, the partition's high watermark and where to
    /// fetch next.
    Records {
        /// The records with their offsets (none of aborted transactions: the isolation level
        /// is `read_committed`).
        records: Vec<RecordAndOffset>,
        /// Data that could not be decoded into records: a record whose timestamp is out of
        /// range, or a corrupt batch, each with the offsets it covers.
        undecodable: Vec<UndecodableRecords>,
        /// The offset after the last record committed to the partition.
        high_watermark: i64,
        /// Below this offset every transaction is decided (`None` from a broker that does
        /// not say).
        last_stable_offset: Option<i64>,
        /// The offset to fetch next: past every batch the broker sent, also those that hold
        /// no record for us (transaction markers, aborted transactions, batches compaction
        /// emptied); the requested offset when the broker sent nothing.
        next_offset: i64,
    },
    /// The offset is not in the partition: retention trimmed it, or it is past the end (the
    /// topic was deleted and created again). The caller picks a new position, usually
    /// [`OffsetAt::Earliest`], as the Java consumer's `auto.offset.reset` does.
    OffsetOutOfRange,
}

/// Produce and fetch on a Kafka cluster through one rskafka client.
pub(crate) struct DataPlane {
    client: Client,
    compression: partition::Compression,
    timeout: Duration,
    /// `KAFKA_BOOTSTRAP_SERVERS`, for messages.
    servers: String,
    /// Connections for produce and ListOffsets.
    writers: PartitionClients,
    /// Connections for [`DataPlane::fetch`], shared by its callers.
    readers: PartitionClients,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("servers", &self.servers)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Connects to `KAFKA_BOOTSTRAP_SERVERS` with `KAFKA_COMPRESSION` and the default timeout.
    ///
    /// # Errors
    /// A transient backend error when no broker answers in time.
    pub(crate) async fn connect(config: &KafkaConfig) -> Result<Self, Error> {
        Self::connect_with_timeout(config, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with another limit on each call.
    pub(crate) async fn connect_with_timeout(
        config: &KafkaConfig,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let compression = compression(config.compression);
        let servers = config.bootstrap_servers.join(",");
        let security = config.security();
        let mut builder = ClientBuilder::new(config.bootstrap_servers.clone())
            .client_id(CLIENT_ID)
            .backoff_config(backoff(timeout));
        // The same rustls configuration as the control plane's, from the same files.
        if let Some(tls) = &security.tls {
            builder = builder.tls_config(tls.client_config()?);
        }
        if let Some(sasl) = security.rskafka_sasl() {
            builder = builder.sasl_config(sasl);
        }
        let context = format!("connecting to Kafka at {servers} ({})", security.describe());
        let client = match tokio::time::timeout(timeout, builder.build()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                let (error, _) = backend_error(
                    &format!(
                        "{context} (is the broker running and KAFKA_BOOTSTRAP_SERVERS right?)"
                    ),
                    e,
                );
                return Err(error);
            }
            Err(_) => return Err(timeout_error(&context, timeout, &servers)),
        };
        Ok(Self {
            client,
            compression,
            timeout,
            servers,
            writers: PartitionClients::default(),
            readers: PartitionClients::default(),
        })
    }

    /// A reader with connections of its own, for one consumer loop: its long polls hold back
    /// no other reader's fetches.
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        Reader {
            plane: Arc::clone(self),
            clients: PartitionClients::default(),
        }
    }

    /// The number of partitions of `topic`, from fresh metadata; `None` when it does not exist.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the tests' topic set-up uses it")
    )]
    pub(crate) async fn partitions(&self, topic: &str) -> Result<Option<i32>, Error> {
        let context = format!("reading the metadata of topic {topic}");
        let topics = match tokio::time::timeout(self.timeout, self.client.list_topics()).await {
            Ok(Ok(topics)) => topics,
            Ok(Err(e)) => return Err(backend_error(&context, e).0),
            Err(_) => return Err(timeout_error(&context, self.timeout, &self.servers)),
        };
        Ok(topics
            .into_iter()
            .find(|t| t.name == topic)
            // A topic has at most a few thousand partitions.
            .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX)))
    }

    /// Appends `records` to a partition in one request (`acks=all`, `KAFKA_COMPRESSION`) and
    /// returns their offsets, in order.
    ///
    /// Not idempotent: when the connection drops after the broker wrote the batch, rskafka's
    /// retry (or the caller's) writes it again, so consumers may see duplicates.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Vec<i64>, Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let compression = self.compression;
        self.call(
            &self.writers,
            "produce to",
            topic,
            partition,
            Duration::ZERO,
            |client| async move { client.produce(records, compression).await },
        )
        .await
    }

    /// Reads records from `offset` on, up to about `max_bytes` (at least one record batch, so a
    /// large record never blocks progress), waiting up to `max_wait` for the first byte when
    /// there is nothing to read yet.
    ///
    /// Calls through the data plane share one connection per partition and so wait for each
    /// other's long polls; a consumer loop fetches through a [`Reader`] of its own.
    pub(crate) async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched, Error> {
        self.fetch_on(&self.readers, topic, partition, offset, max_bytes, max_wait)
            .await
    }

    /// The offset at a position or time in a partition (ListOffsets).
    pub(crate) async fn offset_at(
        &self,
        topic: &str,
        partition: i32,
        at: OffsetAt,
    ) -> Result<i64, Error> {
        let query = match at {
            OffsetAt::Earliest => partition::OffsetAt::Earliest,
            OffsetAt::Latest => partition::OffsetAt::Latest,
            OffsetAt::Timestamp(millis) => {
                let Some(time) = DateTime::from_timestamp_millis(millis) else {
                    return Err(Error::InvalidArgument(format!(
                        "timestamp {millis} ms is outside the range of dates Kafka can look up"
                    )));
                };
                partition::OffsetAt::Timestamp(time)
            }
        };
        let offset = self
            .call(
                &self.writers,
                "list offsets of",
                topic,
                partition,
                Duration::ZERO,
                |client| async move { client.get_offset(query).await },
            )
            .await?;
        // Kafka answers -1 when no record is at or after the time: reading from there means
        // reading what comes next, from the high watermark.
        if offset < 0 && matches!(at, OffsetAt::Timestamp(_)) {
            return Box::pin(self.offset_at(topic, partition, OffsetAt::Latest)).await;
        }
        Ok(offset)
    }

    /// Creates a topic with the broker's default configs and waits until the metadata shows it,
    /// for tests; the bus creates its topics with their configs through the control-plane
    /// client.
    #[cfg(test)]
    pub(crate) async fn create_topic_simple(
        &self,
        topic: &str,
        partitions: i32,
        replication: i16,
    ) -> Result<(), Error> {
        let context = format!("creating topic {topic}");
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let create = async {
            self.client
                .controller_client()?
                .create_topic(topic, partitions, replication, timeout_ms)
                .await
        };
        match tokio::time::timeout(self.timeout, create).await {
            Ok(result) => result.map_err(|e| backend_error(&context, e).0)?,
            Err(_) => return Err(timeout_error(&context, self.timeout, &self.servers)),
        }
        // CreateTopics returns once the controller has the topic; the brokers' metadata
        // follows a moment later. Wait for it, so that the caller sees the topic at once.
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.partitions(topic).await? != Some(partitions) {
            if tokio::time::Instant::now() >= deadline {
                return Err(timeout_error(
                    &format!("{context}: waiting for it in the metadata"),
                    self.timeout,
                    &self.servers,
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Deletes a topic, for tests cleaning up after themselves.
    #[cfg(test)]
    pub(crate) async fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        let context = format!("deleting topic {topic}");
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let delete = async {
            self.client
                .controller_client()?
                .delete_topic(topic, timeout_ms)
                .await
        };
        match tokio::time::timeout(self.timeout, delete).await {
            Ok(result) => result.map_err(|e| backend_error(&context, e).0),
            Err(_) => Err(timeout_error(&context, self.timeout, &self.servers)),
        }
    }

    async fn fetch_on(
        &self,
        clients: &PartitionClients,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched, Error> {
        let max_wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let bytes = 1..max_bytes.max(2);
        self.call(
            clients,
            "fetch from",
            topic,
            partition,
            max_wait,
            |client| async move {
                match client.fetch(offset, bytes, max_wait_ms).await {
                    Ok(fetched) => Ok(Fetched::Records {
                        records: fetched.records,
                        undecodable: fetched.undecodable,
                        high_watermark: fetched.high_watermark,
                        last_stable_offset: fetched.last_stable_offset,
                        next_offset: fetched.next_offset,
                    }),
                    Err(ClientError::ServerError {
                        protocol_error: ProtocolError::OffsetOutOfRange,
                        ..
                    }) => Ok(Fetched::OffsetOutOfRange),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    /// Runs one call on a partition's client under the time limit (plus `extra` for a fetch's
    /// long poll), mapping errors and dropping the client when it must be rebuilt.
    async fn call<T, F, Fut>(
        &self,
        clients: &PartitionClients,
        operation: &str,
        topic: &str,
        partition: i32,
        extra: Duration,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Arc<PartitionClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let context = format!("{operation} topic {topic} partition {partition}");
        let limit = self.timeout + extra;
        let mut used = None;
        let attempt = async {
            let client = clients.get(&self.client, topic, partition).await?;
            used = Some(Arc::clone(&client));
            f(client).await
        };
        // Bound to a name, so the attempt (and its borrow of `used`) ends here.
        let outcome = tokio::time::timeout(limit, attempt).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let (error, rebuild) = backend_error(&context, e);
                if rebuild {
                    clients.forget(topic, partition, used.as_ref());
                }
                Err(error)
            }
            Err(_) => {
                // A half-open connection answers nothing: start a new one next time.
                clients.forget(topic, partition, used.as_ref());
                Err(timeout_error(&context, limit, &self.servers))
            }
        }
    }
}

/// Fetches with connections of its own (see [`connections`]); made by [`DataPlane::reader`].
#[derive(Debug)]
pub(crate) struct Reader {
    plane: Arc<DataPlane>,
    clients: PartitionClients,
}

impl Reader {
    /// [`DataPlane::fetch`] on this reader's connections.
    pub(crate) async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched, Error> {
        self.plane
            .fetch_on(&self.clients, topic, partition, offset, max_bytes, max_wait)
            .await
    }

    /// The data plane it reads from, for offsets and metadata.
    #[cfg_attr(not(test), allow(dead_code, reason = "the tests use it"))]
    pub(crate) fn plane(&self) -> &Arc<DataPlane> {
        &self.plane
    }
}

/// rskafka's retries, bounded: its default retries forever. Its deadline counts the pauses
/// only, so half the call's limit leaves the other half for the requests themselves, and the
/// caller sees rskafka's last error rather than a bare timeout.
fn backoff(timeout: Duration) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        base: 3.0,
        deadline: Some(timeout / 2),
    }
}

/// `KAFKA_COMPRESSION` as rskafka's compression.
fn compression(c: Compression) -> partition::Compression {
    match c {
        Compression::None => partition::Compression::NoCompression,
        Compression::Gzip => partition::Compression::Gzip,
        Compression::Snappy => partition::Compression::Snappy,
        Compression::Lz4 => partition::Compression::Lz4,
        Compression::Zstd => partition::Compression::Zstd,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn every_compression_maps() {
        for (ours, theirs) in [
            (Compression::None, partition::Compression::NoCompression),
            (Compression::Gzip, partition::Compression::Gzip),
            (Compression::Snappy, partition::Compression::Snappy),
            (Compression::Lz4, partition::Compression::Lz4),
            (Compression::Zstd, partition::Compression::Zstd),
        ] {
            assert_eq!(compression(ours), theirs);
        }
    }

    #[test]
    fn the_backoff_has_a_deadline_inside_the_call_limit() {
        let b = backoff(DEFAULT_TIMEOUT);
        assert!(b.deadline.is_some_and(|d| d < DEFAULT_TIMEOUT));
        assert!(b.max_backoff < DEFAULT_TIMEOUT);
    }

    /// No broker on a closed port: a transient error within the limit, naming the servers.
    #[tokio::test]
    async fn an_unreachable_broker_fails_in_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = KafkaConfig {
            bootstrap_servers: vec![format!("127.0.0.1:{port}")],
            ..KafkaConfig::default()
        };
        let limit = Duration::from_secs(2);
        let outcome =
            tokio::time::timeout(limit * 2, DataPlane::connect_with_timeout(&config, limit))
                .await
                .expect("connect must give up within its own limit");
        let err = outcome.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
