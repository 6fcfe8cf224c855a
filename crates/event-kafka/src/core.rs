//! What every part of the Kafka backend shares: [`Inner`] (the configuration, the data and
//! control planes, the topics, the bus's lifecycle and consumer loops, the handlers
//! subscribed here). The bottom of the crate's bus: it imports none of the modules that use
//! it.

use std::sync::Arc;

use event_core::backend::{Lifecycle, LocalHandlers};
use event_core::{Config, Error, JsonCodec};
use rskafka::record::Record;

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
}

impl Inner {
    pub(crate) fn group(&self, handler: &str) -> String {
        format!("{}.{handler}", self.config.consumer_group)
    }

    /// Appends records to one partition, in chunks a broker accepts; the offset of each.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Vec<i64>, Error> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for r in records {
            let size = r.approximate_size();
            if !chunk.is_empty() && bytes + size > PRODUCE_CHUNK_BYTES {
                offsets.extend(
                    self.plane
                        .produce(topic, partition, std::mem::take(&mut chunk))
                        .await?,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push(r);
        }
        if !chunk.is_empty() {
            offsets.extend(self.plane.produce(topic, partition, chunk).await?);
        }
        Ok(offsets)
    }
}
