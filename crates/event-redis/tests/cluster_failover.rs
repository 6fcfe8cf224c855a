//! The bus on a Redis Cluster of this test alone (three masters with a replica each, from
//! `EVENTBUS_TEST_REDIS_SERVER`): the master holding a subscribed type's stream is killed with
//! SIGKILL while four publishers and a consumer run, twice:
//!
//! 1. with `REDIS_WAIT_REPLICAS=1`: every publish that returned `Ok` is handled, none hangs,
//!    publishing resumes on the
//!    promoted replica once the old master is back as its replica (until then the promoted
//!    one has no replica to confirm, and its publishes fail cleanly), and health says healthy
//!    again once the cluster is whole;
//! 2. with the default 0: the same run, measured and not asserted: Redis replicates
//!    asynchronously, so the events the master acknowledged in its last moments may be lost
//!    with it. The test prints how many were (see docs/redis.md, "Redis Cluster").
//!
//! Then the slot of one type's stream moves to another master under load (resharding: its
//! entries migrate while in use, clients are redirected with `ASK`, then `MOVED`): nothing
//! acknowledged is lost and the bus follows.
//!
//! Four more publishers use only the two types whose masters stay up, and the test prints
//! what they published and what was handled while the failover lasted: the Redis client
//! (fred) reconnects its whole cluster connection when one node fails, so every master's
//! traffic pauses until the replica has taken over (docs/redis.md says so).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use event_core::{Config, EventBus, EventType, HealthStatus, StartFrom, SubscriptionSpec};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::RedisCluster;
use event_testkit::load::{Load, all_handled, recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load() -> anyhow::Result<()> {
    let Some(binary) = event_testkit::test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let mut cluster = RedisCluster::start(Path::new(&binary), 3, 1).await?;
    for wait in [1, 0] {
        failover(&mut cluster, wait)
            .await
            .with_context(|| format!("master failover with REDIS_WAIT_REPLICAS={wait}"))?;
    }
    resharding(&cluster)
        .await
        .context("a slot moved to another master under load")?;
    Ok(())
}

/// The slot of a subscribed type's stream moves to another master (its entries `MIGRATE`d
/// while publishers and the consumer use them: `ASK`, then `MOVED`): nothing acknowledged is
/// lost, and the bus follows without a restart.
async fn resharding(cluster: &RedisCluster) -> anyhow::Result<()> {
    let (bus, prefix, types, seen) = loaded_bus(cluster, 0).await?;
    let load = Load::start(&bus, &types);
    load.until_published(0, 2_000, Duration::from_secs(120))
        .await?;
    let slot = fred::util::redis_keyslot(format!("{prefix}:stream:{}", types[0]).as_bytes());
    let (from, to) = (
        cluster
            .master_of_slot(slot)
            .context("no master for the slot")?,
        cluster
            .master_of_slot(fred::util::redis_keyslot(
                format!("{prefix}:stream:{}", types[1]).as_bytes(),
            ))
            .context("no master for the second type")?,
    );
    let moving = Instant::now();
    cluster.move_slot(slot, to).await?;
    let moved = moving.elapsed();
    let after = load.published();
    load.until_published(after, 2_000, Duration::from_secs(120))
        .await?;
    let report = load.stop().await?;
    all_handled(&[&seen], &report.published, Duration::from_secs(90)).await?;
    eprintln!(
        "resharding: slot {slot} (the stream of {}) moved from :{from} to :{to} in {:.1}s under load; {} events published with success, all handled; {} publishes failed cleanly (first errors: {:?}), the longest call took {:.1}s",
        types[0],
        moved.as_secs_f64(),
        report.published.len(),
        report.failed,
        report.errors,
        report.longest.as_secs_f64()
    );
    ensure!(
        cluster.master_of_slot(slot) == Some(to),
        "the slot did not end on :{to}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A bus on the cluster under a fresh prefix (publishes waiting for `wait` replicas) with a
/// recorder subscribed to three types whose streams lie on three different masters.
async fn loaded_bus(
    cluster: &RedisCluster,
    wait: u32,
) -> anyhow::Result<(
    Arc<dyn EventBus>,
    String,
    Vec<EventType>,
    Arc<std::sync::Mutex<Vec<event_core::EventId>>>,
)> {
    let prefix = event_testkit::unique("failover");
    let redis = RedisConfig::builder()
        .url(cluster.url())
        .key_prefix(&prefix)
        .wait_replicas(wait, Duration::from_secs(1))
        .build()?;
    let mut config = Config::default();
    config.consumer_group = event_testkit::unique("failover");
    config.claim_idle = Duration::from_secs(2);
    let bus: Arc<dyn EventBus> = Arc::new(RedisBus::connect(redis, config).await?);
    let types = types_on_every_master(cluster, &prefix)?;
    let (handler, seen) = recorder("failover");
    bus.subscribe(
        SubscriptionSpec::new("failover", types.clone()).start_from(StartFrom::Earliest),
        handler,
    )
    .await?;
    Ok((bus, prefix, types, seen))
}

/// Three event types whose streams lie on three different masters.
fn types_on_every_master(cluster: &RedisCluster, prefix: &str) -> anyhow::Result<Vec<EventType>> {
    let mut types: Vec<(EventType, u16)> = Vec::new();
    for i in 0..1000 {
        let event_type = EventType::new(format!("failover.type{i}"))?;
        let key = format!("{prefix}:stream:{event_type}");
        let master = cluster
            .master_of_slot(fred::util::redis_keyslot(key.as_bytes()))
            .context("a slot without a master")?;
        if types.iter().all(|(_, m)| *m != master) {
            types.push((event_type, master));
        }
        if types.len() == 3 {
            return Ok(types.into_iter().map(|(t, _)| t).collect());
        }
    }
    anyhow::bail!("no three types on three masters")
}

async fn failover(cluster: &mut RedisCluster, wait: u32) -> anyhow::Result<()> {
    let (bus, prefix, types, seen) = loaded_bus(cluster, wait).await?;
    // Four publishers over the three types, and four over the two whose masters stay up
    // (measured, see the module's documentation).
    let load = Load::start(&bus, &types);
    let steady = Load::start(&bus, &types[1..]);
    load.until_published(0, 2_000, Duration::from_secs(120))
        .await?;
    let key = format!("{prefix}:stream:{}", types[0]);
    let victim = cluster
        .master_of_slot(fred::util::redis_keyslot(key.as_bytes()))
        .context("no master for the first type")?;
    let (steady_before, handled_before) = (steady.published(), seen.lock().unwrap().len());
    let killed = Instant::now();
    cluster.kill(victim);
    // The replica takes over; the old master comes back as its replica.
    cluster.wait_until_ok(Duration::from_secs(60)).await?;
    let failed_over = killed.elapsed();
    let during = steady.published() - steady_before;
    let handled_during = seen.lock().unwrap().len() - handled_before;
    cluster.restart(victim).await?;
    let back = load.published();
    load.until_published(back, 2_000, Duration::from_secs(120))
        .await?;
    let resumed = killed.elapsed();
    let mut report = load.stop().await?;
    let steady = steady.stop().await?;
    report.published.extend(steady.published);
    report.failed += steady.failed;
    report.longest = report.longest.max(steady.longest);
    let handled = all_handled(&[&seen], &report.published, Duration::from_secs(90)).await;
    let missing = {
        let seen: std::collections::HashSet<_> = seen.lock().unwrap().iter().copied().collect();
        report
            .published
            .iter()
            .filter(|id| !seen.contains(id))
            .count()
    };
    eprintln!(
        "REDIS_WAIT_REPLICAS={wait}: master :{victim} killed, its replica serving {:.1}s later; meanwhile {during} events published to the types of the other masters and {handled_during} events handled; {} events published with success in all, {missing} of them never handled (lost with the master), {} publishes failed cleanly (first errors: {:?}), the longest call took {:.1}s, 2,000 more published {:.1}s after the kill",
        failed_over.as_secs_f64(),
        report.published.len(),
        report.failed,
        report.errors,
        report.longest.as_secs_f64(),
        resumed.as_secs_f64()
    );
    if wait > 0 {
        handled.context("with a replica confirming each publish, nothing acknowledged is lost")?;
    }
    ensure!(
        report.longest < Duration::from_secs(60),
        "a publish took {:?}: calls must end within their timeout",
        report.longest
    );
    // Health sees every master again once the cluster is whole.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = bus.health().await;
        if health.status == HealthStatus::Healthy {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "health never healthy again after the failover: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bus.shutdown().await?;
    Ok(())
}
