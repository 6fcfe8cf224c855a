//! [`ChaosBackend`]: what a backend's chaos test target supplies (buses, its faults, foreign
//! input), and [`Fault`], the fault classes a run draws from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Config, EventBus, EventType};
use serde::{Deserialize, Serialize};

/// A fault class. The runner injects the process faults itself; the backend's target injects
/// the others ([`ChaosBackend::inject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Fault {
    /// A consumer process of the shared handler killed with SIGKILL; a new one starts a
    /// moment later.
    KillConsumerProcess,
    /// A consumer process stopped with SIGSTOP for longer than the takeover time (claim idle
    /// time, session timeout), then continued with SIGCONT.
    PauseConsumerProcess,
    /// A handler's consumer loop panics once (`event_core::fault::panic_loop_once`); the bus
    /// must restart it.
    PanicLoopOnce,
    /// Every client connection of the server killed (`CLIENT KILL TYPE normal`).
    ClientKill,
    /// The TCP proxy between the buses and the server closes every connection.
    ProxyDrop,
    /// The TCP proxy stops forwarding for a few seconds (longer than the command timeout),
    /// then goes on.
    ProxyStall,
    /// The server (`redis-server`, the Kafka broker) killed with SIGKILL and restarted on the
    /// same port and data.
    ServerRestart,
}

impl Fault {
    /// Whether the runner injects it (on the consumer processes or inside a bus) rather than
    /// the backend's target.
    pub fn is_runners(self) -> bool {
        matches!(
            self,
            Fault::KillConsumerProcess | Fault::PauseConsumerProcess | Fault::PanicLoopOnce
        )
    }

    /// Whether it can make events be delivered again (an acknowledgement lost, a consumer's
    /// unacknowledged events taken over), so duplicates are allowed after it.
    pub fn may_redeliver(self) -> bool {
        true
    }

    /// Whether it touches every handler (a server or connection fault) rather than the
    /// shared handler's consumer processes or one handler's loop.
    pub fn touches_every_handler(self) -> bool {
        !matches!(
            self,
            Fault::KillConsumerProcess | Fault::PauseConsumerProcess | Fault::PanicLoopOnce
        )
    }
}

/// A foreign entry a backend wrote into an event log: not an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignEntry {
    /// ASCII text the entry carries, which the raw text of its dead letter shows.
    pub marker: String,
    /// What is odd about it (`no event field`, `binary field name`, `tombstone`...).
    pub shape: String,
    /// Written in a transaction that was aborted: no consumer may ever see it, so it must
    /// not be in any dead letters (rather than in every handler's, once).
    #[serde(default)]
    pub aborted: bool,
}

impl ForeignEntry {
    /// An entry every handler of its type must dead-letter once.
    pub fn new(marker: impl Into<String>, shape: impl Into<String>) -> Self {
        Self {
            marker: marker.into(),
            shape: shape.into(),
            aborted: false,
        }
    }

    /// An entry of an aborted transaction, which no handler may see.
    pub fn aborted(marker: impl Into<String>, shape: impl Into<String>) -> Self {
        Self {
            aborted: true,
            ..Self::new(marker, shape)
        }
    }
}

/// What a backend's chaos target can do besides making buses.
#[derive(Clone, Debug)]
pub struct Abilities {
    /// The fault classes to draw from (process faults only with `consumer_processes`).
    pub faults: Vec<Fault>,
    /// Consumer processes (this test binary run again) can share a handler's group.
    pub consumer_processes: bool,
    /// A second bus in the test process can share a handler's group.
    pub second_instance: bool,
    /// Per-key order holds within one consumer even when it takes over another consumer's
    /// unacknowledged events (Kafka: a key lives in one partition). Where it does not
    /// (Redis: any consumer reads any entry), order is checked only for handlers with a
    /// single consumer.
    pub order_survives_takeover: bool,
    /// A consumer joining or leaving a shared group redelivers the group's unacknowledged
    /// events (a Kafka rebalance), so duplicates are allowed after each membership change.
    pub rebalance_redelivers: bool,
    /// How long a stopped consumer's events wait before another consumer takes them over
    /// (`EVENT_CLAIM_IDLE_MS`, the Kafka session timeout).
    pub takeover_after: Duration,
    /// How long a deliberately slow handler call takes (past `takeover_after`).
    pub slow_call: Duration,
    /// Events per second the publishers aim at during the run.
    pub events_per_second: u32,
    /// The run's length when `EVENTBUS_CHAOS_SECONDS` is unset.
    pub default_seconds: u64,
    /// How long to wait for quiescence after the run before the checks.
    pub quiescence_deadline: Duration,
}

/// A backend under chaos: implemented by each backend's chaos test target.
#[async_trait]
pub trait ChaosBackend: Send + Sync + 'static {
    /// The backend's name (`memory`, `redis`, `kafka`).
    fn name(&self) -> &'static str;

    /// The package and test target that run it, for the replay hint
    /// (`("event-redis", "chaos")`).
    fn test_target(&self) -> (&'static str, &'static str);

    /// The configuration every bus of the run starts from: server addresses, a key or topic
    /// prefix and a consumer group no other run uses, short claim and session timeouts.
    fn base_config(&self) -> Config;

    /// A new bus with this configuration.
    ///
    /// # Errors
    /// Whatever stops the bus from starting.
    async fn connect(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>>;

    /// The backend's own variables (server addresses, prefixes) that a consumer process needs
    /// beside the shared configuration: handed to [`child_main`](super::child_main)'s
    /// `connect`. None by default.
    fn child_variables(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// What the target can do.
    fn abilities(&self) -> Abilities;

    /// Injects one of its faults (`seed` is the fault's own random number) and returns once
    /// the fault is over (server back, proxy forwarding), with what it did in words.
    ///
    /// # Errors
    /// When the fault cannot be injected or healed; the run then fails.
    async fn inject(&self, fault: Fault, seed: u64) -> anyhow::Result<String> {
        let _ = seed;
        anyhow::bail!("the {} target cannot inject {fault:?}", self.name())
    }

    /// Writes a few foreign entries (not envelopes: missing, extra, binary fields...) into
    /// the log of `event_type`, each carrying `marker` plus a suffix of its own.
    ///
    /// # Errors
    /// When the server refuses the writes.
    async fn write_foreign(
        &self,
        event_type: &EventType,
        marker: &str,
    ) -> anyhow::Result<Vec<ForeignEntry>> {
        let _ = (event_type, marker);
        Ok(Vec::new())
    }

    /// Removes what the run left on shared servers (best effort).
    async fn cleanup(&self) {}
}
