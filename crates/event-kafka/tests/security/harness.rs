//! The harness of the security tests: a private single-node KRaft broker with a
//! `SASL_PLAINTEXT` client listener, killed and removed on drop (also when a test fails), and
//! the captured logs of the test binary.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;

/// The SASL user of every mechanism.
pub(crate) const USER: &str = "app";

/// A broker whose client listener (`SASL_PLAINTEXT`) accepts `PLAIN` for [`USER`] with
/// `password`, and `SCRAM-SHA-256` and `SCRAM-SHA-512` for [`USER`] with the same password
/// (created when its storage is formatted). Controller and inter-broker listeners are
/// `PLAINTEXT`, on ports of their own.
pub(crate) struct SaslBroker {
    dir: PathBuf,
    pub(crate) port: u16,
    child: Child,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl SaslBroker {
    /// Formats a fresh log directory and starts the broker; it answers some seconds later
    /// (the caller waits by connecting).
    pub(crate) fn start(classpath: &str, password: &str) -> anyhow::Result<Self> {
        let java = match std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join("bin").join("java"),
            None => PathBuf::from("java"),
        };
        let dir = std::env::temp_dir().join(format!(
            "eventbus-kafka-security-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        // Removes `dir` if anything below fails before the broker runs.
        struct Cleanup(PathBuf, bool);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = std::fs::remove_dir_all(&self.0);
                }
            }
        }
        let mut cleanup = Cleanup(dir.clone(), false);
        let (port, internal, controller) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            dir.join("server.properties"),
            properties(port, internal, controller, &dir.join("data"), password),
        )?;
        let mut id = [0u8; 16];
        fastrand::fill(&mut id);
        id[0] &= 0x7f;
        let cluster = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let output = Command::new(&java)
            .args([
                "-Xmx256m",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
            ])
            .args(["--cluster-id", &cluster, "--config"])
            .arg(dir.join("server.properties"))
            .arg("--standalone")
            .args([
                "--add-scram",
                &format!("SCRAM-SHA-256=[name={USER},password={password}]"),
            ])
            .args([
                "--add-scram",
                &format!("SCRAM-SHA-512=[name={USER},password={password}]"),
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} (set JAVA_HOME?)", java.display()))?;
        ensure!(
            output.status.success(),
            "formatting the broker's storage failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).replace(password, "<PASSWORD>")
        );
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let child = Command::new(&java)
            .args(["-Xmx384m", "-cp", classpath, "kafka.Kafka"])
            .arg(dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the broker with {}", java.display()))?;
        cleanup.1 = true;
        Ok(Self { dir, port, child })
    }

    /// `127.0.0.1:<port>` of the `SASL_PLAINTEXT` listener.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Fails, with the end of the broker's log, when the broker has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("the broker exited ({status}):\n{tail}");
        }
        Ok(())
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn properties(port: u16, internal: u16, controller: u16, data: &Path, password: &str) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://127.0.0.1:{port},BROKER://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port},BROKER://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
inter.broker.listener.name=BROKER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{password}\";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
offsets.topic.num.partitions=3
transaction.state.log.num.partitions=3
group.initial.rebalance.delay.ms=0
",
        data = data.display()
    )
}

/// How long a test may wait for its broker to answer: a cold JVM on a busy two-core machine.
pub(crate) const BROKER_START: Duration = Duration::from_secs(60);

/// Everything logged by this test binary at any level, through `tracing` (which rskafka and
/// the bus use).
pub(crate) fn captured_logs() -> &'static SharedBuffer {
    static LOGS: OnceLock<SharedBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = SharedBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test binary installs no other subscriber");
        buffer
    })
}

#[derive(Clone, Default)]
pub(crate) struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
