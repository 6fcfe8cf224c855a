//! A throwaway Redis Cluster: [`REDIS_CLUSTER_MASTERS`] masters with a replica each, every
//! node a `redis-server` in cluster mode ([`RedisServer::start_node`]) on a free loopback
//! port with its own directory, created with `redis-cli --cluster create`, so failover,
//! `MOVED` redirections and multi-slot work can be tested on one machine.
//!
//! Ready when every node says `cluster_state:ok` with all 16384 slots served, knows every
//! other node, sees three masters with a replica each, and every replica's link to its
//! master is up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::ports::{Probe, is_port_taken, loopback, wait_until_ready};
use super::process::{Lifetime, display};
use super::redis::{RedisServer, find_or_install, find_or_install_cli};
use super::state::Record;

/// The cluster on the wire (free ports, requests, `CLUSTER NODES`, the whole-cluster check):
/// `event-testkit`'s file, compiled here too, so xtask's cluster and the tests' clusters are
/// checked by one copy. Some of it serves only the tests.
#[allow(dead_code)]
#[path = "../../../crates/event-testkit/src/redis_cluster/nodes.rs"]
mod nodes;

/// Masters of the cluster: the fewest `redis-cli --cluster create` accepts.
pub(crate) const REDIS_CLUSTER_MASTERS: usize = 3;
/// Replicas of each master: one, so any master can fail over.
const REPLICAS_PER_MASTER: usize = 1;
/// Nodes of the cluster, numbered 1 to this in `services kill|restart redis-cluster <node>`.
pub(crate) const REDIS_CLUSTER_NODES: usize = REDIS_CLUSTER_MASTERS * (1 + REPLICAS_PER_MASTER);
/// How long the cluster may take to become whole, at creation or after a restart.
const WHOLE_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 3;

/// A Redis Cluster that xtask started (or adopted from the state file).
pub(crate) struct RedisCluster {
    /// Node `n` is `nodes[n - 1]`.
    nodes: Vec<RedisServer>,
    cli: PathBuf,
    /// The masters at creation, in node order: the seed nodes of [`Self::url`].
    seeds: Vec<u16>,
}

