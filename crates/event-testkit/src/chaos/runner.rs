//! [`run`]: one chaos run, from the plan to the verdict.
//!
//! 1. Publish a backlog (at least 10 × `EVENT_BATCH_SIZE` per type), taking the start time
//!    of `StartFrom::Time` handlers halfway through.
//! 2. Start the publishers, and while they run subscribe every handler, the shared handler
//!    also on a second bus (or a second subscription) and in consumer processes.
//! 3. Carry out the operations and faults at their times, sampling health every second.
//! 4. Stop publishing, heal, wait for quiescence, read every dead letter and the consumer
//!    processes' files, shut everything down, and check the history.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use event_core::{Config, EventBus};
use tokio::time::Instant;

use super::backend::ChaosBackend;
use super::behaviour::MAX_RETRIES;
use super::behaviour::quiet_deliberate_panics;
use super::checker::{self, CheckInput};
use super::cluster::Cluster;
use super::history::{History, StartSpec, now_ms};
use super::operations::{DEAD_LETTER_LIMIT, run_faults, run_operations};
use super::publisher::Publisher;
use super::quiesce::{NotQuiet, quiesce};
use super::report::{Summary, render};
use super::settings::ChaosSettings;
use super::workload::Plan;

/// The bus settings of every run, on top of the backend's.
fn run_config(mut config: Config, plan: &Plan) -> Config {
    config.batch_size = plan.batch_size;
    config.max_retries = MAX_RETRIES;
    config.retry_base = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    // Small, so the oversized events slipped into batches are cheap.
    config.max_event_bytes = 16 * 1024;
    config.stall_timeout = Duration::from_secs(10);
    config.shutdown_timeout = Duration::from_secs(10);
    config
}

/// Changes to a run that tests choose (the environment chooses the rest).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// The run's length, instead of `EVENTBUS_CHAOS_SECONDS` or the backend's default.
    pub duration: Option<Duration>,
    /// Breaks the bus on purpose (`event_core::fault::lose_every`): every n-th delivery of
    /// every handler is acknowledged without the handler being called. The checker must then
    /// fail the run; a test proves it does.
    pub broken_ack_every: Option<u64>,
}

impl RunOptions {
    /// Options for a run of `duration`.
    pub fn lasting(duration: Duration) -> Self {
        Self {
            duration: Some(duration),
            ..Self::default()
        }
    }

    /// These options with a deliberately broken acknowledgement.
    pub fn with_broken_ack(mut self, every: u64) -> Self {
        self.broken_ack_every = Some(every);
        self
    }
}

/// Runs the workload against the backend, checks the history, prints the summary, and fails
/// with the checker's report when anything was lost, duplicated beyond the bound, out of
/// order, or unnoticed.
///
/// # Errors
/// The checker's report, or what kept the run from finishing.
pub async fn run(backend: Arc<dyn ChaosBackend>) -> anyhow::Result<Summary> {
    run_with(backend, RunOptions::default()).await
}

/// [`run`] with options.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    backend: Arc<dyn ChaosBackend>,
    options: RunOptions,
) -> anyhow::Result<Summary> {
    let abilities = backend.abilities();
    let mut settings = ChaosSettings::from_env(abilities.default_seconds)?;
    if let Some(duration) = options.duration {
        settings.duration = duration;
    }
    let (package, target) = backend.test_target();
    let replay = settings.replay_hint(package, target);
    println!(
        "chaos: backend {}, seed {}, {} s; replay with: {replay}",
        backend.name(),
        settings.seed,
        settings.duration.as_secs()
    );
    quiet_deliberate_panics();
    let tag = format!("{:06x}", fastrand::u32(..0x100_0000));
    let plan = Plan::new(settings.seed, settings.duration, &abilities, &tag);
    println!("{}", plan.describe());
    let config = run_config(backend.base_config(), &plan);
    let mut buses: Vec<(String, Arc<dyn EventBus>)> =
        vec![("main".into(), backend.connect(config.clone()).await?)];
    if abilities.second_instance {
        buses.push(("second".into(), backend.connect(config.clone()).await?));
    }
    let history = Arc::new(History::default());
    let cluster = Arc::new(Cluster::new(
        plan,
        abilities,
        config,
        backend.child_variables(),
        history.clone(),
        buses,
    )?);
    if let Some(every) = options.broken_ack_every {
        for h in &cluster.plan.handlers {
            event_core::fault::lose_every(&h.name, every);
        }
        println!("chaos: acknowledging every {every}th delivery without handling it, on purpose");
    }
    let outcome = execute(&cluster, &backend).await;
    for h in &cluster.plan.handlers {
        event_core::fault::clear(&h.name);
    }
    let stop_problems = cluster.stop_processes().await;
    cluster.shut_down().await;
    backend.cleanup().await;
    let (quiet, end_ms) = outcome?;
    for problem in &stop_problems {
        history.note(format!("stopping consumer processes: {problem}"));
    }

    let records = history.snapshot();
    let input = CheckInput {
        plan: &cluster.plan,
        abilities: &cluster.abilities,
        records: &records,
        consumer_group: &cluster.config.consumer_group,
        quiet: &quiet,
        stall_timeout: cluster.config.stall_timeout,
        end_ms,
    };
    let verdict = checker::check(&input);
    let text = render(
        backend.name(),
        settings.seed,
        settings.duration.as_secs(),
        &verdict,
    );
    println!("{text}");
    if !verdict.failures.is_empty() {
        let mut report = format!(
            "chaos run on {} failed: {} problems (seed {}; replay with: {replay})\n",
            backend.name(),
            verdict.failures.len(),
            settings.seed
        );
        for failure in &verdict.failures {
            report.push_str("  - ");
            report.push_str(failure);
            report.push('\n');
        }
        if !records.faults.is_empty() {
            report.push_str("  faults (Unix ms):\n");
            for f in &records.faults {
                report.push_str(&format!(
                    "    {:?} {}..{}: {:?}\n",
                    f.fault, f.started_ms, f.ended_ms, f.detail
                ));
            }
        }
        if quiet.is_err() {
            report.push_str("  last health of each bus:\n");
            for (name, _) in &cluster.buses {
                if let Some(h) = records.health.iter().rev().find(|h| &h.bus == name) {
                    report.push_str(&format!(
                        "    {name} at {}: {:?}, problems {:?}, consumers {:?}\n",
                        h.at_ms, h.health.status, h.health.problems, h.health.consumers
                    ));
                }
            }
        }
        report.push_str(&text);
        anyhow::bail!(report);
    }
    Ok(Summary {
        backend: backend.name().to_string(),
        seed: settings.seed,
        stored: verdict.stored,
        lost: verdict.lost(),
        duplicates: verdict.tallies.iter().map(|t| t.duplicates).sum(),
        faults: records.faults.len(),
        text,
    })
}

