//! The chaos harness (`event_testkit::chaos`) against a Redis Cluster of this test alone:
//! three masters with a replica each (append-only file, `fsync` on every write, from
//! `EVENTBUS_TEST_REDIS_SERVER`), with consumer processes of the shared handler (this binary
//! run again, see [`chaos_child`]). The streams of the run's event types lie on different
//! masters. Faults: consumer processes killed and stopped past the claim idle time,
//! `CLIENT KILL TYPE normal` on every node, and a master killed with SIGKILL (its replica takes
//! over) and started again (it comes back as a replica). Publishes wait for one replica
//! (`REDIS_WAIT_REPLICAS=1`), so an event whose publish returned `Ok` survives the failover:
//! the run fails on any lost event. Foreign entries are written with raw `XADD`.
//!
//! `EVENTBUS_CHAOS_SEED` and `EVENTBUS_CHAOS_SECONDS` replay or lengthen a run.

mod chaos_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use async_trait::async_trait;
use event_core::{Config, EnvSettings as _, EventBus, EventType};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::RedisCluster;
use event_testkit::chaos::{Abilities, ChaosBackend, Fault, ForeignEntry};
use fred::prelude::{Builder, Client, ClientLike};
use tokio::sync::Mutex;

/// How long a consumer's pending entries wait before another consumer claims them.
const CLAIM_IDLE: Duration = Duration::from_secs(2);

/// The cluster target: the private cluster, and a clustered client of the test's own.
struct Cluster {
    cluster: Mutex<RedisCluster>,
    admin: Client,
    config: Config,
    redis: RedisConfig,
}

impl Cluster {
    async fn start(binary: &Path) -> anyhow::Result<Self> {
        let cluster = RedisCluster::start(binary, 3, 1).await?;
        let url = cluster.url();
        let admin = Builder::from_config(fred::types::config::Config::from_url(
            &event_core::config::table::redis_client_url(&url),
        )?)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10))
        .set_policy(fred::prelude::ReconnectPolicy::new_constant(0, 200))
        .build()?;
        admin.init().await?;
        let redis = RedisConfig::builder()
            .url(url)
            .key_prefix(event_testkit::unique("chaos"))
            .wait_replicas(1, Duration::from_secs(2))
            .build()?;
        let mut config = Config::default();
        config.consumer_group = event_testkit::unique("chaos");
        config.claim_idle = CLAIM_IDLE;
        Ok(Self {
            cluster: Mutex::new(cluster),
            admin,
            config,
            redis,
        })
    }
}

#[async_trait]
impl ChaosBackend for Cluster {
    fn name(&self) -> &'static str {
        "redis-cluster"
    }

    fn test_target(&self) -> (&'static str, &'static str) {
        ("event-redis", "chaos_cluster")
    }

    fn base_config(&self) -> Config {
        self.config.clone()
    }

    async fn connect(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>> {
        Ok(Arc::new(
            RedisBus::connect(self.redis.clone(), config).await?,
        ))
    }

    fn child_variables(&self) -> BTreeMap<String, String> {
        self.redis.to_vars()
    }

    fn abilities(&self) -> Abilities {
        Abilities {
            faults: vec![
                Fault::KillConsumerProcess,
                Fault::PauseConsumerProcess,
                Fault::PanicLoopOnce,
                Fault::ClientKill,
                Fault::ServerRestart,
            ],
            consumer_processes: true,
            second_instance: true,
            order_survives_takeover: false,
            rebalance_redelivers: false,
            takeover_after: CLAIM_IDLE,
            slow_call: CLAIM_IDLE + Duration::from_secs(1),
            events_per_second: 300,
            default_seconds: 75,
            quiescence_deadline: Duration::from_secs(120),
        }
    }

    async fn inject(&self, fault: Fault, seed: u64) -> anyhow::Result<String> {
        match fault {
            Fault::ClientKill => {
                let cluster = self.cluster.lock().await;
                let mut killed = Vec::new();
                for port in cluster.ports() {
                    // A node killed by an earlier fault and not yet back is skipped.
                    if let Ok(n) = cluster
                        .cli(port, &["CLIENT", "KILL", "TYPE", "normal"])
                        .await
                    {
                        killed.push(format!(":{port} {n}"));
                    }
                }
                Ok(format!(
                    "CLIENT KILL TYPE normal on every node: {}",
                    killed.join(", ")
                ))
            }
            Fault::ServerRestart => {
                let mut cluster = self.cluster.lock().await;
                let masters = cluster.masters();
                let Some(&victim) = masters.get(seed as usize % masters.len().max(1)) else {
                    bail!("the cluster has no master");
                };
                cluster.kill(victim);
                cluster.wait_until_ok(Duration::from_secs(60)).await?;
                cluster.restart(victim).await?;
                Ok(format!(
                    "master :{victim} killed (SIGKILL); its replica took over; it came back as a replica"
                ))
            }
            other => bail!("the redis-cluster target cannot inject {other:?}"),
        }
    }

    async fn write_foreign(
        &self,
        event_type: &EventType,
        marker: &str,
    ) -> anyhow::Result<Vec<ForeignEntry>> {
        chaos_support::write_foreign(&self.admin, &self.redis.key_prefix, event_type, marker).await
    }
}

/// A consumer process of the chaos run: does nothing unless `EVENTBUS_CHAOS_CHILD` is set.
#[test]
fn chaos_child() {
    event_testkit::chaos::child_main(|config, variables| async move {
        let redis = RedisConfig::from_vars(variables)?;
        Ok(Arc::new(RedisBus::connect(redis, config).await?) as Arc<dyn EventBus>)
    });
}

/// The chaos run against a private Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() -> anyhow::Result<()> {
    if std::env::var_os(event_testkit::chaos::CHILD_VAR).is_some() {
        return Ok(());
    }
    let Some(binary) = event_testkit::test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let target = Arc::new(Cluster::start(Path::new(&binary)).await?);
    let summary = event_testkit::chaos::run(target).await?;
    anyhow::ensure!(summary.lost == 0, "{} events lost", summary.lost);
    Ok(())
}
