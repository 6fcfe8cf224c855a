//! Throwaway local servers for the integration suites: a `redis-server`, a Redis Cluster of
//! three masters with a replica each, a single-node Apache Kafka broker (KRaft) and a
//! three-node Kafka cluster, and a PostgreSQL server ([`postgres`]), each on free loopback ports with its data in a fresh directory,
//! with no Docker needed; Chromium with chromedriver for the browser tests ([`browser`]); and
//! `promtool` for the alerting rules ([`promtool`]); libfaketime for the doctor's clock test
//! ([`faketime`]).
//!
//! `cargo xtask test` and `cargo xtask integration-test` start the ones their suites need
//! ([`RunningServices`], stopped when dropped, also on failure); `cargo xtask services up`
//! starts them detached for hand-run tests ([`command`]). Tests learn where they are from the
//! environment variables below.

pub(crate) mod browser;
pub(crate) mod command;
pub(crate) mod faketime;
mod kafka;
mod kafka_cluster;
mod kafka_jars;
mod ports;
mod postgres;
mod probe;
mod process;
pub(crate) mod promtool;
mod redis;
mod redis_cluster;
mod state;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;

pub(crate) use kafka::KafkaBroker;
pub(crate) use kafka_cluster::{CLUSTER_SIZE, KafkaCluster};
pub(crate) use postgres::PostgresServer;
pub(crate) use process::Lifetime;
pub(crate) use redis::RedisServer;
pub(crate) use redis_cluster::{REDIS_CLUSTER_NODES, RedisCluster};

use crate::shell::project_root;

/// `redis://127.0.0.1:<port>/0`: the Redis server to test against.
pub(crate) const REDIS_URL_VAR: &str = "EVENTBUS_TEST_REDIS_URL";
/// The `redis-server` program, for tests that start (and kill) servers of their own.
pub(crate) const REDIS_SERVER_VAR: &str = "EVENTBUS_TEST_REDIS_SERVER";
/// `redis-cluster://127.0.0.1:<port>,...`: the Redis Cluster to test against, its masters as
/// seed nodes.
pub(crate) const REDIS_CLUSTER_URL_VAR: &str = "EVENTBUS_TEST_REDIS_CLUSTER_URL";
/// `127.0.0.1:<port>`: the Kafka bootstrap servers to test against.
pub(crate) const KAFKA_BROKERS_VAR: &str = "EVENTBUS_TEST_KAFKA_BROKERS";
/// `<libs>/*`: the class path of the Kafka jars, to run its tools with `java -cp`.
pub(crate) const KAFKA_CLASSPATH_VAR: &str = "EVENTBUS_TEST_KAFKA_CLASSPATH";
/// `127.0.0.1:<port>,...`: the bootstrap servers of the three-node Kafka cluster.
pub(crate) const KAFKA_CLUSTER_BROKERS_VAR: &str = "EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS";
/// `postgres://eventbus@127.0.0.1:<port>/postgres`: the PostgreSQL server to test against.
pub(crate) const POSTGRES_URL_VAR: &str = "EVENTBUS_TEST_POSTGRES_URL";
/// The directory of PostgreSQL's programs (`initdb`, `postgres`, `pg_isready`), for tests that
/// run (and crash) servers of their own.
pub(crate) const POSTGRES_BIN_VAR: &str = "EVENTBUS_TEST_POSTGRES_BIN";

/// A server the suites can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Redis,
    /// A Redis Cluster of six nodes (`services up redis --cluster`).
    RedisCluster,
    Kafka,
    /// [`CLUSTER_SIZE`] Kafka nodes (`services up kafka --brokers 3`).
    KafkaCluster,
    /// A PostgreSQL server, for the outbox (`services up postgres`).
    Postgres,
}

impl Service {
    pub(crate) const ALL: [Service; 5] = [
        Service::Redis,
        Service::RedisCluster,
        Service::Kafka,
        Service::KafkaCluster,
        Service::Postgres,
    ];
    /// What `services up` starts when it is given no name.
    pub(crate) const DEFAULT: [Service; 2] = [Service::Redis, Service::Kafka];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::RedisCluster => "redis-cluster",
            Service::Kafka => "kafka",
            Service::KafkaCluster => "kafka-cluster",
            Service::Postgres => "postgres",
        }
    }

    pub(crate) fn parse(name: &str) -> anyhow::Result<Self> {
        match Service::ALL.into_iter().find(|s| s.name() == name) {
            Some(service) => Ok(service),
            None => bail!(
                "unknown service {name:?}; known services: {}",
                Service::ALL.map(Service::name).join(", ")
            ),
        }
    }

    /// How many nodes it has, numbered from 1, for a cluster; `None` for a single server.
    pub(crate) fn nodes(self) -> Option<usize> {
        match self {
            Service::RedisCluster => Some(REDIS_CLUSTER_NODES),
            Service::KafkaCluster => Some(CLUSTER_SIZE),
            Service::Redis | Service::Kafka | Service::Postgres => None,
        }
    }
}

/// The servers of one xtask run. Dropping it stops them and deletes their files, whether the
/// run passed, failed or panicked.
#[derive(Default)]
pub(crate) struct RunningServices {
    redis: Option<RedisServer>,
    redis_cluster: Option<RedisCluster>,
    kafka: Option<KafkaBroker>,
    kafka_cluster: Option<KafkaCluster>,
    postgres: Option<PostgresServer>,
}

