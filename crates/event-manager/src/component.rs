//! Components the manager runs beside the bus: an outbox relay, a bridge, a projector. Each is
//! started after the bus, restarted with a back-off whenever it fails, returns or panics,
//! stopped before the bus, and reported in [`health`](crate::EventBusManager::health).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{EventBus, HealthStatus};
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The future a [`Component::run`] ends on: it completes when the manager stops.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The error a [`Component`] fails with.
pub type ComponentError = Box<dyn std::error::Error + Send + Sync>;

/// Something the manager runs and supervises beside the bus.
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// Its name in health reports and logs.
    fn name(&self) -> &str;

    /// Runs on the manager's started `bus` until `shutdown` completes, then returns `Ok`. An
    /// error, a return before the shutdown, or a panic is logged and the component is run
    /// again after a back-off (200 ms, doubling up to 30 s), while health says so.
    async fn run(&self, bus: Arc<dyn EventBus>, shutdown: Shutdown) -> Result<(), ComponentError>;

    /// Its own problems while it runs (events it could not handle, a backlog growing), checked
    /// at each health report; the default is none. The status is the worst it contributes.
    async fn check(&self) -> (HealthStatus, Vec<String>) {
        (HealthStatus::Healthy, Vec::new())
    }
}

/// A supervised component's state in [`ManagerHealth`](crate::ManagerHealth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ComponentReport {
    /// Its name.
    pub name: String,
    /// `running`, or `restarting` after a failure.
    pub state: String,
    /// Runs that ended in failure since the manager started.
    pub restarts: u64,
    /// Why the last failed run ended.
    pub last_error: Option<String>,
}

const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// One running component: its supervisor task and what it reports.
pub(crate) struct Supervised {
    pub(crate) component: Arc<dyn Component>,
    report: Arc<Mutex<ComponentReport>>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts `component` on `bus` under a supervisor that ends when `stop` turns true.
    pub(crate) fn start(
        component: Arc<dyn Component>,
        bus: Arc<dyn EventBus>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let report = Arc::new(Mutex::new(ComponentReport {
            name: component.name().to_string(),
            state: "running".into(),
            restarts: 0,
            last_error: None,
        }));
        let task = tokio::spawn(supervise(component.clone(), bus, stop, report.clone()));
        Self {
            component,
            report,
            task,
        }
    }

    pub(crate) fn report(&self) -> ComponentReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the supervisor to end (after `stop` turned true), at most `limit`.
    pub(crate) async fn join(self, limit: Duration) {
        let name = self.component.name().to_string();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!(component = %name, "component still running after {limit:?}; aborted");
            abort.abort();
        }
    }
}

async fn supervise(
    component: Arc<dyn Component>,
    bus: Arc<dyn EventBus>,
    mut stop: watch::Receiver<bool>,
    report: Arc<Mutex<ComponentReport>>,
) {
    let set = |f: &dyn Fn(&mut ComponentReport)| {
        f(&mut report.lock().unwrap_or_else(PoisonError::into_inner));
    };
    let mut pause = FIRST_PAUSE;
    loop {
        let shutdown: Shutdown = {
            let mut stop = stop.clone();
            Box::pin(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
        };
        set(&|r| r.state = "running".into());
        let outcome = AssertUnwindSafe(component.run(bus.clone(), shutdown))
            .catch_unwind()
            .await;
        if *stop.borrow() {
            return;
        }
        let why = match outcome {
            Ok(Ok(())) => "it returned while the manager runs".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!(
                "it panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            ),
        };
        tracing::error!(
            component = component.name(),
            "component failed, restarting in {pause:?}: {why}"
        );
        set(&|r| {
            r.state = "restarting".into();
            r.restarts += 1;
            r.last_error = Some(why.clone());
        });
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Each component's report, and the status and problems they add to health.
pub(crate) async fn health(
    components: &[(Arc<dyn Component>, ComponentReport)],
) -> (HealthStatus, Vec<String>) {
    let mut status = HealthStatus::Healthy;
    let mut problems = Vec::new();
    for (component, report) in components {
        if report.state != "running" {
            status = status.max(HealthStatus::Degraded);
            problems.push(format!(
                "component {} is restarting after {} failures; the last: {}",
                report.name,
                report.restarts,
                report.last_error.as_deref().unwrap_or("-")
            ));
            continue;
        }
        let (own, found) = component.check().await;
        status = status.max(own);
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", report.name)));
    }
    (status, problems)
}
