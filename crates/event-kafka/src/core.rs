//! What every part of the Kafka backend shares: [`Inner`] (the configuration, the data and
//! control planes, the topics, the bus's lifecycle and consumer loops, the handlers
//! subscribed here). The bottom of the crate's bus: it imports none of the modules that use
//! it.

use std::sync::Arc;

use event_core::backend::{Lifecycle, LocalHandlers};
use event_core::{Config, Error, JsonCodec};
use rskafka::record::Record;

use crate::accumulator::Accumulator;
use crate::config::KafkaConfig;
use crate::control::ControlClient;
use crate::data::DataPlane;
use crate::topics::Topics;

/// A produce request carries records of about this many bytes at most. Brokers refuse batches
/// over `message.max.bytes` (1 MiB by default), but the real limit is lower: rskafka 0.6 sets no
/// `TCP_NODELAY` and writes a request's length and body in two writes, so a request larger than
/// one segment (about 64 KiB on loopback) waits for the broker's delayed ACK, about 40 ms.
/// Requests under 48 KiB never do: batches of 1,000 went from 21,000 to 224,000 events/s.
const PRODUCE_CHUNK_BYTES: usize = 48 * 1024;

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// The Kafka settings.
    pub(crate) kafka: KafkaConfig,
    pub(crate) codec: JsonCodec,
    pub(crate) plane: Arc<DataPlane>,
    pub(crate) control: ControlClient,
    pub(crate) topics: Topics,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// The handlers subscribed here; the `sources` of each are its event types.
    pub(crate) handlers: LocalHandlers,
    /// One subscribe at a time: joining or starting a group is not split by another.
    pub(crate) subscribing: tokio::sync::Mutex<()>,
    /// Single publishes waiting for a partition's request under way.
    pub(crate) accumulator: Accumulator,
}

impl Inner {
    pub(crate) fn group(&self, handler: &str) -> String {
        format!("{}.{handler}", self.config.consumer_group)
    }

    /// Appends records to one partition, in chunks a broker accepts ([`chunked`]); the offset
    /// of each. Stops at the first chunk that fails: the later ones are not sent.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Vec<i64>, Error> {
        let mut offsets = Vec::with_capacity(records.len());
        for chunk in chunked(records, Record::approximate_size) {
            offsets.extend(self.plane.produce(topic, partition, chunk).await?);
        }
        Ok(offsets)
    }
}

/// Splits `items` in order into the chunks of one produce request each: under
/// [`PRODUCE_CHUNK_BYTES`] by `size`, a larger item alone.
pub(crate) fn chunked<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        if !chunk.is_empty() && bytes + item_bytes > PRODUCE_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += item_bytes;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}
