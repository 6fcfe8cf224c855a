//! A minimal Kafka admin connection for doctor: one plaintext TCP connection to a bootstrap
//! server, one request at a time (ApiVersions, Metadata, DescribeConfigs) on `kafka-protocol`.
//!
//! `event-kafka`'s control client does this and more (TLS, SASL, routing, retries), but it is
//! internal to that crate; doctor asks only what any broker answers, and only on plaintext
//! listeners (the caller skips these checks with the reason under SASL or TLS).

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// DescribeConfigs' resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// The largest response read (a cluster's whole metadata fits many times over).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// One broker connection and the version ranges it announced.
pub(super) struct AdminConnection {
    stream: TcpStream,
    address: String,
    correlation_id: i32,
    /// API key to the broker's (min, max) versions.
    pub(super) versions: HashMap<i16, (i16, i16)>,
}

/// One partition of a topic, as the metadata describes it.
pub(super) struct PartitionFacts {
    pub(super) leader: i32,
    pub(super) replicas: usize,
    pub(super) in_sync: usize,
}

/// The cluster as one Metadata response describes it.
pub(super) struct ClusterFacts {
    pub(super) brokers: usize,
    /// Every topic (internal ones left out), by name.
    pub(super) topics: HashMap<String, Vec<PartitionFacts>>,
}

impl AdminConnection {
    /// Connects to the first of `servers` that accepts, and reads its API versions.
    pub(super) async fn connect(servers: &[String]) -> anyhow::Result<Self> {
        let mut last = None;
        for address in servers {
            match TcpStream::connect(address.as_str()).await {
                Ok(stream) => {
                    let mut connection = Self {
                        stream,
                        address: address.clone(),
                        correlation_id: 0,
                        versions: HashMap::new(),
                    };
                    let response: ApiVersionsResponse = connection
                        .call(ApiKey::ApiVersions, &ApiVersionsRequest::default(), 0)
                        .await?;
                    if response.error_code != 0 {
                        bail!(
                            "the broker at {address} answered ApiVersions with error {}",
                            response.error_code
                        );
                    }
                    connection.versions = response
                        .api_keys
                        .iter()
                        .map(|api| (api.api_key, (api.min_version, api.max_version)))
                        .collect();
                    return Ok(connection);
                }
                Err(e) => last = Some(format!("{address}: {e}")),
            }
        }
        bail!(
            "no bootstrap server accepted a connection ({})",
            last.unwrap_or_default()
        )
    }

    /// The highest version of an API both the broker and kafka-protocol implement, at least
    /// `least`.
    fn version<R: Message>(&self, key: ApiKey, least: i16) -> anyhow::Result<i16> {
        let (broker_min, broker_max) =
            self.versions.get(&(key as i16)).copied().with_context(|| {
                format!("the broker at {} does not implement {key:?}", self.address)
            })?;
        let max = broker_max.min(R::VERSIONS.max);
        if max < broker_min.max(R::VERSIONS.min).max(least) {
            bail!(
                "the broker at {} implements {key:?} v{broker_min}..=v{broker_max}, which doctor cannot speak",
                self.address
            );
        }
        Ok(max)
    }

    /// Metadata of every topic, without creating any.
    pub(super) async fn cluster(&mut self) -> anyhow::Result<ClusterFacts> {
        // v1 is the first where a null topic list means every topic.
        let version = self.version::<MetadataRequest>(ApiKey::Metadata, 1)?;
        let mut request = MetadataRequest::default();
        request.topics = None;
        request.allow_auto_topic_creation = false;
        let response: MetadataResponse = self.call(ApiKey::Metadata, &request, version).await?;
        let topics = response
            .topics
            .into_iter()
            .filter(|t| !t.is_internal)
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionFacts {
                        leader: p.leader_id.0,
                        replicas: p.replica_nodes.len(),
                        in_sync: p.isr_nodes.len(),
                    })
                    .collect();
                Some((name, partitions))
            })
            .collect();
        Ok(ClusterFacts {
            brokers: response.brokers.len(),
            topics,
        })
    }

    /// The value of `key` in each topic's configs (defaults included); topics the broker
    /// cannot describe are left out.
    pub(super) async fn topic_config(
        &mut self,
        topics: &[String],
        key: &str,
    ) -> anyhow::Result<HashMap<String, String>> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        let version = self.version::<DescribeConfigsRequest>(ApiKey::DescribeConfigs, 0)?;
        let mut request = DescribeConfigsRequest::default();
        request.resources = topics
            .iter()
            .map(|name| {
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(name.clone()))
                    .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_string())]))
            })
            .collect();
        let response: DescribeConfigsResponse = self
            .call(ApiKey::DescribeConfigs, &request, version)
            .await?;
        Ok(response
            .results
            .into_iter()
            .filter(|r| r.error_code == 0)
            .filter_map(|r| {
                let value = r
                    .configs
                    .into_iter()
                    .find(|c| c.name.as_str() == key)?
                    .value?
                    .to_string();
                Some((r.resource_name.to_string(), value))
            })
            .collect())
    }

    /// Sends one request and reads its response.
    async fn call<Q: Encodable, S: Decodable>(
        &mut self,
        key: ApiKey,
        request: &Q,
        version: i16,
    ) -> anyhow::Result<S> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("eventbus-doctor")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header.encode(&mut frame, key.request_header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = u32::try_from(frame.len() - 4)?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let address = &self.address;
        self.stream
            .write_all(&frame)
            .await
            .with_context(|| format!("sending {key:?} to {address}"))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .await
            .with_context(|| format!("reading the {key:?} response of {address}"))?;
        let size = u32::from_be_bytes(size) as usize;
        if size > MAX_RESPONSE {
            bail!("{address} answered {key:?} with {size} bytes: not a Kafka broker?");
        }
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .await
            .with_context(|| format!("reading the {key:?} response of {address}"))?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!("{address} answered another request than {key:?}");
        }
        S::decode(&mut body, version)
            .with_context(|| format!("decoding the {key:?} v{version} response of {address}"))
    }
}
