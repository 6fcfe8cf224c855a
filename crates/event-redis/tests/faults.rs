//! Fault tests of the Redis backend with real processes:
//!
//! 1. a consumer *process* killed with SIGKILL mid-batch: a second instance of the same
//!    handler takes over what it left pending (`XPENDING` + `XCLAIM`), nothing is lost;
//! 2. a private `redis-server` (append-only file, `fsync` on every write) killed with SIGKILL
//!    and restarted on the same port and directory while publishers run: the same `RedisBus`
//!    recovers, every publish that returned `Ok` is stored and handled;
//! 3. the consumer's blocked `XREADGROUP` connection killed with `CLIENT KILL ID`: the loop
//!    reconnects and every event is handled.
//!
//! Scenarios 1 and 3 use the shared test server (`EVENTBUS_TEST_REDIS_URL`, the same rule as
//! `conformance.rs`); scenario 2 needs only a `redis-server` binary
//! (`EVENTBUS_TEST_REDIS_SERVER` or `PATH`). Child processes are this test binary run again
//! with `EVENTBUS_FAULT_CHILD` set; see [`fault_child`].

mod common;

use common::{Settings, client_fields, client_list};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use event_core::{
    Event, EventBus, EventType, HandlerError, ReplayQuery, StartFrom, SubscriptionSpec, handler_fn,
};
use event_testkit::{integration_required, test_server};
use fred::prelude::{Builder, Client, ClientLike, KeysInterface, ListInterface, StreamsInterface};
use fred::types::Value;
use futures::TryStreamExt as _;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// Every test ends within this, guards included.
const TEST_BOUND: Duration = Duration::from_secs(55);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);
/// The event source of every event here.
const SOURCE: &str = "eventbus_faults";
/// The longest one command may take in `RedisBus` (its command timeout), plus slack: a publish
/// while the server is down must fail within this, never hang.
const PUBLISH_BOUND: Duration = Duration::from_secs(15);

/// Set (to the role) in the environment of a child process.
const CHILD_VAR: &str = "EVENTBUS_FAULT_CHILD";
/// The child's instance name, written next to each event id it handles.
const CHILD_INSTANCE_VAR: &str = "EVENTBUS_FAULT_INSTANCE";
const CHILD_HANDLER_VAR: &str = "EVENTBUS_FAULT_HANDLER";
const CHILD_EVENT_TYPE_VAR: &str = "EVENTBUS_FAULT_EVENT_TYPE";
/// The Redis list a child appends `{instance} {event id}` to for each event it handles.
const CHILD_LOG_VAR: &str = "EVENTBUS_FAULT_LOG_KEY";
/// A child exits by itself after this, should its parent die without killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Scenario 1: a consumer process killed with SIGKILL mid-batch.
// ---------------------------------------------------------------------------------------------

/// Events published for the killed consumer.
const CRASH_EVENTS: usize = 1000;
/// The first consumer is killed once it has handled this many (the rest are pending).
const CRASH_AFTER: usize = 150;

/// A consumer process is killed with SIGKILL while it holds pending entries; a second process
/// running the same handler takes them over and every event is handled at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_process_is_taken_over() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let suffix = random_suffix();
    let prefix = format!("eventbus-faults-{suffix}");
    let outcome = bounded(killed_consumer_scenario(&url, &prefix, &suffix)).await;
    cleanup(&url, &prefix).await;
    outcome
}