impl RedisCluster {
    /// Finds `redis-server` and `redis-cli` (installing Debian's packages when they are missing
    /// and xtask runs as root), starts [`REDIS_CLUSTER_NODES`] nodes, creates the cluster and
    /// waits until it is whole.
    pub(crate) fn start(lifetime: Lifetime) -> anyhow::Result<Self> {
        let binary = find_or_install()?;
        let cli = find_or_install_cli(&binary)?;
        let mut attempt = 1;
        loop {
            match Self::launch(&binary, &cli, lifetime) {
                Err(e) if attempt < START_ATTEMPTS && is_port_taken(&e) => {
                    eprintln!(
                        "xtask: a port was taken before a Redis Cluster node bound it; trying others"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn launch(binary: &Path, cli: &Path, lifetime: Lifetime) -> anyhow::Result<Self> {
        let started = Instant::now();
        // Each started node is stopped again (when `cluster` drops) if a later step fails.
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(REDIS_CLUSTER_NODES),
            cli: cli.to_path_buf(),
            seeds: Vec::new(),
        };
        for port in nodes::free_cluster_ports(REDIS_CLUSTER_NODES)? {
            cluster
                .nodes
                .push(RedisServer::start_node(binary, port, lifetime)?);
        }
        cluster.create()?;
        cluster.wait_whole(Some((REDIS_CLUSTER_MASTERS, REPLICAS_PER_MASTER)))?;
        let masters = cluster.masters();
        cluster.seeds = cluster
            .ports()
            .into_iter()
            .filter(|p| masters.contains(p))
            .collect();
        eprintln!(
            "xtask: Redis Cluster of {REDIS_CLUSTER_MASTERS} masters with {REPLICAS_PER_MASTER} \
             replica each up on {} in {:.1}s:\n{}",
            cluster.seed_list(),
            started.elapsed().as_secs_f64(),
            cluster.roles()
        );
        Ok(cluster)
    }

    /// `redis-cli --cluster create` of every node: with one address for all, it makes the
    /// first [`REDIS_CLUSTER_MASTERS`] masters and gives each a replica.
    fn create(&self) -> anyhow::Result<()> {
        let log = self.nodes[0].dir().join("cluster-create.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&self.cli);
        command
            .args(["--cluster", "create"])
            .args(self.ports().iter().map(|p| loopback(*p).to_string()))
            .args([
                "--cluster-replicas",
                &REPLICAS_PER_MASTER.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = command
            .spawn()
            .with_context(|| format!("running `{}`", display(&command)))?;
        let status = wait_until_ready(
            "redis-cli --cluster create",
            WHOLE_TIMEOUT,
            Duration::from_millis(100),
            || {
                Ok(match child.try_wait()? {
                    Some(status) if status.success() => Probe::Ready,
                    Some(status) => bail!("it failed ({status})"),
                    None => Probe::NotYet("still running".into()),
                })
            },
        );
        if let Err(e) = status {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "creating the Redis Cluster with `{}`: {e:#}; its output:\n{output}",
                display(&command)
            );
        }
        Ok(())
    }

    /// Waits until the running nodes form a whole cluster (see [`nodes::check`]); with `shape`
    /// (masters, replicas of each), also that shape.
    fn wait_whole(&mut self, shape: Option<(usize, usize)>) -> anyhow::Result<Duration> {
        let running: Vec<u16> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.port()))
            .collect();
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.dir().join("redis.log").display().to_string())
            .collect();
        wait_until_ready(
            "the Redis Cluster",
            WHOLE_TIMEOUT,
            Duration::from_millis(100),
            || {
                Ok(match nodes::check(&running, shape) {
                    Ok(()) => Probe::Ready,
                    Err(problem) => Probe::NotYet(problem),
                })
            },
        )
        .with_context(|| format!("the nodes' logs: {}", logs.join(" ")))
    }

    /// `redis-cluster://127.0.0.1:<port>,...`: the masters at creation as seed nodes (a client
    /// finds the others from any of them, also after a failover).
    pub(crate) fn url(&self) -> String {
        format!("redis-cluster://{}", self.seed_list())
    }

    fn seed_list(&self) -> String {
        self.seeds
            .iter()
            .map(|p| loopback(*p).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `redis-server` program the nodes run.
    pub(crate) fn binary(&self) -> &Path {
        self.nodes[0].binary()
    }

    /// Every node's port, in node order.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Every node's pid, in node order.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(RedisServer::pid).collect()
    }

    /// Whether every node runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.nodes.iter_mut().all(RedisServer::is_running)
    }

    /// The ports of the masters that serve slots, as the first node that answers sees them.
    fn masters(&self) -> Vec<u16> {
        self.view()
            .iter()
            .filter(|n| n.is_serving())
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` of the first node that answers (empty when none does).
    fn view(&self) -> Vec<nodes::ClusterNode> {
        self.nodes
            .iter()
            .find_map(|n| nodes::request(n.port(), &["CLUSTER", "NODES"]).ok())
            .map(|text| nodes::parse_nodes(&text))
            .unwrap_or_default()
    }

    /// One line per node: `node 1 127.0.0.1:41000 master 0-5460`, `node 4 127.0.0.1:41003
    /// replica of node 2`, `node 3 127.0.0.1:41002 down`.
    pub(crate) fn roles(&self) -> String {
        let view = self.view();
        let number = |id: &str| {
            let port = view.iter().find(|n| n.id() == id).map(|n| n.port)?;
            self.ports().iter().position(|p| *p == port).map(|i| i + 1)
        };
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let role = match view.iter().find(|n| n.port == node.port()) {
                    Some(n) if n.is_down() => "down".to_string(),
                    Some(n) if n.is_a_master() => format!("master {}", n.slot_text()),
                    Some(n) => match n.master_id().and_then(number) {
                        Some(master) => format!("replica of node {master}"),
                        None => "replica".to_string(),
                    },
                    None => "unknown".to_string(),
                };
                format!("  node {} {} {role}", index + 1, loopback(node.port()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Node `id` (1 to [`REDIS_CLUSTER_NODES`]).
    pub(crate) fn node(&mut self, id: u32) -> anyhow::Result<&mut RedisServer> {
        let size = self.nodes.len();
        (id as usize)
            .checked_sub(1)
            .and_then(|index| self.nodes.get_mut(index))
            .with_context(|| format!("the Redis Cluster has nodes 1 to {size}, not {id}"))
    }

    /// Kills every node with SIGKILL; their data stays for [`Self::restart`].
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.nodes.iter_mut().try_for_each(RedisServer::kill)
    }

    /// Starts every node that is not running again on its port with its data, and waits until
    /// the cluster is whole again.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.restart()?;
            }
        }
        self.rejoined()
    }

    /// Restarts node `id` (stopping it first if it runs) on its port with its data and
    /// `nodes.conf`, and waits until the cluster is whole again: an old master comes back
    /// as a replica of the replica that took its place.
    pub(crate) fn restart_node(&mut self, id: u32) -> anyhow::Result<()> {
        self.node(id)?.restart()?;
        self.rejoined()
    }

    fn rejoined(&mut self) -> anyhow::Result<()> {
        let took = self.wait_whole(None)?;
        eprintln!(
            "xtask: the Redis Cluster is whole again after {:.1}s:\n{}",
            took.as_secs_f64(),
            self.roles()
        );
        Ok(())
    }

    /// Leaves every node running after this handle is gone (`cargo xtask services up`).
    pub(crate) fn detach(mut self) {
        for node in std::mem::take(&mut self.nodes) {
            node.detach();
        }
    }

    /// What the state file needs to find the nodes again: each node's record under
    /// `node{n}.`, the seeds and `redis-cli`.
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::default();
        record
            .set("nodes", self.nodes.len())
            .set("cli", self.cli.display())
            .set(
                "seeds",
                self.seeds
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        for (index, node) in self.nodes.iter().enumerate() {
            record.nest(&format!("node{}", index + 1), &node.record());
        }
        record
    }

    /// The detached cluster a state file record describes. Dropping it leaves it running.
    pub(crate) fn adopt(record: &Record) -> anyhow::Result<Self> {
        let nodes: u32 = record.parse("nodes")?;
        if nodes == 0 {
            bail!("the state file records a Redis Cluster of no nodes");
        }
        let nodes = (1..=nodes)
            .map(|id| RedisServer::adopt(&record.nested(&format!("node{id}"))))
            .collect::<anyhow::Result<_>>()?;
        let seeds = record
            .get("seeds")?
            .split(',')
            .map(|p| {
                p.parse()
                    .with_context(|| format!("state file: bad seed port {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(RedisCluster {
            nodes,
            cli: record.get("cli")?.into(),
            seeds,
        })
    }

    /// Stops every node and deletes its files (`cargo xtask services down`). The data goes,
    /// so the nodes are killed at once rather than stopped one by one (which would make the
    /// last ones fail over to each other first).
    pub(crate) fn shut_down(mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        if let Err(e) = self.kill() {
            failures.push(format!("{e:#}"));
        }
        for node in std::mem::take(&mut self.nodes) {
            if let Err(e) = node.shut_down() {
                failures.push(format!("{e:#}"));
            }
        }
        if !failures.is_empty() {
            bail!("stopping the Redis Cluster: {}", failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    /// Kills the nodes this handle owns (their own drop then removes their files), for the
    /// same reason as [`RedisCluster::shut_down`].
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.is_owned()) {
            if let Err(e) = node.kill() {
                eprintln!("xtask: stopping a Redis Cluster node: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_has_three_masters_with_a_replica_each() {
        assert_eq!(REDIS_CLUSTER_NODES, 6);
        let mut record = Record::default();
        record.set("nodes", 0);
        assert!(RedisCluster::adopt(&record).is_err());
    }
}
