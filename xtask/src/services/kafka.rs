//! A throwaway Apache Kafka broker in KRaft mode (broker and controller in one JVM) on free
//! loopback ports, with its data in a fresh directory: alone, or as one node of a cluster
//! ([`super::kafka_cluster`]).
//!
//! Started as the release's scripts would (`kafka-storage.sh format`, then
//! `kafka-server-start.sh`), but straight from the Maven jars: `java -cp '<libs>/*'
//! kafka.tools.StorageTool format ... --standalone`, then `java -cp '<libs>/*' kafka.Kafka
//! server.properties`. Ready when the client listener answers an `ApiVersions` request.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::kafka_jars::{HOW_TO_GET_JAVA, KafkaJars, java};
use super::ports::{free_loopback_ports, is_port_taken, loopback};
use super::probe::kafka_api_versions;
use super::process::{Lifetime, ServerProcess, display, new_work_dir, remove_work_dir};
use super::state::Record;

/// Generous: a cold JVM on a busy two-core machine takes several seconds.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;
const NAME: &str = "Kafka broker";
/// The main class, on the JVM's command line.
const MARKER: &str = "kafka.Kafka";
/// The broker's heap: plenty for tests, and small beside the Rust builds running next to it.
const HEAP: &str = "-Xmx512m";

/// A Kafka broker that xtask started.
pub(crate) struct KafkaBroker {
    jars: KafkaJars,
    java: PathBuf,
    /// `node.id`: 1 alone, 1 to N in a cluster.
    node_id: u32,
    /// The PLAINTEXT (client) listener.
    port: u16,
    /// The KRaft controller listener.
    controller_port: u16,
    /// `server.properties`, the log4j configurations, `broker.log` and the `data` log dir.
    dir: PathBuf,
    lifetime: Lifetime,
    process: ServerProcess,
    /// Whether dropping the handle stops the broker and deletes `dir`.
    owned: bool,
}

