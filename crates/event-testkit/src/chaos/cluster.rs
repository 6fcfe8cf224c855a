//! [`Cluster`]: the consumers of a run — the buses in this process with their subscriptions,
//! and the consumer processes of the shared handler — and the monitor that samples their
//! health and whether each subscription is still active.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use event_core::{Config, EventBus, Health, Subscription, SubscriptionSpec};
use tokio::task::JoinHandle;

use super::backend::Abilities;
use super::behaviour::{ChaosHandler, DeliveryLog};
use super::history::{
    ActivityRecord, ChildLine, DeliveryRecord, HealthRecord, History, StartSpec,
    SubscriptionRecord, now_ms,
};
use super::process::{ChildSpec, ConsumerProcess};
use super::workload::{Plan, StartKind};

impl DeliveryLog for History {
    fn record(&self, delivery: DeliveryRecord) {
        self.lock().deliveries.push(delivery);
    }
}

/// A subscription in this process.
struct Live {
    handler: usize,
    consumer: String,
    bus: usize,
    subscription: Subscription,
}

/// The buses, subscriptions and consumer processes of a run.
pub(crate) struct Cluster {
    pub(crate) plan: Plan,
    pub(crate) abilities: Abilities,
    pub(crate) config: Config,
    /// The backend's own variables, for consumer processes.
    child_variables: BTreeMap<String, String>,
    pub(crate) history: Arc<History>,
    /// `(name, bus)`: `main` first, then `second` where the backend has one.
    pub(crate) buses: Vec<(String, Arc<dyn EventBus>)>,
    live: Mutex<Vec<Live>>,
    processes: tokio::sync::Mutex<Vec<ConsumerProcess>>,
    /// Files of every consumer process ever started (killed ones included).
    process_logs: Mutex<Vec<PathBuf>>,
    dir: PathBuf,
    labels: AtomicUsize,
    /// Where `StartKind::Time` handlers start, once the first half of the backlog is out.
    time_start: Mutex<Option<StartSpec>>,
}

