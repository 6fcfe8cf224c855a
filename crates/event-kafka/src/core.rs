//! What every part of the Kafka backend shares: [`Inner`] (the configuration, the data and
//! control planes, the topics, the bus's lifecycle and consumer loops, the handlers
//! subscribed here). The bottom of the crate's bus: it imports none of the modules that use
//! it.

use std::sync::Arc;

use event_core::backend::{Lifecycle, LocalHandlers};
use event_core::{Config, Error, JsonCodec};
use rskafka::record::Record;

use crate::accumulator::{Accumulator, chunked};
use crate::config::KafkaConfig;
use crate::control::ControlClient;
use crate::data::DataPlane;
use crate::topics::Topics;

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