impl KafkaBroker {
    /// Resolves the Kafka jars (Maven, once per machine), formats a fresh log directory,
    /// starts the broker and waits until it answers.
    pub(crate) fn start(lifetime: Lifetime) -> anyhow::Result<Self> {
        let jars = KafkaJars::resolve()?;
        let java = java()?;
        let mut attempt = 1;
        loop {
            let ports = free_loopback_ports(2)?;
            match Self::launch(&jars, &java, ports[0], ports[1], lifetime) {
                Err(e) if attempt < START_ATTEMPTS && is_port_taken(&e) => {
                    eprintln!(
                        "xtask: port {} or {} was taken before the Kafka broker bound it; trying others",
                        ports[0], ports[1]
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn launch(
        jars: &KafkaJars,
        java: &Path,
        port: u16,
        controller_port: u16,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let node = Node {
            id: 1,
            port,
            controller_port,
        };
        let mut broker = Self::spawn_node(
            jars,
            java,
            &node,
            &Quorum::Standalone,
            &new_cluster_id()?,
            lifetime,
        )?;
        let formatted = started.elapsed();
        broker.wait_ready()?;
        eprintln!(
            "xtask: Kafka {} broker up on 127.0.0.1:{port} in {:.1}s (storage format {:.1}s; pid {}, files in {})",
            jars.version,
            started.elapsed().as_secs_f64(),
            formatted.as_secs_f64(),
            broker.pid(),
            broker.dir.display()
        );
        Ok(broker)
    }

    /// Formats a fresh log directory for `node` of the cluster `cluster_id` and starts it,
    /// without waiting for it to answer: the nodes of a cluster answer only once a majority
    /// of the controllers runs. Dropping the result stops it and removes its directory.
    pub(super) fn spawn_node(
        jars: &KafkaJars,
        java: &Path,
        node: &Node,
        quorum: &Quorum,
        cluster_id: &str,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let dir = new_work_dir("kafka")?;
        let prepared = prepare(jars, java, node, quorum, cluster_id, &dir)
            .and_then(|()| spawn(jars, java, &dir, lifetime));
        match prepared {
            Ok(process) => Ok(KafkaBroker {
                jars: jars.clone(),
                java: java.to_path_buf(),
                node_id: node.id,
                port: node.port,
                controller_port: node.controller_port,
                dir,
                lifetime,
                process,
                owned: true,
            }),
            Err(e) => {
                remove_work_dir(&dir);
                Err(e)
            }
        }
    }

    /// `127.0.0.1:<port>`: the bootstrap servers for clients.
    pub(crate) fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `<libs>/*`: the class path of the broker and the Kafka command-line tools, for
    /// `java -cp`.
    pub(crate) fn classpath(&self) -> String {
        self.jars.classpath()
    }

    pub(crate) fn version(&self) -> &str {
        &self.jars.version
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `node.id`.
    pub(crate) fn node_id(&self) -> u32 {
        self.node_id
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the broker with SIGKILL, as a crash would; its data stays for [`Self::restart`].
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// Stops the broker if it runs (SIGTERM, then SIGKILL after a grace period) and starts it
    /// again on the same ports with the same log directory; returns once it answers.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.spawn_again()?;
        self.wait_ready()?;
        eprintln!(
            "xtask: Kafka broker {} restarted on 127.0.0.1:{} in {:.1}s (pid {})",
            self.node_id,
            self.port,
            started.elapsed().as_secs_f64(),
            self.pid()
        );
        Ok(())
    }

    /// Stops the broker if it runs and starts its process again on the same ports with the
    /// same log directory, without waiting: a node of a cluster answers only once a majority
    /// of the controllers runs.
    pub(crate) fn spawn_again(&mut self) -> anyhow::Result<()> {
        self.process.stop(STOP_GRACE)?;
        self.process = spawn(&self.jars, &self.java, &self.dir, self.lifetime)?;
        Ok(())
    }

    /// Whether dropping this handle stops the broker and deletes its files.
    pub(crate) fn is_owned(&self) -> bool {
        self.owned
    }

    /// Leaves the broker running after this handle is gone (`cargo xtask services up`).
    pub(crate) fn detach(mut self) {
        self.owned = false;
    }

    /// What the state file needs to find the broker again.
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::default();
        record
            .set("pid", self.pid())
            .set("node_id", self.node_id)
            .set("port", self.port)
            .set("controller_port", self.controller_port)
            .set("dir", self.dir.display())
            .set("version", &self.jars.version)
            .set("libs", self.jars.libs.display())
            .set("java", self.java.display());
        record
    }

    /// The detached broker a state file record describes. Dropping it leaves it running.
    pub(crate) fn adopt(record: &Record) -> anyhow::Result<Self> {
        Ok(KafkaBroker {
            jars: KafkaJars {
                version: record.get("version")?.to_string(),
                libs: record.get("libs")?.into(),
            },
            java: record.get("java")?.into(),
            // Records written before clusters existed have no node id: they were node 1.
            node_id: record.parse("node_id").unwrap_or(1),
            port: record.parse("port")?,
            controller_port: record.parse("controller_port")?,
            dir: record.get("dir")?.into(),
            lifetime: Lifetime::Detached,
            process: ServerProcess::adopt(NAME, MARKER, record.parse("pid")?),
            owned: false,
        })
    }

    /// Stops the broker and deletes its files (`cargo xtask services down`).
    pub(crate) fn shut_down(mut self) -> anyhow::Result<()> {
        self.process.stop(STOP_GRACE)?;
        remove_work_dir(&self.dir);
        Ok(())
    }

    /// Waits until the client listener answers (or the process ends, or the start times out).
    pub(super) fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let log = self.dir.join("broker.log");
        let addr = loopback(self.port);
        self.process.wait_ready(
            &format!("the Kafka broker on {addr}"),
            &log,
            START_TIMEOUT,
            Duration::from_millis(250),
            || kafka_api_versions(addr),
        )
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = self.process.stop(STOP_GRACE) {
            eprintln!("xtask: stopping the Kafka broker: {e:#}");
        }
        remove_work_dir(&self.dir);
    }
}

/// Where one node listens.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    /// `node.id`, from 1.
    pub(super) id: u32,
    /// The PLAINTEXT (client) listener.
    pub(super) port: u16,
    /// The KRaft controller listener.
    pub(super) controller_port: u16,
}

/// The controllers a node knows.
#[derive(Clone, Debug)]
pub(super) enum Quorum {
    /// The node is the only controller (formatted with `--standalone`); replication factors
    /// of internal topics are 1.
    Standalone,
    /// A static quorum of every node of a cluster (`controller.quorum.voters`); the internal
    /// topics are replicated to all of them, at most 3, with 2 in sync.
    Voters(Vec<Node>),
}

/// Writes the configuration files into `dir` and formats the log directory with
/// `cluster_id`.
fn prepare(
    jars: &KafkaJars,
    java: &Path,
    node: &Node,
    quorum: &Quorum,
    cluster_id: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "server.properties",
        server_properties(node, quorum, &dir.join("data")),
    )?;
    write("log4j2.properties", log4j2_properties("info"))?;
    write("tools-log4j2.properties", log4j2_properties("warn"))?;

    let mut format = Command::new(java);
    format
        .arg("-Xmx256m")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("tools-log4j2.properties").display()
        ))
        .args([
            "-cp",
            &jars.classpath(),
            "kafka.tools.StorageTool",
            "format",
        ])
        .args(["--cluster-id", cluster_id, "--config"])
        .arg(dir.join("server.properties"))
        .current_dir(dir);
    if let Quorum::Standalone = quorum {
        format.arg("--standalone");
    }
    let output = format
        .output()
        .with_context(|| format!("running `{}`. {HOW_TO_GET_JAVA}", display(&format)))?;
    if !output.status.success() {
        let mut message = format!(
            "formatting the Kafka log directory failed ({}): `{}`\n{}{}",
            output.status,
            display(&format),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if message.contains("UnsupportedClassVersionError") {
            let _ = write!(
                message,
                "\nKafka 4 needs Java 17 or newer. {HOW_TO_GET_JAVA}"
            );
        }
        bail!(message);
    }
    Ok(())
}

fn spawn(
    jars: &KafkaJars,
    java: &Path,
    dir: &Path,
    lifetime: Lifetime,
) -> anyhow::Result<ServerProcess> {
    let mut command = Command::new(java);
    command
        .args([
            HEAP,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("log4j2.properties").display()
        ))
        .args(["-cp", &jars.classpath(), MARKER])
        .arg(dir.join("server.properties"))
        .current_dir(dir);
    ServerProcess::spawn(
        NAME,
        MARKER,
        &mut command,
        &dir.join("broker.log"),
        lifetime,
    )
}

/// The broker's configuration: a node that is both broker and controller, everything on
/// loopback, and no automatic topic creation (the bus creates its topics with their
/// settings; auto-creation would hide mistakes), as in `docker/docker-compose.yml`. Alone,
/// internal topics have one replica; in a cluster, up to 3 with 2 in sync.
fn server_properties(node: &Node, quorum: &Quorum, data: &Path) -> String {
    let Node {
        id,
        port,
        controller_port,
    } = *node;
    let (quorum_line, replicas) = match quorum {
        Quorum::Standalone => (
            format!("controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"),
            1,
        ),
        Quorum::Voters(nodes) => {
            let voters: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
                .collect();
            (
                format!("controller.quorum.voters={}", voters.join(",")),
                nodes.len().min(3),
            )
        }
    };
    let in_sync = replicas.min(2);
    format!(
        "\
# Written by `cargo xtask` for a throwaway test broker.
process.roles=broker,controller
node.id={id}
{quorum_line}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
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
# Fewer internal partitions than the default 50: the first consumer group is ready sooner.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
# Groups start at once, and tests may use short session timeouts (the default floor is 6 s).
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# After a crash (SIGKILL) the restarted broker cannot register until its old session ends:
# 4 s rather than the default 9 s, so fault tests' restarts are quicker.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
",
        data = data.display()
    )
}

/// Log4j 2 configuration: everything at `level` to standard error, which goes to the log file.
fn log4j2_properties(level: &str) -> String {
    format!(
        "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
"
    )
}

/// A new random cluster id, as `kafka-storage.sh random-uuid` makes one, without starting a
/// JVM for it.
pub(super) fn new_cluster_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a Kafka cluster id")?;
    Ok(cluster_id(bytes))
}