impl Cluster {
    pub(crate) fn new(
        plan: Plan,
        abilities: Abilities,
        config: Config,
        child_variables: BTreeMap<String, String>,
        history: Arc<History>,
        buses: Vec<(String, Arc<dyn EventBus>)>,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "eventbus-chaos-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            plan,
            abilities,
            config,
            child_variables,
            history,
            buses,
            live: Mutex::new(Vec::new()),
            processes: tokio::sync::Mutex::new(Vec::new()),
            process_logs: Mutex::new(Vec::new()),
            dir,
            labels: AtomicUsize::new(0),
            time_start: Mutex::new(None),
        })
    }

    pub(crate) fn main_bus(&self) -> &Arc<dyn EventBus> {
        &self.buses[0].1
    }

    pub(crate) fn set_time_start(&self, at: StartSpec) {
        *self.time_start.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    fn start_of(&self, handler: usize) -> StartSpec {
        match self.plan.handlers[handler].start {
            StartKind::Earliest => StartSpec::Earliest,
            StartKind::Latest => StartSpec::Latest,
            StartKind::Time => self
                .time_start
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(StartSpec::Earliest),
        }
    }

    fn next_label(&self, place: &str, handler: usize) -> String {
        let n = self.labels.fetch_add(1, Ordering::Relaxed);
        format!("{place}/{}#{n}", self.plan.handlers[handler].name)
    }

    /// Subscribes the handler on bus `bus` (an index into `buses`), trying again while the
    /// server is unreachable (a fault may be under way), for up to two minutes.
    pub(crate) async fn subscribe(&self, handler: usize, bus: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.subscribe_once(handler, bus).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    self.history
                        .note(format!("subscribe failed, trying again: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn subscribe_once(&self, handler: usize, bus: usize) -> anyhow::Result<()> {
        let plan = &self.plan.handlers[handler];
        let consumer = self.next_label(&self.buses[bus].0, handler);
        let start = self.start_of(handler);
        let chaos = ChaosHandler::new(
            &plan.name,
            &consumer,
            self.plan.seed,
            plan.profile,
            self.abilities.slow_call,
            self.history.clone(),
        );
        let spec = SubscriptionSpec::new(plan.name.clone(), self.plan.types_of(plan))
            .start_from(start.start_from())
            .concurrency(plan.concurrency);
        let called_ms = now_ms();
        let result = self.buses[bus].1.subscribe(spec, chaos).await;
        self.history.lock().subscriptions.push(SubscriptionRecord {
            handler: plan.name.clone(),
            consumer: consumer.clone(),
            start,
            called_ms,
            returned_ms: now_ms(),
            error: result.as_ref().err().map(ToString::to_string),
            ended_ms: None,
        });
        let subscription = result
            .with_context(|| format!("subscribing {} on {}", plan.name, self.buses[bus].0))?;
        if plan.shared {
            self.membership_change(&format!("{consumer} joined"));
        }
        self.history
            .note(format!("subscribed {consumer} from {start:?}"));
        self.lock_live().push(Live {
            handler,
            consumer,
            bus,
            subscription,
        });
        Ok(())
    }

    /// Unsubscribes the handler's first subscription on bus `bus`; returns whether it had one.
    pub(crate) async fn unsubscribe(&self, handler: usize, bus: usize) -> anyhow::Result<bool> {
        let live = {
            let mut all = self.lock_live();
            match all
                .iter()
                .position(|l| l.handler == handler && l.bus == bus)
            {
                Some(i) => all.remove(i),
                None => return Ok(false),
            }
        };
        // The subscription ends when it is asked to: while the unsubscribe waits for its
        // in-flight events, health rightly calls it not alive.
        let ended = now_ms();
        let result = live.subscription.unsubscribe().await;
        {
            let mut records = self.history.lock();
            if let Some(r) = records
                .subscriptions
                .iter_mut()
                .find(|r| r.consumer == live.consumer)
            {
                r.ended_ms = Some(ended);
            }
        }
        if self.plan.handlers[handler].shared {
            self.membership_change(&format!("{} left", live.consumer));
        }
        self.history.note(format!("unsubscribed {}", live.consumer));
        result.with_context(|| format!("unsubscribing {}", live.consumer))?;
        Ok(true)
    }

    fn membership_change(&self, what: &str) {
        self.history
            .lock()
            .membership_changes
            .push((now_ms(), what.to_string()));
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a consumer process of the shared handler.
    pub(crate) async fn start_process(&self) -> anyhow::Result<()> {
        let handler = self
            .plan
            .handlers
            .iter()
            .position(|h| h.shared)
            .context("the plan has no shared handler")?;
        let plan = &self.plan.handlers[handler];
        let consumer = self.next_label("proc", handler);
        let file = consumer.replace(['/', '#'], "_");
        let spec = ChildSpec {
            handler: plan.name.clone(),
            consumer: consumer.clone(),
            types: self
                .plan
                .types_of(plan)
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            start: self.start_of(handler),
            concurrency: plan.concurrency,
            profile: plan.profile,
            seed: self.plan.seed,
            slow_call_ms: self.abilities.slow_call.as_millis() as u64,
            log: self.dir.join(format!("{file}.jsonl")),
            stop: self.dir.join(format!("{file}.stop")),
            lifetime_s: self.plan.duration.as_secs() + 900,
            config: self
                .config
                .redacted()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(self.child_variables.clone())
                .collect(),
        };
        let process = ConsumerProcess::spawn(&spec)?;
        self.process_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(spec.log.clone());
        self.membership_change(&format!("{consumer} started"));
        self.history
            .note(format!("started consumer process {consumer}"));
        self.processes.lock().await.push(process);
        Ok(())
    }

    /// Runs `act` on a running consumer process drawn with `pick`; `None` when none runs.
    pub(crate) async fn with_process<T>(
        &self,
        pick: u64,
        act: impl FnOnce(&mut ConsumerProcess) -> anyhow::Result<T>,
    ) -> Option<anyhow::Result<(String, T)>> {
        let mut processes = self.processes.lock().await;
        let mut running: Vec<&mut ConsumerProcess> = processes
            .iter_mut()
            .filter_map(|p| p.is_running().then_some(p))
            .collect();
        if running.is_empty() {
            return None;
        }
        let n = running.len();
        let process = &mut running[(pick % n as u64) as usize];
        let label = process.label.clone();
        Some(act(process).map(|t| (label, t)))
    }

    /// Continues paused processes and forgets killed ones.
    pub(crate) async fn tidy_processes(&self) {
        let mut processes = self.processes.lock().await;
        for p in processes.iter_mut() {
            let _ = p.resume();
        }
        processes.retain_mut(|p| p.is_running());
    }

    /// How many handler calls the consumer processes have written so far (by file size: cheap
    /// to poll).
    pub(crate) fn process_progress(&self) -> u64 {
        self.process_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
            .sum()
    }

    /// Stops the consumer processes, then reads every file any of them wrote into the history.
    pub(crate) async fn stop_processes(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut processes = std::mem::take(&mut *self.processes.lock().await);
        for p in &mut processes {
            if let Err(e) = p.stop(Duration::from_secs(60)).await {
                problems.push(format!("{e:#}"));
            }
        }
        drop(processes);
        let logs = self
            .process_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut records = self.history.lock();
        for path in logs {
            for line in super::process::read_lines(&path) {
                match line {
                    ChildLine::Delivery(d) => records.deliveries.push(d),
                    ChildLine::Subscribed(s) => records.subscriptions.push(s),
                    ChildLine::Health(h) => records.health.push(h),
                    ChildLine::Activity(a) => records.activity.push(a),
                }
            }
        }
        problems
    }

    /// Samples every bus's health and every subscription's activity each second until
    /// aborted.
    pub(crate) fn monitor(self: &Arc<Self>) -> JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                cluster.sample().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn sample(&self) {
        for (name, bus) in &self.buses {
            let health = match tokio::time::timeout(Duration::from_secs(10), bus.health()).await {
                Ok(health) => health,
                Err(_) => Health::unhealthy(
                    bus.capabilities().backend,
                    "chaos: health() did not answer within 10 s".into(),
                ),
            };
            self.history.lock().health.push(HealthRecord {
                at_ms: now_ms(),
                bus: name.clone(),
                health,
            });
        }
        let at_ms = now_ms();
        let samples: Vec<ActivityRecord> = self
            .lock_live()
            .iter()
            .map(|l| ActivityRecord {
                at_ms,
                consumer: l.consumer.clone(),
                handler: self.plan.handlers[l.handler].name.clone(),
                active: l.subscription.is_active(),
            })
            .collect();
        self.history.lock().activity.extend(samples);
    }

    /// Unsubscribes everything in this process and shuts the buses down.
    pub(crate) async fn shut_down(&self) {
        let all = std::mem::take(&mut *self.lock_live());
        for live in all {
            let _ = live.subscription.unsubscribe().await;
        }
        for (name, bus) in &self.buses {
            if let Err(e) = bus.shutdown().await {
                eprintln!("chaos: shutting down bus {name}: {e}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