/// The run itself: everything up to reading the dead letters once the bus is quiet.
async fn execute(
    cluster: &Arc<Cluster>,
    backend: &Arc<dyn ChaosBackend>,
) -> anyhow::Result<(Result<Duration, NotQuiet>, i64)> {
    let plan = &cluster.plan;
    let buses: Vec<Arc<dyn EventBus>> = cluster.buses.iter().map(|(_, b)| b.clone()).collect();
    let mut publishers: Vec<Publisher> = (0..plan.publishers)
        .map(|i| {
            Publisher::new(
                i,
                plan.seed,
                plan.keys,
                plan.batch_size,
                cluster.config.max_event_bytes,
                cluster.history.clone(),
            )
        })
        .collect();

    // The backlog, in two halves: `Time` handlers start between them.
    let share = plan.backlog_per_type.div_ceil(plan.publishers);
    for half in 0..2 {
        futures::future::join_all(publishers.iter_mut().map(|p| {
            let buses = &buses;
            async move {
                for t in &plan.types {
                    p.publish(buses, std::slice::from_ref(t), share.div_ceil(2), None)
                        .await;
                }
            }
        }))
        .await;
        if half == 0 {
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            cluster.set_time_start(StartSpec::Time(now - now % 1000));
        }
    }
    cluster.history.note(format!(
        "backlog published: {} events",
        cluster.history.lock().publishes.len()
    ));

    let start = Instant::now();
    let until = start + plan.duration;
    let per_publisher = f64::from(plan.events_per_second) / plan.publishers as f64;
    let running: Vec<_> = publishers
        .into_iter()
        .map(|mut p| {
            let buses = buses.clone();
            let types = plan.types.clone();
            tokio::spawn(async move { p.publish_until(&buses, &types, until, per_publisher).await })
        })
        .collect();

    for (i, handler) in plan.handlers.iter().enumerate() {
        cluster.subscribe(i, 0).await?;
        if handler.shared {
            let other = usize::from(cluster.buses.len() > 1);
            cluster.subscribe(i, other).await?;
        }
    }
    for _ in 0..plan.consumer_processes {
        cluster.start_process().await?;
    }
    let monitor = cluster.monitor();
    let operations = tokio::spawn(run_operations(cluster.clone(), backend.clone(), start));
    let faults = tokio::spawn(run_faults(cluster.clone(), backend.clone(), start));
    for p in running {
        p.await.context("a publisher task failed")?;
    }
    operations.await.context("the operations task failed")??;
    faults.await.context("the fault task failed")??;
    cluster.tidy_processes().await;
    cluster
        .history
        .note("publishing stopped; waiting for quiescence");

    let settle =
        (cluster.abilities.takeover_after + Duration::from_secs(1)).max(Duration::from_secs(3));
    let quiet = quiesce(cluster, settle, cluster.abilities.quiescence_deadline).await;
    let end_ms = now_ms();
    cluster.history.note(format!("quiescence: {quiet:?}"));
    for handler in &plan.handlers {
        let letters = cluster
            .main_bus()
            .dead_letters(&handler.name, DEAD_LETTER_LIMIT)
            .await
            .with_context(|| format!("reading the dead letters of {}", handler.name))?;
        cluster
            .history
            .lock()
            .dead_letters
            .insert(handler.name.clone(), letters);
    }
    monitor.abort();
    Ok((quiet, end_ms))
}
