//! Consumer processes: the backend's chaos test binary run again with
//! `EVENTBUS_CHAOS_CHILD` set, so that its `chaos_child` test becomes one more consumer of the
//! shared handler's group. Each writes what its handler does (and its health) as JSON lines
//! to a file of its own, flushed line by line, so a process killed with SIGKILL leaves
//! exactly what it did. The parent kills, stops (SIGSTOP) and continues (SIGCONT) them.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use event_core::{Config, EventBus, EventType, SubscriptionSpec};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::behaviour::{ChaosHandler, DeliveryLog, Profile, quiet_deliberate_panics};
use super::history::{
    ActivityRecord, ChildLine, DeliveryRecord, HealthRecord, StartSpec, SubscriptionRecord, now_ms,
};

/// Set, to the consumer's settings as JSON, in the environment of a consumer process.
pub const CHILD_VAR: &str = "EVENTBUS_CHAOS_CHILD";
/// The name of the test a backend's chaos target runs [`child_main`] in.
pub const CHILD_TEST: &str = "chaos_child";

/// What a consumer process runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChildSpec {
    pub(crate) handler: String,
    pub(crate) consumer: String,
    pub(crate) types: Vec<String>,
    pub(crate) start: StartSpec,
    pub(crate) concurrency: usize,
    pub(crate) profile: Profile,
    pub(crate) seed: u64,
    pub(crate) slow_call_ms: u64,
    pub(crate) log: PathBuf,
    pub(crate) stop: PathBuf,
    /// The process ends by itself after this, should its parent die without killing it.
    pub(crate) lifetime_s: u64,
    /// The bus's configuration as environment variables.
    pub(crate) config: BTreeMap<String, String>,
}

/// A running (or killed) consumer process, killed when dropped.
pub(crate) struct ConsumerProcess {
    pub(crate) label: String,
    child: Option<Child>,
    stop: PathBuf,
    paused: bool,
}

impl ConsumerProcess {
    /// Starts this test binary again as a consumer process.
    pub(crate) fn spawn(spec: &ChildSpec) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the test binary")?;
        let child = Command::new(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, serde_json::to_string(spec)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting consumer process {}", spec.consumer))?;
        Ok(Self {
            label: spec.consumer.clone(),
            child: Some(child),
            stop: spec.stop.clone(),
            paused: false,
        })
    }

    /// Whether it still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and reaps it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.resume()?;
        let mut child = self.child.take().context("the process is already gone")?;
        child.kill().context("killing a consumer process")?;
        child.wait()?;
        Ok(())
    }

    /// SIGSTOP: it keeps its connections and its claims, and does nothing.
    pub(crate) fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub(crate) fn resume(&mut self) -> anyhow::Result<()> {
        if self.paused {
            self.signal("CONT")?;
            self.paused = false;
        }
        Ok(())
    }

    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("the process is gone")?.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed ({status})");
        Ok(())
    }

    /// Asks it to unsubscribe and exit, and waits up to `within` (then kills it).
    pub(crate) async fn stop(&mut self, within: Duration) -> anyhow::Result<()> {
        self.resume()?;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        std::fs::write(&self.stop, b"stop")?;
        let deadline = Instant::now() + within;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "consumer process {} did not stop within {within:?}",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = None;
        Ok(())
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The file of a consumer process's health samples, next to its file of handler calls.
pub(crate) fn health_path(log: &Path) -> PathBuf {
    log.with_extension("health.jsonl")
}

/// The complete lines of a consumer process's files (a line cut by SIGKILL is left out).
pub(crate) fn read_lines(log: &Path) -> Vec<ChildLine> {
    [log.to_path_buf(), health_path(log)]
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Appends lines to the process's file, each flushed at once.
struct FileLog {
    out: Mutex<std::fs::File>,
}

impl FileLog {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            out: Mutex::new(file),
        })
    }

    fn write(&self, line: &ChildLine) {
        let Ok(text) = serde_json::to_string(line) else {
            return;
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A line that cannot be written shows up as a missing delivery in the checks.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
}

impl DeliveryLog for FileLog {
    fn record(&self, delivery: DeliveryRecord) {
        self.write(&ChildLine::Delivery(delivery));
    }
}

/// The consumer process's side: when `EVENTBUS_CHAOS_CHILD` is set, connects a bus with
/// `connect` (given the shared configuration and every variable the parent passed,
/// the backend's own included: [`ChaosBackend::child_variables`](super::ChaosBackend::child_variables)),
/// subscribes the handler it names and runs until told to stop; otherwise returns
/// at once. A `connect` that fails with a transient error (the server is down, restarting
/// under a fault) is called again, with backoff, for up to a minute, as a supervised service
/// would be restarted. A backend's chaos target calls it from a test named [`CHILD_TEST`]:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use event_core::{EventBus, MemoryBus};
/// #[test]
/// fn chaos_child() {
///     event_testkit::chaos::child_main(|config, _variables| async move {
///         Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
///     });
/// }
/// ```
pub fn child_main<F, Fut>(connect: F)
where
    F: Fn(Config, BTreeMap<String, String>) -> Fut,
    Fut: Future<Output = anyhow::Result<Arc<dyn EventBus>>>,
{
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return;
    };
    quiet_deliberate_panics();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a runtime")
        .and_then(|runtime| runtime.block_on(run_child(&spec, connect)));
    if let Err(e) = outcome {
        eprintln!("chaos consumer process failed: {e:#}");
        std::process::exit(2);
    }
}

