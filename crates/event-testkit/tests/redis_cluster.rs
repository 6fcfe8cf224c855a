//! `event_testkit::RedisCluster` on a real cluster (from `EVENTBUS_TEST_REDIS_SERVER`): three
//! masters with a replica each come up whole, keys on every master are written and read
//! through `redis-cli -c`, a master is killed with SIGKILL, its replica takes over with its
//! keys, and the old master comes back as a replica.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_by_its_replica() -> anyhow::Result<()> {
    let Some(binary) = event_testkit::test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let mut cluster = RedisCluster::start(Path::new(&binary), 3, 1).await?;
    let ports = cluster.ports();
    ensure!(ports.len() == 6, "6 nodes, not {ports:?}");
    let masters = cluster.masters();
    ensure!(masters.len() == 3, "3 masters, not {masters:?}");
    let url = cluster.url();
    ensure!(
        url.starts_with("redis-cluster://127.0.0.1:") && url.matches(',').count() == 2,
        "{url}"
    );
    for master in &masters {
        ensure!(url.contains(&format!("127.0.0.1:{master}")), "{url}");
    }
    for port in &ports {
        let info = cluster.cli(*port, &["CLUSTER", "INFO"]).await?;
        ensure!(info.contains("cluster_state:ok"), "node {port}: {info}");
    }

    // Two keys on each master, written through any node (redis-cli follows MOVED).
    let mut keys: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        if keys.len() == 3 && keys.values().all(|k| k.len() == 2) {
            break;
        }
        ensure!(i < 10_000, "no two keys on each master: {keys:?}");
        let key = format!("key{i}");
        let slot = RedisCluster::key_slot(key.as_bytes());
        let master = cluster
            .master_of_slot(slot)
            .with_context(|| format!("no master for slot {slot}"))?;
        let on_master = keys.entry(master).or_default();
        if on_master.len() < 2 {
            on_master.push(key);
        }
    }
    let entry = ports[0];
    for key in keys.values().flatten() {
        let reply = cluster
            .cli(entry, &["SET", key, &format!("v-{key}")])
            .await?;
        ensure!(reply == "OK", "SET {key}: {reply}");
        let slot = cluster.cli(entry, &["CLUSTER", "KEYSLOT", key]).await?;
        ensure!(
            slot == RedisCluster::key_slot(key.as_bytes()).to_string(),
            "CLUSTER KEYSLOT {key} says {slot}"
        );
    }
    // Every master's replica has the writes before its master dies (replication is
    // asynchronous).
    cluster.wait_replicated(Duration::from_secs(30)).await?;

    let victim = *keys.keys().next().unwrap();
    cluster.kill(victim);
    cluster.wait_until_ok(Duration::from_secs(60)).await?;
    let masters_now = cluster.masters();
    ensure!(
        masters_now.len() == 3 && !masters_now.contains(&victim),
        "after killing master {victim}, the masters are {masters_now:?}"
    );
    let alive = *ports.iter().find(|p| **p != victim).unwrap();
    for key in keys.values().flatten() {
        let value = cluster.cli(alive, &["GET", key]).await?;
        ensure!(
            value == format!("v-{key}"),
            "GET {key} after the failover: {value}"
        );
    }
    for key in &keys[&victim] {
        let slot = RedisCluster::key_slot(key.as_bytes());
        let master = cluster.master_of_slot(slot);
        ensure!(
            master.is_some() && master != Some(victim),
            "slot {slot} of {key} is on {master:?} after its master {victim} was killed"
        );
    }

    // The old master rejoins as a replica of the node that took over.
    cluster.restart(victim).await?;
    let role = cluster.cli(victim, &["ROLE"]).await?;
    ensure!(
        role.starts_with("slave"),
        "node {victim} came back as {role}"
    );
    ensure!(
        cluster.masters() == masters_now,
        "the masters changed again"
    );
    Ok(())
}