async fn killed_consumer_scenario(url: &str, prefix: &str, suffix: &str) -> anyhow::Result<()> {
    let event_type = EventType::new(format!("f{suffix}.killed"))?;
    let handler = format!("hf{suffix}");
    let log_key = format!("{prefix}:handled");
    let mut config = Settings::default();
    config.redis.url = url.to_string();
    config.redis.key_prefix = prefix.to_string();
    let stream = format!("{prefix}:stream:{event_type}");
    let group = format!("{}.{handler}", config.bus.consumer_group);
    let admin = admin_client(url).await?;
    let bus = config.connect().await?;

    let mut published = HashSet::new();
    for chunk in (0..CRASH_EVENTS).collect::<Vec<_>>().chunks(100) {
        let events = chunk
            .iter()
            .map(|n| numbered(&event_type, *n as u64, Some(format!("k{}", n % 32))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for result in bus.publish_batch(events).await {
            published.insert(result?.to_string());
        }
    }

    let child = |instance: &str| -> anyhow::Result<ChildGuard> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--exact", "fault_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, "consumer")
            .env(CHILD_INSTANCE_VAR, instance)
            .env(CHILD_HANDLER_VAR, &handler)
            .env(CHILD_EVENT_TYPE_VAR, event_type.as_str())
            .env(CHILD_LOG_VAR, &log_key)
            .env("REDIS_URL", url)
            .env("REDIS_KEY_PREFIX", prefix)
            .env("EVENT_CLAIM_IDLE_MS", "500")
            .env("EVENT_HANDLER_CONCURRENCY", "4")
            .env("EVENT_SHUTDOWN_TIMEOUT_MS", "1000");
        ChildGuard::spawn(&format!("consumer {instance}"), command)
    };

    let mut first = child("a")?;
    let started = Instant::now();
    wait_until(
        "the first consumer to handle some events",
        secs(20),
        async || {
            first.check_running()?;
            let log = handled_log(&admin, &log_key).await?;
            Ok(if log.len() >= CRASH_AFTER {
                Wait::Done
            } else {
                Wait::Pending(format!("{} handled", log.len()))
            })
        },
    )
    .await?;
    let pending_before = pending_count(&admin, &stream, &group).await?;
    let status = first.kill()?;
    let killed_at = Instant::now();
    let pending_after = pending_count(&admin, &stream, &group).await?;
    let by_first = handled_log(&admin, &log_key).await?;
    let distinct_by_first: HashSet<&str> = by_first.iter().map(|(_, id)| id.as_str()).collect();
    eprintln!(
        "scenario 1: consumer a killed ({status}) after {:?}: {} events handled, {pending_before} pending before the kill, {pending_after} after",
        killed_at - started,
        distinct_by_first.len()
    );
    ensure!(
        pending_after > 0 && distinct_by_first.len() < CRASH_EVENTS,
        "the consumer was killed with nothing pending ({pending_after} pending, {} handled): the kill did not land mid-batch",
        distinct_by_first.len()
    );

    let mut second = child("b")?;
    let mut all_handled_at = None;
    wait_until(
        "the second consumer to handle every event",
        secs(30),
        async || {
            second.check_running()?;
            let log = handled_log(&admin, &log_key).await?;
            let distinct: HashSet<&str> = log.iter().map(|(_, id)| id.as_str()).collect();
            if let Some(stranger) = distinct.iter().find(|id| !published.contains(**id)) {
                bail!("event {stranger} was handled but never published");
            }
            Ok(if distinct.len() == published.len() {
                all_handled_at = Some(Instant::now());
                Wait::Done
            } else {
                Wait::Pending(format!("{} of {} handled", distinct.len(), published.len()))
            })
        },
    )
    .await?;
    wait_until("every entry to be acknowledged", secs(20), async || {
        second.check_running()?;
        let pending = pending_count(&admin, &stream, &group).await?;
        Ok(if pending == 0 {
            Wait::Done
        } else {
            Wait::Pending(format!("{pending} pending"))
        })
    })
    .await?;
    second.kill()?;

    let log = handled_log(&admin, &log_key).await?;
    let mut by_instance: HashMap<&str, usize> = HashMap::new();
    let mut distinct = HashSet::new();
    for (instance, id) in &log {
        *by_instance.entry(instance.as_str()).or_default() += 1;
        distinct.insert(id.as_str());
    }
    let missing = published
        .iter()
        .filter(|id| !distinct.contains(id.as_str()))
        .count();
    ensure!(
        missing == 0,
        "{missing} published events were never handled"
    );
    let dead_letters = admin
        .xlen::<u64, _>(format!("{prefix}:dlq:{group}"))
        .await?;
    ensure!(
        dead_letters == 0,
        "{dead_letters} events were dead-lettered instead of handled"
    );
    eprintln!(
        "scenario 1: {} events, {} handlings ({} by a, {} by b), {} duplicates; all handled {:?} after the kill",
        published.len(),
        log.len(),
        by_instance.get("a").copied().unwrap_or(0),
        by_instance.get("b").copied().unwrap_or(0),
        log.len() - distinct.len(),
        all_handled_at.map(|t| t - killed_at).unwrap_or_default()
    );
    bus.shutdown().await?;
    Ok(())
}

