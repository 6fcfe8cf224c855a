//! The chaos harness against the embedded `MemoryBus`: the workload, operations and checker
//! of `event_testkit::chaos` on the backend without servers or processes, whose one fault is
//! a consumer loop that panics (`event_core::fault::panic_loop_once`), so a run must show no
//! loss and no duplicate beyond that fault's bound. A second test breaks the bus's
//! acknowledgement on purpose and shows that the checker fails the run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};
use async_trait::async_trait;
use event_core::{Config, EventBus, MemoryBus};
use event_testkit::chaos::{Abilities, ChaosBackend, Fault, RunOptions};

struct Memory;

#[async_trait]
impl ChaosBackend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn test_target(&self) -> (&'static str, &'static str) {
        ("event-testkit", "chaos_memory")
    }

    fn base_config(&self) -> Config {
        Config::default()
    }

    async fn connect(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>> {
        Ok(Arc::new(MemoryBus::new(config)?))
    }

    fn abilities(&self) -> Abilities {
        Abilities {
            faults: vec![Fault::PanicLoopOnce],
            consumer_processes: false,
            second_instance: false,
            order_survives_takeover: true,
            rebalance_redelivers: false,
            takeover_after: Duration::from_secs(1),
            slow_call: Duration::from_millis(1500),
            events_per_second: 1500,
            default_seconds: 40,
            quiescence_deadline: Duration::from_secs(60),
        }
    }
}

/// The chaos run on memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() -> anyhow::Result<()> {
    let summary = event_testkit::chaos::run(Arc::new(Memory)).await?;
    ensure!(summary.lost == 0, "{} events lost", summary.lost);
    Ok(())
}

/// With every 97th delivery acknowledged without calling the handler (a deliberately broken
/// acknowledgement), the checker fails the run and names the lost events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_a_broken_ack() -> anyhow::Result<()> {
    let options = RunOptions::lasting(Duration::from_secs(15)).with_broken_ack(97);
    let Err(report) = event_testkit::chaos::run_with(Arc::new(Memory), options).await else {
        bail!("the checker passed a run whose bus acknowledged every 97th delivery unhandled");
    };
    let report = format!("{report:#}");
    ensure!(
        report.contains("owed events were lost"),
        "the checker failed the run, but not for the lost events: {report}"
    );
    eprintln!("the checker caught the broken acknowledgement, as it must:\n{report}");
    Ok(())
}