/// Connects as a service under a supervisor would start: a server that is down (restarting
/// under a fault) is waited for, up to a minute, rather than ending the process; errors that
/// are not transient (a bad configuration) end it at once.
async fn connect_with_retries<F, Fut>(
    config: &Config,
    variables: &BTreeMap<String, String>,
    connect: &F,
) -> anyhow::Result<Arc<dyn EventBus>>
where
    F: Fn(Config, BTreeMap<String, String>) -> Fut,
    Fut: Future<Output = anyhow::Result<Arc<dyn EventBus>>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(200);
    loop {
        match connect(config.clone(), variables.clone()).await {
            Ok(bus) => return Ok(bus),
            Err(e)
                if e.downcast_ref::<event_core::Error>()
                    .is_some_and(event_core::Error::is_transient)
                    && Instant::now() + pause < deadline =>
            {
                eprintln!("chaos consumer process: cannot connect yet, retrying: {e:#}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn run_child<F, Fut>(spec: &str, connect: F) -> anyhow::Result<()>
where
    F: Fn(Config, BTreeMap<String, String>) -> Fut,
    Fut: Future<Output = anyhow::Result<Arc<dyn EventBus>>>,
{
    let spec: ChildSpec = serde_json::from_str(spec).context("reading the child spec")?;
    let config = Config::from_vars(spec.config.clone())?;
    let log = Arc::new(FileLog::open(&spec.log)?);
    // Health goes to a file of its own, so the parent can tell handler calls from samples
    // by the size of the first.
    let samples = FileLog::open(&health_path(&spec.log))?;
    let bus = connect_with_retries(&config, &spec.config, &connect).await?;
    let types = spec
        .types
        .iter()
        .map(EventType::new)
        .collect::<Result<Vec<_>, _>>()?;
    let handler = ChaosHandler::new(
        &spec.handler,
        &spec.consumer,
        spec.seed,
        spec.profile,
        Duration::from_millis(spec.slow_call_ms),
        log.clone(),
    );
    let called_ms = now_ms();
    let subscribed = bus
        .subscribe(
            SubscriptionSpec::new(spec.handler.clone(), types)
                .start_from(spec.start.start_from())
                .concurrency(spec.concurrency),
            handler,
        )
        .await;
    log.write(&ChildLine::Subscribed(SubscriptionRecord {
        handler: spec.handler.clone(),
        consumer: spec.consumer.clone(),
        start: spec.start,
        called_ms,
        returned_ms: now_ms(),
        error: subscribed.as_ref().err().map(ToString::to_string),
        ended_ms: None,
    }));
    let subscription = subscribed?;
    let end = Instant::now() + Duration::from_secs(spec.lifetime_s);
    while !spec.stop.exists() && Instant::now() < end {
        let health = bus.health().await;
        let at_ms = now_ms();
        samples.write(&ChildLine::Health(HealthRecord {
            at_ms,
            bus: spec.consumer.clone(),
            health,
        }));
        samples.write(&ChildLine::Activity(ActivityRecord {
            at_ms,
            consumer: spec.consumer.clone(),
            handler: spec.handler.clone(),
            active: subscription.is_active(),
        }));
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    subscription.unsubscribe().await?;
    bus.shutdown().await?;
    Ok(())
}
