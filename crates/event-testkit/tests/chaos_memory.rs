//! The chaos harness against the embedded `MemoryBus`: the workload, operations and checker
//! of `event_testkit::chaos` on the backend without servers, processes or faults, so a run
//! with no fault must show no loss and no duplicate at all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Config, EventBus, MemoryBus};
use event_testkit::chaos::{Abilities, ChaosBackend};

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
            faults: Vec::new(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_memory() -> anyhow::Result<()> {
    let summary = event_testkit::chaos::run(Arc::new(Memory)).await?;
    assert_eq!(summary.lost, 0);
    Ok(())
}