/// Kafka's text form of a UUID: URL-safe base64 without padding (22 characters). Kafka never
/// hands out an id whose text starts with `-` (it would read as a command-line option);
/// clearing the top bit keeps the first character in `A-Za-f`.
fn cluster_id(mut bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bytes[0] &= 0x7f;
    let mut text = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_kafka_uuids() {
        // Kafka's `Uuid.toString()` of these bytes (checked with `Uuid.fromString` in Kafka 4.4).
        assert_eq!(cluster_id([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(cluster_id([0xff; 16]), "f____________________w");
        let bytes = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";
        assert_eq!(cluster_id(bytes), "ASNFZ4mrze_-3LqYdlQyEA");
        let random = new_cluster_id().unwrap();
        assert_eq!(random.len(), 22);
        assert!(!random.starts_with('-'));
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn the_broker_listens_on_the_given_ports_only_on_loopback() {
        let node = Node {
            id: 1,
            port: 9092,
            controller_port: 9093,
        };
        let text = server_properties(&node, &Quorum::Standalone, Path::new("/tmp/k/data"));
        assert!(
            text.contains("\nlisteners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n")
        );
        assert!(text.contains("\ncontroller.quorum.bootstrap.servers=127.0.0.1:9093\n"));
        assert!(text.contains("\nlog.dirs=/tmp/k/data\n"));
        assert!(text.contains("\nauto.create.topics.enable=false\n"));
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "a key is set twice");
    }

    #[test]
    fn cluster_nodes_share_a_static_quorum_and_replicate_internal_topics() {
        let nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                port: 9000 + id as u16 * 2,
                controller_port: 9001 + id as u16 * 2,
            })
            .collect();
        let text = server_properties(&nodes[1], &Quorum::Voters(nodes.clone()), Path::new("/d"));
        assert!(text.contains("\nnode.id=2\n"));
        assert!(text.contains(
            "\ncontroller.quorum.voters=1@127.0.0.1:9003,2@127.0.0.1:9005,3@127.0.0.1:9007\n"
        ));
        assert!(!text.contains("controller.quorum.bootstrap.servers"));
        assert!(
            text.contains("\nlisteners=PLAINTEXT://127.0.0.1:9004,CONTROLLER://127.0.0.1:9005\n")
        );
        assert!(text.contains("\noffsets.topic.replication.factor=3\n"));
        assert!(text.contains("\ntransaction.state.log.min.isr=2\n"));
    }
}
