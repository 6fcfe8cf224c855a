//! The requests this client sends, the versions it can build for each, and the ApiVersions
//! negotiation: for every API, the highest version both the broker and kafka-protocol
//! implement.

use std::collections::HashMap;
use std::fmt;

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use event_core::Error;

use super::error::ControlError;
use super::{ControlClient, Node};

/// A request this client sends, tied to its response and API key.
///
/// kafka-protocol implements its own `Request` trait only with both its `client` and `broker`
/// features; this client builds with `client` alone (request encoders, response decoders), so
/// it names the pairs itself.
pub(crate) trait ApiRequest: Encodable + Message {
    /// The API key.
    const KEY: ApiKey;
    /// The API's name in Kafka's protocol guide, for messages.
    const NAME: &'static str;
    /// The oldest version this client builds the request for (at least kafka-protocol's).
    const MIN_VERSION: i16;
    /// The response.
    type Response: Decodable + Message;

    /// The versions this client can send: kafka-protocol must encode the request and decode the
    /// response at the version.
    fn client_versions() -> (i16, i16) {
        let min = Self::MIN_VERSION
            .max(Self::VERSIONS.min)
            .max(<Self::Response as Message>::VERSIONS.min);
        let max = Self::VERSIONS
            .max
            .min(<Self::Response as Message>::VERSIONS.max);
        (min, max)
    }
}

macro_rules! api_requests {
    ($($request:ident => $response:ident, $key:ident, from $min:literal;)*) => {
        $(
            impl ApiRequest for $request {
                const KEY: ApiKey = ApiKey::$key;
                const NAME: &'static str = stringify!($key);
                const MIN_VERSION: i16 = $min;
                type Response = $response;
            }
        )*

        /// Every API this client may send: name, key and its own version range.
        fn client_apis() -> Vec<(&'static str, ApiKey, (i16, i16))> {
            vec![$(($request::NAME, $request::KEY, $request::client_versions()),)*]
        }
    };
}

// The minimum versions are where the client's request building starts: Metadata v0 cannot
// ask for "all topics" with a null list, SaslHandshake v0 sends raw tokens without
// SaslAuthenticate frames.
api_requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions, from 0;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake, from 1;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate, from 0;
    MetadataRequest => MetadataResponse, Metadata, from 1;
    CreateTopicsRequest => CreateTopicsResponse, CreateTopics, from 0;
    DescribeConfigsRequest => DescribeConfigsResponse, DescribeConfigs, from 0;
    DeleteTopicsRequest => DeleteTopicsResponse, DeleteTopics, from 0;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets, from 1;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, from 0;
    OffsetCommitRequest => OffsetCommitResponse, OffsetCommit, from 0;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, from 1;
    ListGroupsRequest => ListGroupsResponse, ListGroups, from 0;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups, from 0;
    JoinGroupRequest => JoinGroupResponse, JoinGroup, from 0;
    SyncGroupRequest => SyncGroupResponse, SyncGroup, from 0;
    HeartbeatRequest => HeartbeatResponse, Heartbeat, from 0;
    LeaveGroupRequest => LeaveGroupResponse, LeaveGroup, from 0;
}

/// The version ranges one broker announced in its ApiVersions response.
#[derive(Clone, Default)]
pub(crate) struct ApiVersionTable {
    broker: HashMap<i16, (i16, i16)>,
}

impl ApiVersionTable {
    pub(crate) fn from_response(response: &ApiVersionsResponse) -> Self {
        Self {
            broker: response
                .api_keys
                .iter()
                .map(|api| (api.api_key, (api.min_version, api.max_version)))
                .collect(),
        }
    }

    /// The version to send `R` at: the highest one both sides implement.
    pub(crate) fn version<R: ApiRequest>(&self, broker: &str) -> Result<i16, ControlError> {
        negotiate(
            R::NAME,
            R::client_versions(),
            self.broker.get(&(R::KEY as i16)).copied(),
        )
        .map_err(|why| ControlError::refused(format!("the Kafka broker at {broker} {why}")))
    }

    /// The negotiated version of every API this client may send (`None`: not usable with this
    /// broker), for logs and diagnostics.
    pub(crate) fn negotiated(&self) -> Vec<(&'static str, Option<i16>)> {
        client_apis()
            .into_iter()
            .map(|(name, key, ours)| {
                let version = negotiate(name, ours, self.broker.get(&(key as i16)).copied()).ok();
                (name, version)
            })
            .collect()
    }
}

impl fmt::Debug for ApiVersionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, version) in self.negotiated() {
            map.entry(&name, &version);
        }
        map.finish()
    }
}

/// The requests of the data path (`rskafka`, patched in `patches/rskafka`) and the versions
/// it sends them at (`api_version_range` of each message there).
const DATA_PATH_APIS: [(&str, ApiKey, (i16, i16)); 4] = [
    ("Produce", ApiKey::Produce, (3, 7)),
    ("Fetch", ApiKey::Fetch, (4, 4)),
    ("ListOffsets", ApiKey::ListOffsets, (0, 3)),
    ("Metadata", ApiKey::Metadata, (0, 4)),
];

