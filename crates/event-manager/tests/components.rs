//! Supervised components: a component that panics, then fails, is run again each time while
//! health says it is restarting; once it runs, it works on the manager's bus; `stop` ends it
//! before the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{Config, Event, EventBus, EventType, HealthStatus};
use event_manager::{Component, ComponentError, EventBusManager, Shutdown};

/// Panics on its first run, fails on its second, then publishes one event and runs until the
/// shutdown.
#[derive(Default)]
struct Flaky {
    runs: AtomicU32,
    finished: AtomicU32,
}

#[async_trait]
impl Component for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn run(&self, bus: Arc<dyn EventBus>, shutdown: Shutdown) -> Result<(), ComponentError> {
        match self.runs.fetch_add(1, Ordering::SeqCst) {
            0 => panic!("first run"),
            1 => return Err("second run failed".into()),
            _ => {}
        }
        bus.publish(Event::builder(EventType::new("component.ran")?, "flaky").build()?)
            .await?;
        shutdown.await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn check(&self) -> (HealthStatus, Vec<String>) {
        (HealthStatus::Healthy, vec!["checked".into()])
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_component_is_restarted_and_reported() {
    let flaky = Arc::new(Flaky::default());
    let manager = EventBusManager::builder(Config::default())
        .component(flaky.clone())
        .build()
        .expect("manager");
    manager.start().await.expect("start");

    // While it fails, health is degraded and says why; after the second failure it runs.
    wait_until("the component runs after two failures", async || {
        let health = manager.health().await;
        let report = &health.components[0];
        if report.state == "restarting" {
            assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
            assert!(
                health
                    .problems
                    .iter()
                    .any(|p| p.contains("component flaky is restarting")),
                "{health:?}"
            );
        }
        report.state == "running" && report.restarts == 2
    })
    .await;
    let health = manager.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(
        health.components[0].last_error.as_deref(),
        Some("second run failed")
    );
    assert!(
        health.problems.contains(&"flaky: checked".to_string()),
        "{health:?}"
    );

    // It ran on the manager's bus.
    let bus = manager.bus().expect("bus");
    wait_until("its event is stored", async || {
        bus.stats()
            .await
            .is_ok_and(|s| s.events_by_type.get("component.ran") == Some(&1))
    })
    .await;

    manager.stop().await.expect("stop");
    assert_eq!(flaky.finished.load(Ordering::SeqCst), 1, "shut down once");
    assert_eq!(flaky.runs.load(Ordering::SeqCst), 3, "not run again");
    assert!(manager.health().await.components.is_empty());
}
