//! A throwaway Apache Kafka cluster of [`CLUSTER_SIZE`] KRaft nodes, each broker and
//! controller in one JVM, on free loopback ports: a static controller quorum of all of them,
//! internal topics replicated three times with two in sync, so leader failover, rolling
//! restarts and `min.insync.replicas` can be tested on one machine.
//!
//! Every node is formatted with the same cluster id and started before any is waited for: a
//! node answers only once a majority of the controllers runs.

use std::time::Instant;

use anyhow::{Context, bail};

use super::kafka::{KafkaBroker, Node, Quorum, new_cluster_id};
use super::kafka_jars::{KafkaJars, java};
use super::ports::{free_loopback_ports, is_port_taken};
use super::process::Lifetime;
use super::state::Record;

/// Nodes in a cluster: the fewest that keep a majority of controllers, and a partition with
/// `min.insync.replicas=2`, writable while one node is down.
pub(crate) const CLUSTER_SIZE: usize = 3;
const START_ATTEMPTS: usize = 3;

/// A Kafka cluster that xtask started; dropping it stops every node it owns.
pub(crate) struct KafkaCluster {
    brokers: Vec<KafkaBroker>,
}

impl KafkaCluster {
    /// Resolves the Kafka jars (Maven, once per machine), formats a fresh log directory per
    /// node, starts them all and waits until each answers.
    pub(crate) fn start(lifetime: Lifetime) -> anyhow::Result<Self> {
        let jars = KafkaJars::resolve()?;
        let java = java()?;
        let mut attempt = 1;
        loop {
            match Self::launch(&jars, &java, lifetime) {
                Err(e) if attempt < START_ATTEMPTS && is_port_taken(&e) => {
                    eprintln!(
                        "xtask: a port was taken before a Kafka node bound it; trying others"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn launch(
        jars: &KafkaJars,
        java: &std::path::Path,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let ports = free_loopback_ports(2 * CLUSTER_SIZE)?;
        let nodes: Vec<Node> = ports
            .chunks(2)
            .zip(1..)
            .map(|(pair, id)| Node {
                id,
                port: pair[0],
                controller_port: pair[1],
            })
            .collect();
        let quorum = Quorum::Voters(nodes.clone());
        let cluster_id = new_cluster_id()?;
        // Each started node is stopped again (when `cluster` drops) if a later one fails.
        let mut cluster = KafkaCluster {
            brokers: Vec::with_capacity(nodes.len()),
        };
        for node in &nodes {
            cluster.brokers.push(KafkaBroker::spawn_node(
                jars,
                java,
                node,
                &quorum,
                &cluster_id,
                lifetime,
            )?);
        }
        for broker in &mut cluster.brokers {
            broker.wait_ready()?;
        }
        eprintln!(
            "xtask: Kafka {} cluster of {CLUSTER_SIZE} nodes up on {} in {:.1}s (pids {})",
            jars.version,
            cluster.bootstrap_servers(),
            started.elapsed().as_secs_f64(),
            cluster
                .brokers
                .iter()
                .map(|b| b.pid().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(cluster)
    }

    /// `127.0.0.1:<port>,...`: every node's client listener, the bootstrap servers for clients.
    pub(crate) fn bootstrap_servers(&self) -> String {
        self.brokers
            .iter()
            .map(KafkaBroker::bootstrap_servers)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `<libs>/*`: the class path of the Kafka jars, for `java -cp`.
    pub(crate) fn classpath(&self) -> String {
        self.brokers[0].classpath()
    }

    pub(crate) fn version(&self) -> &str {
        self.brokers[0].version()
    }

    /// Every node's pid, in node order.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.brokers.iter().map(KafkaBroker::pid).collect()
    }

    /// Whether every node runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.brokers.iter_mut().all(KafkaBroker::is_running)
    }

    /// The node with `node.id` `id` (1 to [`CLUSTER_SIZE`]).
    pub(crate) fn node(&mut self, id: u32) -> anyhow::Result<&mut KafkaBroker> {
        let size = self.brokers.len();
        self.brokers
            .iter_mut()
            .find(|b| b.node_id() == id)
            .with_context(|| format!("the cluster has nodes 1 to {size}, not {id}"))
    }

    /// Kills every node with SIGKILL; their data stays for [`Self::restart`].
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.brokers.iter_mut().try_for_each(KafkaBroker::kill)
    }

    /// Starts every node that is not running again on its ports with its data, then waits
    /// until each answers.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        for broker in &mut self.brokers {
            if !broker.is_running() {
                broker.spawn_again()?;
            }
        }
        for broker in &mut self.brokers {
            broker.wait_ready()?;
        }
        Ok(())
    }

    /// Leaves every node running after this handle is gone (`cargo xtask services up`).
    pub(crate) fn detach(mut self) {
        for broker in std::mem::take(&mut self.brokers) {
            broker.detach();
        }
    }

    /// What the state file needs to find the nodes again: each node's record under
    /// `node{id}.`.
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::default();
        record.set("nodes", self.brokers.len());
        for broker in &self.brokers {
            record.nest(&format!("node{}", broker.node_id()), &broker.record());
        }
        record
    }

    /// The detached cluster a state file record describes. Dropping it leaves it running.
    pub(crate) fn adopt(record: &Record) -> anyhow::Result<Self> {
        let nodes: u32 = record.parse("nodes")?;
        if nodes == 0 {
            bail!("the state file records a Kafka cluster of no nodes");
        }
        let brokers = (1..=nodes)
            .map(|id| KafkaBroker::adopt(&record.nested(&format!("node{id}"))))
            .collect::<anyhow::Result<_>>()?;
        Ok(KafkaCluster { brokers })
    }

    /// Stops every node and deletes its files (`cargo xtask services down`). The data goes,
    /// so the nodes are killed rather than stopped one by one: the last node's controlled
    /// shutdown would wait for a controller quorum that is gone.
    pub(crate) fn shut_down(mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        if let Err(e) = self.kill() {
            failures.push(format!("{e:#}"));
        }
        for broker in std::mem::take(&mut self.brokers) {
            if let Err(e) = broker.shut_down() {
                failures.push(format!("{e:#}"));
            }
        }
        if !failures.is_empty() {
            bail!("stopping the Kafka cluster: {}", failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for KafkaCluster {
    /// Kills the nodes this handle owns (their own drop then removes their files), for the
    /// same reason as [`KafkaCluster::shut_down`].
    fn drop(&mut self) {
        for broker in self.brokers.iter_mut().filter(|b| b.is_owned()) {
            if let Err(e) = broker.kill() {
                eprintln!("xtask: stopping a Kafka node: {e:#}");
            }
        }
    }
}
