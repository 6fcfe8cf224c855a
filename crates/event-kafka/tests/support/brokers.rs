//! Kafka brokers of one test alone, for tests that kill and restart them (the shared test
//! broker must not be stopped under other tests): one KRaft node, or a cluster of several
//! with a static controller quorum of all of them, from the Kafka jars of
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`, with Java from `JAVA_HOME` or the `PATH`. Killed and
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use rskafka::client::ClientBuilder;

use super::java;

/// How long a node may take to answer after it starts: a cold JVM on a busy two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The class path of the Kafka jars (`EVENTBUS_TEST_KAFKA_CLASSPATH`), or `None` after saying
/// why outside an integration run; in one (`cargo xtask test`) a missing class path fails.
pub fn kafka_classpath() -> anyhow::Result<Option<String>> {
    match std::env::var("EVENTBUS_TEST_KAFKA_CLASSPATH") {
        Ok(classpath) if !classpath.is_empty() => Ok(Some(classpath)),
        _ => {
            ensure!(
                !event_testkit::integration_required(),
                "EVENTBUS_TEST_KAFKA_CLASSPATH is not set: run `cargo xtask test`, or \
                 `eval \"$(cargo xtask services up kafka)\"` and the tests again"
            );
            eprintln!("SKIPPED: no EVENTBUS_TEST_KAFKA_CLASSPATH (run `cargo xtask test`)");
            Ok(None)
        }
    }
}

/// One node: broker and controller in one JVM.
struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// KRaft nodes in temporary folders.
pub struct KafkaNodes {
    classpath: String,
    nodes: Vec<Node>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl KafkaNodes {
    /// Starts `count` nodes (1: a standalone broker; more: a cluster whose internal topics
    /// have up to 3 replicas, 2 in sync) and waits until each answers and, in a cluster,
    /// until every node has joined (a topic with a replica on each can be created).
    pub async fn start(classpath: &str, count: usize) -> anyhow::Result<Self> {
        ensure!(count >= 1, "a Kafka cluster needs a node");
        let mut id = [0u8; 16];
        fastrand::fill(&mut id);
        id[0] &= 0x7f;
        let cluster_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let mut nodes = Vec::with_capacity(count);
        for id in 1..=count as u32 {
            let dir = std::env::temp_dir().join(format!(
                "eventbus-kafka-test-{}-{:08x}-{id}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&dir)?;
            nodes.push(Node {
                id,
                port: free_port()?,
                controller_port: free_port()?,
                dir,
                child: None,
            });
        }
        let voters: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect();
        let mut cluster = KafkaNodes {
            classpath: classpath.to_string(),
            nodes,
        };
        for node in &cluster.nodes {
            let quorum = if count == 1 {
                format!(
                    "controller.quorum.bootstrap.servers=127.0.0.1:{}",
                    node.controller_port
                )
            } else {
                format!("controller.quorum.voters={}", voters.join(","))
            };
            std::fs::write(
                node.dir.join("server.properties"),
                properties(node, &quorum, count.min(3), &node.dir.join("data")),
            )?;
            let mut format = Command::new(java());
            format
                .args([
                    "-Xmx256m",
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                ])
                .args(["--cluster-id", &cluster_id, "--config"])
                .arg(node.dir.join("server.properties"))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if count == 1 {
                format.arg("--standalone");
            }
            let status = format
                .status()
                .context("running java to format a broker's storage (set JAVA_HOME?)")?;
            ensure!(
                status.success(),
                "formatting the storage of node {} failed",
                node.id
            );
        }
        // Every node runs before any is waited for: a node answers only once a majority of
        // the controllers runs.
        for index in 0..count {
            cluster.spawn(index)?;
        }
        for index in 0..count {
            cluster.wait_answering(index).await?;
        }
        if count > 1 {
            cluster.wait_joined().await?;
        }
        Ok(cluster)
    }

    /// Every node's client listener, `127.0.0.1:<port>`.
    pub fn bootstrap_servers(&self) -> Vec<String> {
        self.nodes.iter().map(Self::address_of).collect()
    }

    /// The client listener of node `id` (1 to the count).
    pub fn address(&self, id: u32) -> String {
        Self::address_of(self.node(id))
    }

    /// The node whose client listener is `address`, if any.
    pub fn id_of(&self, address: &str) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| Self::address_of(n) == address)
            .map(|n| n.id)
    }

    fn address_of(node: &Node) -> String {
        format!("127.0.0.1:{}", node.port)
    }

    fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    /// Kills node `id` with SIGKILL, as a crash would; its data stays for [`Self::restart`].
    pub fn kill(&mut self, id: u32) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `id` as an operator would: SIGTERM, a controlled shutdown that hands its
    /// leaderships over first; SIGKILL if it has not ended within a minute.
    pub async fn stop(&mut self, id: u32) -> anyhow::Result<()> {
        let Some(mut child) = self.nodes[id as usize - 1].child.take() else {
            return Ok(());
        };
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        ensure!(term.success(), "kill -TERM {} failed", child.id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Starts node `id` again on its ports with its data (killing it first if it runs), and
    /// waits until it answers.
    pub async fn restart(&mut self, id: u32) -> anyhow::Result<()> {
        self.kill(id);
        self.spawn(id as usize - 1)?;
        self.wait_answering(id as usize - 1).await
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("broker.log"))?;
        let child = Command::new(java())
            .args(["-Xmx384m", "-cp", &self.classpath, "kafka.Kafka"])
            .arg(node.dir.join("server.properties"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a Kafka node (set JAVA_HOME?)")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until the node answers a metadata request.
    async fn wait_answering(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                ClientBuilder::new(vec![Self::address_of(node)]).build(),
            )
            .await;
            if let Ok(Ok(client)) = attempt
                && tokio::time::timeout(Duration::from_secs(5), client.list_topics())
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Kafka node {} did not answer within {START_TIMEOUT:?}; see {}",
                    node.id,
                    node.dir.join("broker.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every node has registered with the controllers: a topic with a replica on
    /// each node can then be created.
    async fn wait_joined(&self) -> anyhow::Result<()> {
        let count = i16::try_from(self.nodes.len())?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let probe = format!("joined-{:08x}", fastrand::u32(..));
        loop {
            let created = async {
                let client = ClientBuilder::new(self.bootstrap_servers()).build().await?;
                client
                    .controller_client()?
                    .create_topic(&probe, 1, count, 5_000)
                    .await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), created).await {
                Ok(Ok(())) => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => bail!(
                    "the {count} Kafka nodes did not form a cluster within {START_TIMEOUT:?}; see {}",
                    self.nodes[0].dir.join("broker.log").display()
                ),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

impl Drop for KafkaNodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

/// A node's configuration: broker and controller, on loopback, no automatic topic creation,
/// internal topics with `replicas` replicas (at most 2 in sync), quick group starts and short
/// broker sessions so that restarts after SIGKILL are quick.
fn properties(node: &Node, quorum: &str, replicas: usize, data: &Path) -> String {
    let (id, port, controller) = (node.id, node.port, node.controller_port);
    let in_sync = replicas.min(2);
    format!(
        "process.roles=broker,controller
node.id={id}
{quorum}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={in_sync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={in_sync}
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
",
        data = data.display()
    )
}
