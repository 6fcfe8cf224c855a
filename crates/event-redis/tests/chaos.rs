//! The chaos harness (`event_testkit::chaos`) against Redis: a `redis-server` of this test
//! alone (append-only file, `fsync` on every write, from `EVENTBUS_TEST_REDIS_SERVER`), reached
//! by the buses through a loopback TCP proxy, with consumer processes of the shared handler
//! (this binary run again, see [`chaos_child`]). Faults: consumer processes killed and
//! stopped past the claim idle time, `CLIENT KILL TYPE normal`, the proxy dropping or stalling
//! every connection, and the server killed with SIGKILL and restarted. Foreign entries with
//! missing, extra, binary and non-UTF-8 fields are written into the streams with raw `XADD`.
//!
//! `EVENTBUS_CHAOS_SEED` and `EVENTBUS_CHAOS_SECONDS` replay or lengthen a run
//! (`cargo xtask soak redis`).

mod chaos_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use event_core::{Config, EnvSettings as _, EventBus, EventType};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::chaos::{Abilities, ChaosBackend, Fault, ForeignEntry, TcpProxy};
use fred::prelude::{Builder, Client, ClientLike};
use fred::types::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Mutex;

/// How long a consumer's pending entries wait before another consumer claims them.
const CLAIM_IDLE: Duration = Duration::from_secs(2);

/// A `redis-server` of this test: a free loopback port, its own directory, killed on drop.
struct PrivateRedis {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "eventbus-chaos-redis-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            binary,
            port,
            dir,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !answers_ping(self.port).await {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within 20 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 16];
        let n = stream.read(&mut reply).await?;
        Ok::<_, std::io::Error>(reply[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// The Redis target: the private server, the proxy in front of it, and a client of the
/// test's own that talks to the server directly.
struct Redis {
    server: Mutex<PrivateRedis>,
    proxy: TcpProxy,
    admin: Client,
    config: Config,
    redis: RedisConfig,
}

impl Redis {
    async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let server = PrivateRedis::start(binary).await?;
        let proxy = TcpProxy::start(server.address()).await?;
        let admin = Builder::from_config(fred::types::config::Config::from_url(&format!(
            "redis://127.0.0.1:{}/0",
            server.port
        ))?)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10))
        .set_policy(fred::prelude::ReconnectPolicy::new_constant(0, 200))
        .build()?;
        admin.init().await?;
        let redis = RedisConfig::builder()
            .url(format!("redis://127.0.0.1:{}/0", proxy.port()))
            .key_prefix(event_testkit::unique("chaos"))
            .build()?;
        let mut config = Config::default();
        config.consumer_group = event_testkit::unique("chaos");
        config.claim_idle = CLAIM_IDLE;
        Ok(Self {
            server: Mutex::new(server),
            proxy,
            admin,
            config,
            redis,
        })
    }
}

#[async_trait]
impl ChaosBackend for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn test_target(&self) -> (&'static str, &'static str) {
        ("event-redis", "chaos")
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
                Fault::ProxyDrop,
                Fault::ProxyStall,
                Fault::ServerRestart,
            ],
            consumer_processes: true,
            second_instance: true,
            order_survives_takeover: false,
            rebalance_redelivers: false,
            takeover_after: CLAIM_IDLE,
            slow_call: CLAIM_IDLE + Duration::from_secs(1),
            events_per_second: 400,
            default_seconds: 75,
            quiescence_deadline: Duration::from_secs(120),
        }
    }

    async fn inject(&self, fault: Fault, seed: u64) -> anyhow::Result<String> {
        match fault {
            Fault::ClientKill => {
                let killed: Value = self
                    .admin
                    .custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", "normal"])
                    .await?;
                Ok(format!("CLIENT KILL TYPE normal: {killed:?} connections"))
            }
            Fault::ProxyDrop => {
                self.proxy.drop_connections();
                Ok("the proxy dropped every connection".into())
            }
            Fault::ProxyStall => {
                let pause = Duration::from_millis(2_000 + seed % 10_000);
                self.proxy.stall(pause).await;
                Ok(format!("the proxy forwarded nothing for {pause:?}"))
            }
            Fault::ServerRestart => {
                let mut server = self.server.lock().await;
                server.kill();
                let down = Duration::from_millis(500 + seed % 2_500);
                tokio::time::sleep(down).await;
                server.spawn().await?;
                Ok(format!(
                    "redis-server killed (SIGKILL), restarted after {down:?}"
                ))
            }
            other => bail!("the redis target cannot inject {other:?}"),
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

/// The chaos run against a private `redis-server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() -> anyhow::Result<()> {
    if std::env::var_os(event_testkit::chaos::CHILD_VAR).is_some() {
        return Ok(());
    }
    let Some(binary) = event_testkit::test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let redis = Arc::new(Redis::start(PathBuf::from(binary)).await?);
    let summary = event_testkit::chaos::run(redis).await?;
    anyhow::ensure!(summary.lost == 0, "{} events lost", summary.lost);
    Ok(())
}
