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

use super::ports::{Probe, free_redis_cluster_ports, is_port_taken, loopback, wait_until_ready};
use super::probe::redis_request;
use super::process::{Lifetime, display};
use super::redis::{RedisServer, find_or_install, find_or_install_cli};
use super::state::Record;

/// Masters of the cluster: the fewest `redis-cli --cluster create` accepts.
pub(crate) const REDIS_CLUSTER_MASTERS: usize = 3;
/// Replicas of each master: one, so any master can fail over.
const REPLICAS_PER_MASTER: usize = 1;
/// Nodes of the cluster, numbered 1 to this in `services kill|restart redis-cluster <node>`.
pub(crate) const REDIS_CLUSTER_NODES: usize = REDIS_CLUSTER_MASTERS * (1 + REPLICAS_PER_MASTER);
const SLOTS: usize = 16384;
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
        for port in free_redis_cluster_ports(REDIS_CLUSTER_NODES)? {
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

    /// Waits until the running nodes form a whole cluster (see [`check`]); with `shape`
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
                Ok(match check(&running, shape) {
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
            .filter(|n| n.is_master() && !n.is_failing() && n.slots > 0)
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` of the first node that answers (empty when none does).
    fn view(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .find_map(|n| redis_request(loopback(n.port()), &["CLUSTER", "NODES"]).ok())
            .map(|text| parse_nodes(&text))
            .unwrap_or_default()
    }

    /// One line per node: `node 1 127.0.0.1:41000 master 0-5460`, `node 4 127.0.0.1:41003
    /// replica of node 2`, `node 3 127.0.0.1:41002 down`.
    pub(crate) fn roles(&self) -> String {
        let view = self.view();
        let number = |id: &str| {
            let port = view.iter().find(|n| n.id == id).map(|n| n.port)?;
            self.ports().iter().position(|p| *p == port).map(|i| i + 1)
        };
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let role = match view.iter().find(|n| n.port == node.port()) {
                    Some(n) if n.is_failing() => "down".to_string(),
                    Some(n) if n.is_master() => format!("master {}", n.slot_text),
                    Some(n) => match n.master.as_deref().and_then(number) {
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

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The id of its master, for a replica.
    master: Option<String>,
    /// How many slots it serves, and which (`0-5460`, as listed).
    slots: usize,
    slot_text: String,
    connected: bool,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Failed, or suspected of it (`fail?`).
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }
}

/// Reads `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> ...`, a slot `n` or `a-b` (slots being
/// moved, `[n->-id]`, are skipped).
fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let ranges: Vec<&str> = fields[8..]
                .iter()
                .copied()
                .filter(|slot| !slot.starts_with('['))
                .collect();
            let slots = ranges
                .iter()
                .filter_map(|slot| match slot.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
                    None => slot.parse::<usize>().ok().map(|_| 1),
                })
                .sum();
            Some(ClusterNode {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                master: (fields[3] != "-").then(|| fields[3].to_string()),
                slots,
                slot_text: ranges.join(" "),
                connected: fields[7] == "connected",
            })
        })
        .collect()
}

/// Whether the nodes on `running` form a whole cluster: each says `cluster_state:ok` and
/// `cluster_slots_ok:16384`, knows every running node and sees none of them failing, sees all
/// slots served by running masters, and (with `shape`) that many masters with that many
/// replicas each; and every replica of a running master has its link to it up. `Err` says the
/// first thing that is not right yet.
fn check(running: &[u16], shape: Option<(usize, usize)>) -> Result<(), String> {
    let mut replicas = Vec::new();
    for &port in running {
        let addr = loopback(port);
        let info = redis_request(addr, &["CLUSTER", "INFO"])?;
        for wanted in ["cluster_state:ok", &format!("cluster_slots_ok:{SLOTS}")] {
            if !info.lines().any(|l| l.trim() == wanted) {
                return Err(format!("node {addr} does not say {wanted}"));
            }
        }
        let view = parse_nodes(&redis_request(addr, &["CLUSTER", "NODES"])?);
        for other in running {
            match view.iter().find(|n| n.port == *other) {
                None => return Err(format!("node {addr} does not know node {other}")),
                Some(n) if n.is_failing() => {
                    return Err(format!("node {addr} sees node {other} as failing"));
                }
                Some(n) if !n.connected && n.port != port => {
                    return Err(format!("node {addr} has no link to node {other}"));
                }
                Some(_) => {}
            }
        }
        let served: usize = view
            .iter()
            .filter(|n| n.is_master() && running.contains(&n.port))
            .map(|n| n.slots)
            .sum();
        if served != SLOTS {
            return Err(format!(
                "node {addr} sees {served} of {SLOTS} slots served by running masters"
            ));
        }
        if let Some((masters, per_master)) = shape {
            let serving: Vec<&ClusterNode> = view
                .iter()
                .filter(|n| n.is_master() && n.slots > 0)
                .collect();
            if serving.len() != masters {
                return Err(format!(
                    "node {addr} sees {} masters with slots, not {masters}",
                    serving.len()
                ));
            }
            for master in serving {
                let count = view
                    .iter()
                    .filter(|n| n.is_replica() && n.master.as_deref() == Some(&master.id))
                    .count();
                if count != per_master {
                    return Err(format!(
                        "node {addr} sees {count} replicas of master {}, not {per_master}",
                        master.port
                    ));
                }
            }
        }
        let me = view.iter().find(|n| n.has_flag("myself"));
        if let Some(me) = me.filter(|n| n.is_replica()) {
            let master_runs = view
                .iter()
                .find(|n| Some(&n.id) == me.master.as_ref())
                .is_some_and(|m| running.contains(&m.port));
            if master_runs {
                replicas.push(addr);
            }
        }
    }
    for addr in replicas {
        let info = redis_request(addr, &["INFO", "replication"])?;
        if !info.lines().any(|l| l.trim() == "master_link_status:up") {
            return Err(format!("replica {addr}'s link to its master is not up"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [42->-abc]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master,fail - 1426238316232 1426238316232 5 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0].port, 30004);
        assert!(nodes[0].is_replica() && !nodes[0].is_master());
        assert_eq!(
            nodes[0].master.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].slots, 5462);
        assert_eq!(nodes[2].slots, 5461);
        assert_eq!(nodes[2].slot_text, "10923-16383");
        assert_eq!(nodes[3].slots, 5461);
        assert!(nodes[3].has_flag("myself"));
        assert!(nodes[4].is_failing() && !nodes[4].connected && nodes[4].slots == 0);
        assert_eq!(nodes.iter().map(|n| n.slots).sum::<usize>(), SLOTS);
        assert!(parse_nodes("garbage\n\n").is_empty());
    }

    #[test]
    fn a_cluster_that_does_not_answer_is_not_whole() {
        let port = super::super::ports::free_loopback_ports(1).unwrap()[0];
        let problem = check(&[port], None).unwrap_err();
        assert!(problem.contains(&port.to_string()), "{problem}");
    }

    #[test]
    fn the_cluster_has_three_masters_with_a_replica_each() {
        assert_eq!(REDIS_CLUSTER_NODES, 6);
        let mut record = Record::default();
        record.set("nodes", 0);
        assert!(RedisCluster::adopt(&record).is_err());
    }
}