/// The child side of the fault tests: does nothing unless `EVENTBUS_FAULT_CHILD` is set, as it
/// is when a scenario runs this binary again as a child process.
#[test]
fn fault_child() {
    let Ok(role) = std::env::var(CHILD_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("the child cannot start a runtime: {e}"));
    let outcome = runtime.block_on(async {
        match role.as_str() {
            "consumer" => consumer_child().await,
            other => bail!("unknown {CHILD_VAR} role {other:?}"),
        }
    });
    if let Err(e) = outcome {
        eprintln!("fault child ({role}) failed: {e:#}");
        std::process::exit(2);
    }
}

/// Subscribes the recording handler (configured from the environment: `REDIS_URL`,
/// `EVENT_CLAIM_IDLE_MS`, ...) and runs until killed.
async fn consumer_child() -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let instance = var(CHILD_INSTANCE_VAR)?;
    let handler = var(CHILD_HANDLER_VAR)?;
    let event_type = EventType::new(var(CHILD_EVENT_TYPE_VAR)?)?;
    let log_key = var(CHILD_LOG_VAR)?;
    let config = Settings::from_env()?;
    let recorder = admin_client(&config.redis.url).await?;
    let bus = config.connect().await?;
    let handle = handler_fn(handler.clone(), move |event| {
        let recorder = recorder.clone();
        let log_key = log_key.clone();
        let entry = format!("{instance} {}", event.id);
        async move {
            // A few milliseconds of work, then the durable record, then success.
            tokio::time::sleep(Duration::from_millis(3)).await;
            recorder
                .rpush::<i64, _, _>(log_key.as_str(), entry)
                .await
                .map_err(HandlerError::transient)?;
            Ok(())
        }
    });
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new(handler, [event_type]).start_from(StartFrom::Earliest),
            handle,
        )
        .await?;
    tokio::time::sleep(CHILD_LIFETIME).await;
    ensure!(
        subscription.is_active(),
        "the subscription stopped by itself"
    );
    Ok(())
}

/// The `(instance, event id)` records of the handled-events list.
async fn handled_log(admin: &Client, key: &str) -> anyhow::Result<Vec<(String, String)>> {
    let entries: Vec<String> = admin.lrange(key, 0, -1).await?;
    Ok(entries
        .into_iter()
        .map(|entry| match entry.split_once(' ') {
            Some((instance, id)) => (instance.to_string(), id.to_string()),
            None => (String::new(), entry),
        })
        .collect())
}

/// `XPENDING key group`: the number of entries delivered and not acknowledged.
async fn pending_count(admin: &Client, stream: &str, group: &str) -> anyhow::Result<u64> {
    let summary: Value = admin
        .custom(fred::cmd!("XPENDING"), vec![stream, group])
        .await?;
    summary
        .into_array()
        .first()
        .and_then(Value::as_u64)
        .context("XPENDING answered without a count")
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: redis-server killed and restarted while publishers run.
// ---------------------------------------------------------------------------------------------

/// Concurrent publishers.
const PUBLISHERS: usize = 3;
/// Successful publishes each publisher makes after recovery before the run ends.
const AFTER_RECOVERY: usize = 100;

/// One publish attempt.
struct PublishRecord {
    publisher: usize,
    started: Instant,
    elapsed: Duration,
    /// The event id, or the error's message.
    result: Result<String, String>,
}

/// The redis-server is killed (SIGKILL) and restarted on the same port and data directory
/// while publishers run and a consumer consumes; the same `RedisBus` recovers, every publish
/// that returned `Ok` is stored and handled, and publishes after the restart succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_while_publishing() -> anyhow::Result<()> {
    let Some(binary) = redis_server_binary()? else {
        return Ok(());
    };
    bounded(redis_restart_scenario(binary)).await
}

