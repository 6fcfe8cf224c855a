//! The broker killed and restarted while publishers and a consumer run: every publish that
//! returned success is handled afterwards, nothing is lost. The test runs a broker of its own
//! (the shared test broker must not be stopped under other tests), from the Kafka jars of
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`, with Java from `JAVA_HOME` or the `PATH`.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Settings;

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use event_core::{
    Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;

/// A single-node KRaft broker in a temporary folder, stopped and removed on drop.
struct Broker {
    java: PathBuf,
    classpath: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Broker {
    fn start(classpath: String) -> anyhow::Result<Self> {
        let java = match std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join("bin").join("java"),
            None => PathBuf::from("java"),
        };
        let dir = std::env::temp_dir().join(format!(
            "eventbus-kafka-restart-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        let (port, controller) = (free_port()?, free_port()?);
        std::fs::write(
            dir.join("server.properties"),
            properties(port, controller, &dir.join("data")),
        )?;
        let mut id = [0u8; 16];
        fastrand::fill(&mut id);
        id[0] &= 0x7f;
        let cluster = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let status = Command::new(&java)
            .args([
                "-Xmx256m",
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
            ])
            .args(["--cluster-id", &cluster, "--config"])
            .arg(dir.join("server.properties"))
            .arg("--standalone")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {} (set JAVA_HOME?)", java.display()))?;
        ensure!(status.success(), "formatting the broker's storage failed");
        let mut broker = Self {
            java,
            classpath,
            dir,
            port,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))?;
        let child = Command::new(&self.java)
            .args(["-Xmx384m", "-cp", &self.classpath, "kafka.Kafka"])
            .arg(self.dir.join("server.properties"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn properties(port: u16, controller: u16, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
",
        data = data.display()
    )
}

async fn connect(config: &Settings) -> anyhow::Result<KafkaBus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match config.connect().await {
            Ok(bus) => return Ok(bus),
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context("the broker did not come up"),
        }
    }
}

#[tokio::test]
async fn nothing_published_is_lost_when_the_broker_restarts() -> anyhow::Result<()> {
    // Run where the shared broker runs, that is in integration runs, with the jars at hand.
    if event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?.is_none() {
        return Ok(());
    }
    let Some(classpath) = std::env::var("EVENTBUS_TEST_KAFKA_CLASSPATH")
        .ok()
        .filter(|c| !c.is_empty())
    else {
        ensure!(
            !event_testkit::integration_required(),
            "EVENTBUS_TEST_KAFKA_CLASSPATH is not set: run `cargo xtask test`"
        );
        eprintln!("SKIPPED: no EVENTBUS_TEST_KAFKA_CLASSPATH");
        return Ok(());
    };
    let mut broker = Broker::start(classpath)?;
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = vec![broker.address()];
    config.kafka.topic_prefix = "restart".into();
    let bus = Arc::new(connect(&config).await?);
    let event_type = EventType::new("test.restarted")?;
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let record = handled.clone();
    bus.subscribe(
        SubscriptionSpec::new("survivor", [event_type.clone()]).start_from(StartFrom::Earliest),
        handler_fn("survivor", move |event: Arc<Event>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().insert(event.id);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;

    // Two publishers go on through the outage; only what they were told succeeded counts.
    let running = Arc::new(AtomicBool::new(true));
    let published = Arc::new(Mutex::new(Vec::<EventId>::new()));
    let mut publishers = Vec::new();
    for n in 0..2 {
        let (bus, running, published, event_type) = (
            bus.clone(),
            running.clone(),
            published.clone(),
            event_type.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(Ordering::Acquire) {
                let event = Event::builder(event_type.clone(), "restart_test")
                    .partition_key(format!("p{n}-{}", i % 5))
                    .build()
                    .expect("a valid event");
                if let Ok(id) = bus.publish(event).await {
                    published.lock().unwrap().push(id);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.spawn()?;
    // Publishing resumes once the broker is back.
    let before = published.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while published.lock().unwrap().len() < before + 50 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume after the broker restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::Release);
    for p in publishers {
        p.await?;
    }
    let published: Vec<EventId> = published.lock().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let handled = handled.lock().unwrap();
            published.iter().filter(|id| !handled.contains(id)).count()
        };
        if missing == 0 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} published events were never handled after the broker restarted",
            published.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} events published with success across the restart, all handled",
        published.len()
    );
    bus.shutdown().await?;
    Ok(())
}
