//! The Kafka control-plane client on the `kafka-protocol` crate: what `rskafka` cannot do.
//! Topics with their configs (CreateTopics, DescribeConfigs), cluster metadata, offsets by
//! time (ListOffsets), consumer-group offsets (FindCoordinator, OffsetCommit, OffsetFetch) and
//! group listings (ListGroups, DescribeGroups).
//!
//! - `connection`: one broker connection (TCP or TLS, framing, correlation ids, negotiation,
//!   SASL on open), one request at a time;
//! - `versions`: the requests this client sends and the ApiVersions negotiation;
//! - `sasl`, `security`: credentials and TLS;
//! - `cluster`, `offsets`, `groups`, `membership`: the calls, as `impl ControlClient` blocks.
//!
//! The client keeps one connection for requests any broker can answer and one per broker id
//! for partition leaders and group coordinators, opened when first needed. Every call is
//! bounded by the client's timeout. Errors become [`event_core::Error::Backend`] with
//! `transient` set for connection problems, timeouts and Kafka's retriable error codes; a
//! request that reached the wrong broker (leadership or a coordinator moving) is retried by
//! the client itself after refreshing what it knows, within the same deadline.
//!
//! Consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, in `membership`) go through
//! `ControlClient::coordinator_call`, which finds the group's coordinator, follows it when it
//! moves, and retries when it is loading.

#![allow(
    dead_code,
    unused_imports,
    reason = "the Kafka bus uses the client as it grows; parts serve the consumer-group issue"
)]
#![allow(
    unreachable_pub,
    reason = "the security settings are public types of the crate (`KafkaSasl`, `KafkaTls`); test binaries that compile this module themselves cannot reach them"
)]

mod cluster;
mod connection;
mod error;
mod groups;
mod membership;
mod offsets;
mod sasl;
mod security;
mod versions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use event_core::{ConfigError, Error};
use kafka_protocol::protocol::StrBytes;

pub(crate) use cluster::{
    BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicCreation, TopicMetadata, TopicSpec,
};
pub(crate) use error::KafkaCode;
pub(crate) use groups::{GroupDescription, GroupListing, GroupMember};
pub(crate) use membership::{CONSUMER_PROTOCOL_TYPE, JoinOutcome, JoinedMember, MembershipError};
pub(crate) use offsets::OffsetSpec;
pub(crate) use security::Security;
pub use security::{KafkaSasl, KafkaSaslMechanism, KafkaTls};

use connection::{BrokerConnection, ConnectSettings, Deadline, split_host_port};
use error::{ControlError, FailureKind};
use versions::{ApiRequest, ApiVersionTable};

/// The timeout of every call when [`ControlClient::connect`] is given none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client id brokers see in their request logs and quotas.
const CLIENT_ID: &str = "eventbus-control";

/// The first and the longest pause between attempts of a request that reached the wrong
/// broker or a loading coordinator.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// The Kafka control-plane client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub(crate) struct ControlClient {
    shared: Arc<Shared>,
}

struct Shared {
    bootstrap: Vec<String>,
    settings: ConnectSettings,
    timeout: Duration,
    routes: Mutex<Routes>,
    slots: Mutex<HashMap<Node, Slot>>,
}

/// A connection slot: empty until needed, emptied when its connection fails.
type Slot = Arc<tokio::sync::Mutex<Option<BrokerConnection>>>;

/// What the client learned about the cluster: where brokers are, which is the controller,
/// which broker coordinates which group.
#[derive(Default)]
struct Routes {
    brokers: HashMap<i32, String>,
    controller: Option<i32>,
    coordinators: HashMap<String, i32>,
    versions: Option<ApiVersionTable>,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    /// Any broker: metadata, topic administration, coordinator lookups.
    Any,
    /// One broker by id: a partition leader, a group coordinator.
    Broker(i32),
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Any => f.write_str("any Kafka broker"),
            Node::Broker(id) => write!(f, "Kafka broker {id}"),
        }
    }
}