async fn redis_restart_scenario(binary: PathBuf) -> anyhow::Result<()> {
    let suffix = random_suffix();
    let mut server = PrivateRedis::start(binary)?;
    server.wait_ready(secs(10)).await?;
    let event_type = EventType::new(format!("f{suffix}.restart"))?;
    let handler = format!("hf{suffix}");
    let mut config = Settings::default();
    config.redis.url = server.url();
    config.redis.key_prefix = format!("eventbus-faults-{suffix}");
    // Entries whose delivery or acknowledgement was lost with the server are taken over again
    // after this long.
    config.bus.claim_idle = Duration::from_millis(1000);
    let bus = config.connect().await?;
    let test_start = OffsetDateTime::now_utc();

    let handled: Arc<Mutex<HashMap<String, (u32, Instant)>>> = Arc::default();
    let recorded = handled.clone();
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()])
                .start_from(StartFrom::Earliest)
                .concurrency(4),
            handler_fn(handler.clone(), move |event| {
                let recorded = recorded.clone();
                async move {
                    lock(&recorded)
                        .entry(event.id.to_string())
                        .and_modify(|(times, _)| *times += 1)
                        .or_insert((1, Instant::now()));
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;

    let records: Arc<Mutex<Vec<PublishRecord>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let bus = bus.clone();
            let event_type = event_type.clone();
            let records = records.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let event = numbered(&event_type, n, Some(format!("p{publisher}")))?;
                    let started = Instant::now();
                    let result = bus.publish(event).await;
                    lock(&records).push(PublishRecord {
                        publisher,
                        started,
                        elapsed: started.elapsed(),
                        result: result.map(|id| id.to_string()).map_err(|e| e.to_string()),
                    });
                    // Pacing, not synchronisation: a steady load rather than a flood.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let ok_count = |records: &[PublishRecord], after: Option<Instant>, publisher: usize| {
        records
            .iter()
            .filter(|r| r.publisher == publisher && r.result.is_ok())
            .filter(|r| after.is_none_or(|t| r.started >= t))
            .count()
    };

    wait_until("publishing and consuming to run", secs(20), async || {
        let oks: usize = (0..PUBLISHERS)
            .map(|p| ok_count(&lock(&records), None, p))
            .sum();
        let consumed = lock(&handled).len();
        Ok(if oks >= 300 && consumed >= 100 {
            Wait::Done
        } else {
            Wait::Pending(format!("{oks} published, {consumed} handled"))
        })
    })
    .await?;

    server.kill()?;
    let killed_at = Instant::now();
    let before_kill = lock(&records).iter().filter(|r| r.result.is_ok()).count();
    // The deliberate outage: publishers and the consumer run against a dead server.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.respawn()?;
    server.wait_ready(secs(10)).await?;
    let ready_at = Instant::now();

    let mut recovered_at = ready_at;
    wait_until("every publisher to publish again", secs(30), async || {
        let waiting: Vec<usize> = (0..PUBLISHERS)
            .filter(|p| ok_count(&lock(&records), Some(ready_at), *p) == 0)
            .collect();
        Ok(if waiting.is_empty() {
            recovered_at = Instant::now();
            Wait::Done
        } else {
            Wait::Pending(format!("publishers {waiting:?} have not published since"))
        })
    })
    .await?;
    wait_until("publishers to run after recovery", secs(30), async || {
        let counts: Vec<usize> = (0..PUBLISHERS)
            .map(|p| ok_count(&lock(&records), Some(recovered_at), p))
            .collect();
        Ok(if counts.iter().all(|c| *c >= AFTER_RECOVERY) {
            Wait::Done
        } else {
            Wait::Pending(format!("successful publishes since recovery: {counts:?}"))
        })
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await??;
    }
    let stopped_at = Instant::now();

    let records = std::mem::take(&mut *lock(&records));
    let ok_ids: HashSet<String> = records
        .iter()
        .filter_map(|r| r.result.as_ref().ok().cloned())
        .collect();
    let errors: Vec<&PublishRecord> = records.iter().filter(|r| r.result.is_err()).collect();
    let slowest = records.iter().map(|r| r.elapsed).max().unwrap_or_default();
    ensure!(
        slowest < PUBLISH_BOUND,
        "a publish took {slowest:?}: publishes while the server is down must fail within the command timeout"
    );
    if let Some(late) = errors.iter().find(|r| r.started >= recovered_at) {
        bail!(
            "a publish after recovery failed ({:?} after the restart): {}",
            late.started - ready_at,
            late.result.as_ref().err().map_or("", String::as_str)
        );
    }

    // Every successful publish is stored.
    let stored: HashSet<String> = bus
        .replay(ReplayQuery::new(
            [event_type.clone()],
            test_start - time::Duration::minutes(1),
        ))
        .await?
        .map_ok(|event| event.id.to_string())
        .try_collect()
        .await?;
    let lost: Vec<&String> = ok_ids.iter().filter(|id| !stored.contains(*id)).collect();
    ensure!(
        lost.is_empty(),
        "{} publishes returned Ok but are not in the stream after the restart, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    // ... and handled by the consumer, which kept running on the same bus.
    wait_until(
        "the consumer to handle every stored event",
        secs(30),
        async || {
            let handled = lock(&handled);
            let missing = ok_ids
                .iter()
                .filter(|id| !handled.contains_key(*id))
                .count();
            Ok(if missing == 0 {
                Wait::Done
            } else {
                Wait::Pending(format!("{missing} of {} not handled", ok_ids.len()))
            })
        },
    )
    .await?;
    let caught_up_at = Instant::now();
    ensure!(
        subscription.is_active(),
        "the subscription stopped during the outage"
    );
    let dead = bus.dead_letters(&handler, 10).await?;
    ensure!(
        dead.is_empty(),
        "events were dead-lettered: {:?}",
        dead.first().map(|d| &d.last_error)
    );

    let handled = std::mem::take(&mut *lock(&handled));
    let duplicates: u32 = handled.values().map(|(times, _)| times - 1).sum();
    let first_handled_after_restart = records
        .iter()
        .filter(|r| r.started >= ready_at)
        .filter_map(|r| handled.get(r.result.as_ref().ok()?))
        .map(|(_, at)| *at)
        .min();
    eprintln!(
        "scenario 2: {} publishes, {} Ok ({before_kill} before the kill), {} errors (slowest publish {slowest:?}); \
         server back {:?} after the kill, publishers recovered {:?} after that, consumer handled a new event {:?} after that; \
         {} handled, {duplicates} duplicates, consumer caught up {:?} after the publishers stopped",
        records.len(),
        ok_ids.len(),
        errors.len(),
        ready_at - killed_at,
        recovered_at - ready_at,
        first_handled_after_restart.map(|t| t.saturating_duration_since(ready_at)),
        handled.len(),
        caught_up_at - stopped_at,
    );
    bus.shutdown().await?;
    Ok(())
}

/// A `redis-server` of this test alone: a free loopback port, an append-only file synced on
/// every write, in a temporary directory. Killed and its directory removed on drop.
struct PrivateRedis {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    process: Option<ChildGuard>,
}

impl PrivateRedis {
    fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "eventbus-faults-redis-{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let mut server = Self {
            binary,
            port,
            dir,
            process: None,
        };
        server.respawn()?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and directory.
    fn respawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path());
        self.process = Some(ChildGuard::spawn("redis-server", command)?);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Waits until the server answers `PING` (not `-LOADING`).
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let port = self.port;
        let log = self.log_path();
        let process = self
            .process
            .as_mut()
            .context("redis-server is not running")?;
        wait_until(
            &format!("redis-server on port {port}"),
            timeout,
            async || {
                if let Err(e) = process.check_running() {
                    bail!("{e:#}; its log ends with:\n{}", log_tail(&log));
                }
                Ok(if answers_ping(port).await {
                    Wait::Done
                } else {
                    Wait::Pending("no PONG".into())
                })
            },
        )
        .await
    }

    /// SIGKILL: no shutdown, no final save.
    fn kill(&mut self) -> anyhow::Result<()> {
        let mut process = self.process.take().context("redis-server is not running")?;
        process.kill()?;
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server on the port answers `PING` with `PONG`.
async fn answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).await?;
        Ok::<_, std::io::Error>(reply[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The `redis-server` to run: `EVENTBUS_TEST_REDIS_SERVER`, else the one on `PATH`. Missing, it
/// fails an integration run and skips otherwise.
fn redis_server_binary() -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("EVENTBUS_TEST_REDIS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "EVENTBUS_TEST_REDIS_SERVER={} is not a file",
            path.display()
        );
        return Ok(Some(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => Ok(Some(path)),
        None if integration_required() => bail!(
            "redis-server is not installed: install it (Debian: `apt-get install redis-server`) \
             or set EVENTBUS_TEST_REDIS_SERVER to its path"
        ),
        None => {
            eprintln!(
                "SKIPPED: no redis-server on PATH (install it, or set EVENTBUS_TEST_REDIS_SERVER)"
            );
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: CLIENT KILL of the consumer's connection.
// ---------------------------------------------------------------------------------------------

/// Times the reader connection is killed.
const KILL_ROUNDS: usize = 3;
/// Events published per round.
const ROUND_EVENTS: u64 = 25;

/// The consumer's blocked `XREADGROUP` connection is killed (`CLIENT KILL ID`) several times;
/// each time the loop reconnects and every event, including those published right after the
/// kill, is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_reader_connection_resumes() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    // A database of its own, so the connections to kill are found by `db=` and no other
    // suite's connection on the shared server is touched.
    let url = url_with_own_database(&url)?;
    let suffix = random_suffix();
    let prefix = format!("eventbus-faults-{suffix}");
    let outcome = bounded(killed_reader_scenario(&url, &prefix, &suffix)).await;
    cleanup(&url, &prefix).await;
    outcome
}

async fn killed_reader_scenario(url: &str, prefix: &str, suffix: &str) -> anyhow::Result<()> {
    let event_type = EventType::new(format!("f{suffix}.reader"))?;
    let handler = format!("hf{suffix}");
    let mut config = Settings::default();
    config.redis.url = url.to_string();
    config.redis.key_prefix = prefix.to_string();
    // An `XREADGROUP` reply lost with the connection leaves entries pending: taken over after
    // this long.
    config.bus.claim_idle = Duration::from_millis(1000);
    let stream = format!("{prefix}:stream:{event_type}");
    let group = format!("{}.{handler}", config.bus.consumer_group);
    let admin = admin_client(url).await?;
    let db: Value = admin.custom(fred::cmd!("CLIENT"), vec!["INFO"]).await?;
    let db = client_fields(&db.as_string().unwrap_or_default())
        .remove("db")
        .context("CLIENT INFO without db")?;
    let bus = config.connect().await?;

    let handled: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let recorded = handled.clone();
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()])
                .start_from(StartFrom::Earliest)
                .concurrency(4),
            handler_fn(handler.clone(), move |event| {
                let recorded = recorded.clone();
                async move {
                    *lock(&recorded).entry(event.id.to_string()).or_default() += 1;
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;

    let mut published = HashSet::new();
    let mut n = 0;
    let mut publish_round = async |published: &mut HashSet<String>| -> anyhow::Result<()> {
        for _ in 0..ROUND_EVENTS {
            n += 1;
            published.insert(
                bus.publish(numbered(&event_type, n, None)?)
                    .await?
                    .to_string(),
            );
        }
        Ok(())
    };
    let all_handled = |published: &HashSet<String>| {
        let handled = lock(&handled);
        let missing = published
            .iter()
            .filter(|id| !handled.contains_key(*id))
            .count();
        if missing == 0 {
            Wait::Done
        } else {
            Wait::Pending(format!("{missing} of {} not handled", published.len()))
        }
    };

    publish_round(&mut published).await?;
    wait_until("the first events to be handled", secs(20), async || {
        Ok(all_handled(&published))
    })
    .await?;
    let mut recoveries = Vec::new();
    let mut previous_readers: HashSet<String> = HashSet::new();
    for round in 1..=KILL_ROUNDS {
        // The reader blocked in XREADGROUP (a new connection after each kill).
        let mut readers = Vec::new();
        wait_until("the reader to block in XREADGROUP", secs(20), async || {
            readers = blocked_readers(&admin, &db)
                .await?
                .into_iter()
                .filter(|id| !previous_readers.contains(id))
                .collect();
            Ok(if readers.is_empty() {
                Wait::Pending("no new connection blocked in XREADGROUP".into())
            } else {
                Wait::Done
            })
        })
        .await?;
        let mut killed = 0;
        for id in &readers {
            let count: Value = admin
                .custom(fred::cmd!("CLIENT"), vec!["KILL", "ID", id.as_str()])
                .await?;
            killed += count.as_u64().unwrap_or(0);
        }
        ensure!(killed > 0, "round {round}: no reader connection was killed");
        let killed_at = Instant::now();
        previous_readers.extend(readers);
        publish_round(&mut published).await?;
        wait_until(
            &format!("round {round}: every event to be handled after the kill"),
            secs(20),
            async || Ok(all_handled(&published)),
        )
        .await?;
        recoveries.push(killed_at.elapsed());
    }
    wait_until("every entry to be acknowledged", secs(20), async || {
        let pending = pending_count(&admin, &stream, &group).await?;
        Ok(if pending == 0 {
            Wait::Done
        } else {
            Wait::Pending(format!("{pending} pending"))
        })
    })
    .await?;
    ensure!(
        subscription.is_active(),
        "the subscription stopped after its connection was killed"
    );
    let duplicates: u32 = lock(&handled).values().map(|times| times - 1).sum();
    eprintln!(
        "scenario 3: {} events over {KILL_ROUNDS} connection kills, {duplicates} duplicates; each round handled in {recoveries:?} after its kill",
        published.len()
    );
    bus.shutdown().await?;
    Ok(())
}

/// The ids of the connections on database `db` whose last command is `XREADGROUP` and that
/// are blocked in it.
async fn blocked_readers(admin: &Client, db: &str) -> anyhow::Result<Vec<String>> {
    Ok(client_list(admin)
        .await?
        .into_iter()
        .filter(|c| {
            c.get("db").is_some_and(|d| d == db)
                && c.get("cmd").is_some_and(|cmd| cmd == "xreadgroup")
                && c.get("flags").is_some_and(|flags| flags.contains('b'))
        })
        .filter_map(|mut c| c.remove("id"))
        .collect())
}

/// The URL with its database replaced by one the other suites do not use (15, or 14 when
/// the URL already names 15).
fn url_with_own_database(url: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("EVENTBUS_TEST_REDIS_URL {url:?} is not a redis:// URL"))?;
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let (authority, db) = match location.split_once('/') {
        Some((authority, db)) => (authority, db.parse::<u8>().unwrap_or(0)),
        None => (location, 0),
    };
    let own = if db == 15 { 14 } else { 15 };
    let mut out = format!("{scheme}://{authority}/{own}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.
// ---------------------------------------------------------------------------------------------

/// Runs a scenario within [`TEST_BOUND`]; its guards kill what it started either way.
async fn bounded(scenario: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    match tokio::time::timeout(TEST_BOUND, scenario).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("the scenario did not finish within {TEST_BOUND:?}"),
    }
}

/// Deletes every key under the prefix (best effort: a failed cleanup fails no test).
async fn cleanup(url: &str, prefix: &str) {
    let Ok(admin) = admin_client(url).await else {
        return;
    };
    let mut cursor = "0".to_string();
    loop {
        let reply: Result<Value, _> = admin
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), format!("{prefix}:*")],
            )
            .await;
        let Ok(reply) = reply else { break };
        let mut parts = reply.into_array().into_iter();
        cursor = parts
            .next()
            .and_then(|c| c.as_string())
            .unwrap_or_else(|| "0".into());
        let keys: Vec<String> = parts
            .next()
            .map(Value::into_array)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        if !keys.is_empty() {
            let _: Result<Value, _> = admin.del(keys).await;
        }
        if cursor == "0" {
            break;
        }
    }
    let _ = admin.quit().await;
}

/// A plain client for the test's own reads and writes, with a command timeout.
async fn admin_client(url: &str) -> anyhow::Result<Client> {
    let config = fred::types::config::Config::from_url(url)?;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()?;
    tokio::time::timeout(Duration::from_secs(10), client.init())
        .await
        .context("connecting the test's own client timed out")??;
    Ok(client)
}

/// A child process, killed with SIGKILL and reaped when dropped (also when a test fails).
struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// Fails if the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} was already killed", self.name))?;
        if let Some(status) = child.try_wait()? {
            bail!("{} exited unexpectedly ({status})", self.name);
        }
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} was already killed", self.name))?;
        child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        Ok(child.wait()?)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a polled condition found.
enum Wait {
    Done,
    /// Not yet; the text says where things stand, for the timeout message.
    Pending(String),
}

/// Polls `check` until it is done, failing after `timeout` with the last status.
async fn wait_until<F>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<Wait>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await? {
            Wait::Done => return Ok(()),
            Wait::Pending(status) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}: {status}")
            }
            Wait::Pending(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// An event with payload `{"n": n}` and an optional partition key.
fn numbered(event_type: &EventType, n: u64, key: Option<String>) -> anyhow::Result<Event> {
    let mut builder = Event::builder(event_type.clone(), SOURCE).field("n", n);
    if let Some(key) = key {
        builder = builder.partition_key(key);
    }
    Ok(builder.build()?)
}

fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// A slow handler keeps its claims: a second instance does not take over its events.
// ---------------------------------------------------------------------------------------------

/// Two instances of one handler (two buses, as two processes would be) with
/// `EVENT_CLAIM_IDLE_MS` of 300 ms; each event takes 1.2 s. The instance working on an event
/// keeps resetting its idle time, so the other never claims it: each event is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_keeps_its_claims() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let suffix = random_suffix();
    let prefix = format!("eventbus-faults-slow-{suffix}");
    let outcome = bounded(slow_handler_scenario(&url, &prefix, &suffix)).await;
    cleanup(&url, &prefix).await;
    outcome
}

async fn slow_handler_scenario(url: &str, prefix: &str, suffix: &str) -> anyhow::Result<()> {
    let mut config = Settings::default();
    config.redis.url = url.to_string();
    config.redis.key_prefix = prefix.to_string();
    config.bus.claim_idle = Duration::from_millis(300);
    let event_type = EventType::new(format!("slow{suffix}.created"))?;
    let handler_name = format!("slow{suffix}");
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut buses = Vec::new();
    for _ in 0..2 {
        let bus = config.connect().await?;
        let calls = calls.clone();
        let handler = handler_fn(handler_name.clone(), move |event: Arc<Event>| {
            let calls = calls.clone();
            async move {
                lock(&calls).push(event.id.to_string());
                tokio::time::sleep(Duration::from_millis(1200)).await;
                Ok::<(), HandlerError>(())
            }
        });
        let spec = SubscriptionSpec::new(handler_name.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest)
            .concurrency(2);
        bus.subscribe(spec, handler).await?;
        buses.push(bus);
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..4 {
            ids.push(
                buses[0]
                    .publish(numbered(&event_type, n, None)?)
                    .await?
                    .to_string(),
            );
        }
        ids
    };
    let group = format!("{}.{handler_name}", config.bus.consumer_group);
    let stream = format!("{prefix}:stream:{event_type}");
    let admin = admin_client(url).await?;
    wait_until(
        "every slow event is handled and acknowledged",
        secs(30),
        async || {
            let handled = lock(&calls).len();
            let pending = pending_count(&admin, &stream, &group).await?;
            if handled >= ids.len() && pending == 0 {
                Ok(Wait::Done)
            } else {
                Ok(Wait::Pending(format!("{handled} calls, {pending} pending")))
            }
        },
    )
    .await?;
    let calls = lock(&calls).clone();
    let mut unique = calls.clone();
    unique.sort();
    unique.dedup();
    ensure!(
        calls.len() == ids.len() && unique.len() == ids.len(),
        "{} calls for {} events: a live consumer's events were taken over ({calls:?})",
        calls.len(),
        ids.len()
    );
    for bus in &buses {
        bus.shutdown().await?;
    }
    let _ = admin.quit().await;
    Ok(())
}