impl RunningServices {
    /// Starts each of `services` (none: nothing to do). A server that cannot start is an
    /// error saying how to get it; those already started are stopped again.
    pub(crate) fn start(services: &[Service]) -> anyhow::Result<Self> {
        let mut running = RunningServices::default();
        if services.is_empty() {
            return Ok(running);
        }
        let started = Instant::now();
        for service in services {
            match service {
                Service::Redis if running.redis.is_none() => {
                    running.redis = Some(RedisServer::start(Lifetime::Scoped)?);
                }
                Service::RedisCluster if running.redis_cluster.is_none() => {
                    running.redis_cluster = Some(RedisCluster::start(Lifetime::Scoped)?);
                }
                Service::Kafka if running.kafka.is_none() => {
                    running.kafka = Some(KafkaBroker::start(Lifetime::Scoped)?);
                }
                Service::KafkaCluster if running.kafka_cluster.is_none() => {
                    running.kafka_cluster = Some(KafkaCluster::start(Lifetime::Scoped)?);
                }
                Service::Postgres if running.postgres.is_none() => {
                    running.postgres = Some(PostgresServer::start(Lifetime::Scoped)?);
                }
                _ => {}
            }
        }
        eprintln!(
            "xtask: {} started in {:.1}s",
            running.names().join(" and "),
            started.elapsed().as_secs_f64()
        );
        Ok(running)
    }

    /// The environment variables that tell the tests where the servers are.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(redis) = &self.redis {
            env.extend(redis_env(redis));
        }
        if let Some(cluster) = &self.redis_cluster {
            env.extend(redis_cluster_env(cluster));
        }
        if let Some(kafka) = &self.kafka {
            env.extend(kafka_env(kafka));
        }
        if let Some(cluster) = &self.kafka_cluster {
            env.extend(kafka_cluster_env(cluster));
        }
        if let Some(postgres) = &self.postgres {
            env.extend(postgres_env(postgres));
        }
        unique_names(&mut env);
        env
    }

    /// What runs, for messages: `["redis", "kafka"]`.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.redis.is_some() {
            names.push(Service::Redis.name());
        }
        if self.redis_cluster.is_some() {
            names.push(Service::RedisCluster.name());
        }
        if self.kafka.is_some() {
            names.push(Service::Kafka.name());
        }
        if self.kafka_cluster.is_some() {
            names.push(Service::KafkaCluster.name());
        }
        if self.postgres.is_some() {
            names.push(Service::Postgres.name());
        }
        names
    }
}

/// Keeps the first of each variable: the single broker and the cluster both give the class
/// path of the same jars, the Redis server and cluster the same `redis-server`.
pub(crate) fn unique_names(env: &mut Vec<(&'static str, String)>) {
    let mut seen = std::collections::HashSet::new();
    env.retain(|(name, _)| seen.insert(*name));
}

pub(crate) fn redis_env(redis: &RedisServer) -> [(&'static str, String); 2] {
    [
        (REDIS_URL_VAR, redis.url()),
        (REDIS_SERVER_VAR, redis.binary().display().to_string()),
    ]
}

pub(crate) fn redis_cluster_env(cluster: &RedisCluster) -> [(&'static str, String); 2] {
    [
        (REDIS_CLUSTER_URL_VAR, cluster.url()),
        (REDIS_SERVER_VAR, cluster.binary().display().to_string()),
    ]
}

pub(crate) fn kafka_env(kafka: &KafkaBroker) -> [(&'static str, String); 2] {
    [
        (KAFKA_BROKERS_VAR, kafka.bootstrap_servers()),
        (KAFKA_CLASSPATH_VAR, kafka.classpath()),
    ]
}

pub(crate) fn kafka_cluster_env(cluster: &KafkaCluster) -> [(&'static str, String); 2] {
    [
        (KAFKA_CLUSTER_BROKERS_VAR, cluster.bootstrap_servers()),
        (KAFKA_CLASSPATH_VAR, cluster.classpath()),
    ]
}

pub(crate) fn postgres_env(postgres: &PostgresServer) -> [(&'static str, String); 2] {
    [
        (POSTGRES_URL_VAR, postgres.url()),
        (POSTGRES_BIN_VAR, postgres.bin_dir().display().to_string()),
    ]
}

/// `target/xtask-cache` (under `$CARGO_TARGET_DIR` when that is set): the Kafka jars, the
/// services' state file and the running PostgreSQL servers' clusters (deleted when they
/// stop). Kept across runs; `cargo clean` empties it.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| project_root().join("target"), PathBuf::from)
        .join("xtask-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_by_name() {
        for service in Service::ALL {
            assert_eq!(Service::parse(service.name()).unwrap(), service);
        }
        assert!(
            Service::parse("mysql")
                .unwrap_err()
                .to_string()
                .contains("redis, redis-cluster, kafka, kafka-cluster, postgres")
        );
    }

    #[test]
    fn clusters_have_numbered_nodes() {
        assert_eq!(Service::RedisCluster.nodes(), Some(6));
        assert_eq!(Service::KafkaCluster.nodes(), Some(3));
        assert_eq!(Service::Redis.nodes(), None);
        assert_eq!(Service::Kafka.nodes(), None);
        assert_eq!(Service::Postgres.nodes(), None);
    }

    #[test]
    fn nothing_needed_starts_nothing() {
        let running = RunningServices::start(&[]).unwrap();
        assert!(running.env().is_empty());
        assert!(running.names().is_empty());
    }
}