impl ControlClient {
    /// Connects to the first reachable bootstrap server, negotiates API versions,
    /// authenticates, and reads the cluster's brokers.
    ///
    /// `timeout` bounds this and every later call (zero: [`DEFAULT_TIMEOUT`]).
    ///
    /// # Errors
    /// A configuration error for an empty or malformed server list or unreadable TLS files;
    /// a transient backend error when no server answers; a permanent one when a server
    /// refuses the credentials or its certificate is not trusted.
    pub(crate) async fn connect(
        bootstrap_servers: &[String],
        security: &Security,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let bootstrap: Vec<String> = bootstrap_servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let problem = |why: String| {
            Error::Config(ConfigError::single(
                "KAFKA_BOOTSTRAP_SERVERS",
                bootstrap_servers.join(","),
                format!("a comma-separated list of host:port ({why})"),
            ))
        };
        if bootstrap.is_empty() {
            return Err(problem("it is empty".into()));
        }
        for server in &bootstrap {
            split_host_port(server).map_err(problem)?;
        }
        let tls = security
            .tls
            .as_ref()
            .map(KafkaTls::client_config)
            .transpose()?;
        let timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        let client = ControlClient {
            shared: Arc::new(Shared {
                bootstrap,
                settings: ConnectSettings {
                    client_id: StrBytes::from_static_str(CLIENT_ID),
                    tls,
                    sasl: security.sasl.clone(),
                },
                timeout,
                routes: Mutex::new(Routes::default()),
                slots: Mutex::new(HashMap::new()),
            }),
        };
        // The first connection checks the servers, the security settings and the versions;
        // metadata without topics gives the brokers' addresses.
        let deadline = client.deadline();
        client.fetch_metadata(Some(&[]), &deadline).await?;
        Ok(client)
    }

