//! The harness of the security tests: a private single-node KRaft broker with a
//! `SASL_PLAINTEXT` or `SASL_SSL` client listener, killed and removed on drop (also when a test
//! fails), and throwaway certificates made with `openssl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;

/// The SASL user of every mechanism.
pub(crate) const USER: &str = "app";

/// A broker whose client listener (`SASL_PLAINTEXT`, or `SASL_SSL` with TLS) accepts `PLAIN` for [`USER`] with
/// `password`, and `SCRAM-SHA-256` and `SCRAM-SHA-512` for [`USER`] with the same password
/// (created when its storage is formatted). Controller and inter-broker listeners are
/// `PLAINTEXT`, on ports of their own.
pub(crate) struct SaslBroker {
    dir: PathBuf,
    pub(crate) port: u16,
    child: Child,
    /// With TLS: the PEM file of the CA that signed the broker's certificate.
    pub(crate) ca_file: Option<PathBuf>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl SaslBroker {
    /// Formats a fresh log directory and starts the broker; it answers some seconds later
    /// (the caller waits by connecting). With `openssl` (a path to the program), the client
    /// listener is `SASL_SSL` with a certificate for `127.0.0.1` and `localhost` signed by a
    /// throwaway CA.
    pub(crate) fn start(
        classpath: &str,
        password: &str,
        openssl: Option<&Path>,
    ) -> anyhow::Result<Self> {
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
        let tls = openssl
            .map(|openssl| Certificates::create(openssl, &dir))
            .transpose()?;
        std::fs::write(
            dir.join("server.properties"),
            properties(
                port,
                internal,
                controller,
                &dir.join("data"),
                password,
                tls.as_ref(),
            ),
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
        Ok(Self {
            dir,
            port,
            child,
            ca_file: tls.map(|tls| tls.ca),
        })
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

fn properties(
    port: u16,
    internal: u16,
    controller: u16,
    data: &Path,
    password: &str,
    tls: Option<&Certificates>,
) -> String {
    let (listener, ssl) = match tls {
        None => ("SASL_PLAINTEXT", String::new()),
        // Kafka reads a PEM \"keystore\": the unencrypted PKCS#8 key and the certificate.
        Some(tls) => (
            "SASL_SSL",
            format!(
                "ssl.keystore.type=PEM\nssl.keystore.location={}\nssl.client.auth=none\n",
                tls.server_pem.display()
            ),
        ),
    };
    let name = listener.to_ascii_lowercase();
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners={listener}://127.0.0.1:{port},BROKER://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={listener}://127.0.0.1:{port},BROKER://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
inter.broker.listener.name=BROKER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,{listener}:{listener}
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.{name}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{password}\";
listener.name.{name}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.{name}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
{ssl}log.dirs={data}
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

/// `openssl` on the `PATH`.
pub(crate) fn openssl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("openssl"))
        .find(|candidate| candidate.is_file())
}

/// A throwaway CA and the broker's PEM key store (`event_testkit::tls`).
struct Certificates {
    ca: PathBuf,
    /// The broker's private key (PKCS#8) followed by its certificate.
    server_pem: PathBuf,
}

impl Certificates {
    fn create(openssl: &Path, dir: &Path) -> anyhow::Result<Self> {
        let made = event_testkit::tls::Certificates::create(openssl, dir, "broker")?;
        Ok(Self {
            server_pem: made.server_pem(openssl)?,
            ca: made.ca,
        })
    }
}

/// How long a test may wait for its broker to answer: a cold JVM on a busy two-core machine.
pub(crate) const BROKER_START: Duration = Duration::from_secs(60);