/// An API the bus sends that a broker does not speak at a version the bus can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LackingApi {
    /// The API's name in Kafka's protocol guide.
    pub(crate) name: &'static str,
    /// The versions the bus's client sends it at.
    pub(crate) client: (i16, i16),
    /// The versions the broker announced (`None`: not offered).
    pub(crate) broker: Option<(i16, i16)>,
}

impl ApiVersionTable {
    /// The APIs the bus sends that this broker lacks, on the data path and the control
    /// plane. Left out: ApiVersions and SASL, which the connection has already used, and
    /// DeleteTopics, which the bus never sends.
    pub(crate) fn lacking(&self) -> Vec<LackingApi> {
        let skipped = [
            ApiKey::ApiVersions,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
            ApiKey::DeleteTopics,
        ];
        DATA_PATH_APIS
            .into_iter()
            .chain(client_apis())
            .filter(|(_, key, _)| !skipped.contains(key))
            .filter_map(|(name, key, client)| {
                let broker = self.broker.get(&(key as i16)).copied();
                negotiate(name, client, broker).err().map(|_| LackingApi {
                    name,
                    client,
                    broker,
                })
            })
            .collect()
    }
}

impl ControlClient {
    /// The API versions broker `id` announced, on the connection to it (opened when none is).
    ///
    /// # Errors
    /// A backend error when the broker cannot be reached in time.
    pub(crate) async fn broker_versions(&self, id: i32) -> Result<ApiVersionTable, Error> {
        let deadline = self.deadline();
        let node = Node::Broker(id);
        let slot = self.slot(node);
        let mut guard = deadline
            .bound(|| format!("waiting for the connection to {node}"), async {
                Ok(slot.lock().await)
            })
            .await?;
        if let Some(connection) = guard.as_ref().filter(|c| !c.needs_renewal()) {
            return Ok(connection.versions().clone());
        }
        *guard = None;
        let connection = self.open(node, &deadline).await?;
        let versions = connection.versions().clone();
        *guard = Some(connection);
        Ok(versions)
    }
}

/// The highest version in both ranges, or why there is none.
fn negotiate(
    name: &str,
    (client_min, client_max): (i16, i16),
    broker: Option<(i16, i16)>,
) -> Result<i16, String> {
    let Some((broker_min, broker_max)) = broker else {
        return Err(format!(
            "does not offer the {name} API, which this client needs (a Kafka release too old or a proxy that filters it?)"
        ));
    };
    let version = client_max.min(broker_max);
    if version < client_min.max(broker_min) {
        return Err(format!(
            "speaks {name} versions {broker_min} to {broker_max}, this client {client_min} to {client_max}: no common version"
        ));
    }
    Ok(version)
}

/// The ApiVersions version to try first: the highest this client implements.
pub(crate) fn api_versions_first_try() -> i16 {
    ApiVersionsRequest::client_versions().1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate("Metadata", (1, 13), Some((0, 12))), Ok(12));
        assert_eq!(negotiate("Metadata", (1, 13), Some((0, 20))), Ok(13));
        assert!(
            negotiate("OffsetFetch", (1, 9), Some((10, 12)))
                .unwrap_err()
                .contains("no common version")
        );
        assert!(
            negotiate("Metadata", (1, 13), None)
                .unwrap_err()
                .contains("does not offer")
        );
    }

    #[test]
    fn client_ranges_are_capped_by_both_request_and_response() {
        // kafka-protocol 0.18 decodes OffsetCommit responses up to v10 but encodes requests
        // only up to v9: the request's range wins.
        let (min, max) = OffsetCommitRequest::client_versions();
        assert!(min <= max);
        assert!(max <= OffsetCommitRequest::VERSIONS.max);
        assert!(max <= <OffsetCommitResponse as Message>::VERSIONS.max);
        for (name, _, (min, max)) in client_apis() {
            assert!(min <= max, "{name}: {min}..{max}");
        }
        assert_eq!(SaslHandshakeRequest::client_versions().0, 1);
    }

    #[test]
    fn lacking_names_what_the_broker_does_not_speak() {
        let mut table = ApiVersionTable::default();
        for (_, key, (min, max)) in DATA_PATH_APIS.into_iter().chain(client_apis()) {
            table.broker.insert(key as i16, (min, max));
        }
        assert_eq!(table.lacking(), Vec::new());
        table.broker.insert(ApiKey::Fetch as i16, (0, 3));
        table.broker.remove(&(ApiKey::JoinGroup as i16));
        table.broker.remove(&(ApiKey::DeleteTopics as i16));
        let lacking = table.lacking();
        assert_eq!(lacking.len(), 2, "{lacking:?}");
        assert_eq!(lacking[0].name, "Fetch");
        assert_eq!(lacking[0].broker, Some((0, 3)));
        assert_eq!(lacking[1].name, "JoinGroup");
        assert_eq!(lacking[1].broker, None);
    }
}