    /// The timeout of each call.
    pub(crate) fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The version of each API this client would send to the broker it last opened a
    /// connection to (`None`: not usable there), for health pages and logs.
    pub(crate) fn negotiated_versions(&self) -> Vec<(&'static str, Option<i16>)> {
        self.routes()
            .versions
            .as_ref()
            .map(ApiVersionTable::negotiated)
            .unwrap_or_default()
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.shared.timeout)
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // The routes are plain maps, consistent after every statement: a panic elsewhere
        // cannot leave them half-updated.
        self.shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, node: Node) -> Slot {
        let mut slots = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(node).or_default())
    }

    /// Sends a request to `node` and returns the version it was sent at with the response.
    /// `build` makes the request for the version negotiated with that broker.
    ///
    /// A connection that fails is dropped; a reused one that fails on I/O (brokers close idle
    /// connections after `connections.max.idle.ms`) gets one fresh connection and a second
    /// try.
    async fn call<R: ApiRequest>(
        &self,
        node: Node,
        deadline: &Deadline,
        build: impl Fn(i16) -> R,
    ) -> Result<(i16, R::Response), ControlError> {
        let slot = self.slot(node);
        let mut guard = deadline
            .bound(|| format!("waiting for the connection to {node}"), async {
                Ok(slot.lock().await)
            })
            .await?;
        let mut retried = false;
        loop {
            let reused = guard.as_ref().is_some_and(|c| !c.needs_renewal());
            if !reused {
                *guard = None;
                let connection = self.open(node, deadline).await?;
                self.routes().versions = Some(connection.versions().clone());
                *guard = Some(connection);
            }
            let Some(connection) = guard.as_mut() else {
                continue;
            };
            let version = connection.version::<R>()?;
            let request = build(version);
            match connection.send(&request, version, deadline).await {
                Ok(response) => return Ok((version, response)),
                Err(e) => {
                    // After a failed exchange the stream's position is unknown.
                    *guard = None;
                    if reused && !retried && e.kind == FailureKind::Io {
                        tracing::debug!(error = %e, "reconnecting a stale Kafka control connection");
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Opens a connection for `node`.
    async fn open(
        &self,
        node: Node,
        deadline: &Deadline,
    ) -> Result<BrokerConnection, ControlError> {
        let settings = &self.shared.settings;
        match node {
            Node::Broker(id) => {
                let known = self.routes().brokers.get(&id).cloned();
                let address = match known {
                    Some(address) => address,
                    None => {
                        // Boxed: metadata goes through `call`, which may open connections.
                        Box::pin(self.fetch_metadata(Some(&[]), deadline)).await?;
                        self.routes().brokers.get(&id).cloned().ok_or_else(|| {
                            ControlError::new(
                                FailureKind::Kafka(KafkaCode::LEADER_NOT_AVAILABLE),
                                format!("broker {id} is not in the Kafka cluster's metadata"),
                            )
                        })?
                    }
                };
                let opened = BrokerConnection::open(&address, settings, deadline).await;
                if opened.as_ref().is_err_and(|e| e.kind == FailureKind::Io) {
                    // The broker may have moved: look it up again next time.
                    self.routes().brokers.remove(&id);
                }
                opened
            }
            Node::Any => {
                // The brokers of the cluster as last seen, then the bootstrap servers.
                let mut candidates: Vec<String> = {
                    let routes = self.routes();
                    let mut known: Vec<(i32, String)> = routes
                        .brokers
                        .iter()
                        .map(|(id, address)| (*id, address.clone()))
                        .collect();
                    known.sort();
                    known.into_iter().map(|(_, address)| address).collect()
                };
                for server in &self.shared.bootstrap {
                    if !candidates.contains(server) {
                        candidates.push(server.clone());
                    }
                }
                let mut failures = Vec::new();
                for address in &candidates {
                    match BrokerConnection::open(address, settings, deadline).await {
                        Ok(connection) => return Ok(connection),
                        // Unreachable: try the next one. Anything else (refused credentials,
                        // an untrusted certificate, the deadline) would fail on all of them.
                        Err(e) if e.kind == FailureKind::Io => failures.push(e.message),
                        Err(e) => return Err(e),
                    }
                }
                Err(ControlError::new(
                    FailureKind::Io,
                    format!(
                        "no Kafka broker could be reached ({}); check KAFKA_BOOTSTRAP_SERVERS and that the brokers run",
                        failures.join("; ")
                    ),
                ))
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails with something other than a routing error or
    /// an unreachable broker, or the deadline leaves no time for another try. A broker that
    /// cannot be reached may have died: the cluster fences it within its session and moves
    /// its leaderships and groups, and the next attempt's metadata or coordinator lookup
    /// finds the new ones.
    ///
    /// `attempt` is a closure returning a future rather than an async closure: the futures of
    /// async closures are not provably `Send` (rust-lang/rust#110338), and the bus runs these
    /// calls in spawned tasks.
    async fn retrying<T, Fut>(
        &self,
        deadline: &Deadline,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, ControlError>
    where
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
        let mut pause = FIRST_PAUSE;
        loop {
            match attempt().await {
                Err(e)
                    if (e.is_routing() || e.kind == FailureKind::Io)
                        && deadline.remaining() > pause =>
                {
                    tracing::debug!(error = %e, ?pause, "Kafka control request retried");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                result => return result,
            }
        }
    }

    /// Sends a request to `group`'s coordinator and hands the response to `handle`; finds the
    /// coordinator first, and again when it moved or was unreachable.
    async fn coordinator_call<R: ApiRequest, T>(
        &self,
        group: &str,
        deadline: &Deadline,
        build: impl Fn(i16) -> R,
        handle: impl Fn(i16, R::Response) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let (build, handle) = (&build, &handle);
        self.retrying(deadline, move || async move {
            let coordinator = self.coordinator(group, deadline).await?;
            let result = match self.call(Node::Broker(coordinator), deadline, build).await {
                Ok((version, response)) => handle(version, response),
                Err(e) => Err(e),
            };
            if let Err(e) = &result
                && (e.is_routing() || e.kind == FailureKind::Io)
            {
                self.routes().coordinators.remove(group);
            }
            result
        })
        .await
    }
}

/// A topic or group name for a request.
fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}
