//! A randomized chaos harness with a history checker, in the spirit of Jepsen and
//! Watermill's universal tests: a workload drawn from a seed (several handlers on several
//! types with backlogs, skewed keys, concurrent `publish` and `publish_batch`, handlers that
//! fail, panic or are slow, redrives, purges, resubscriptions, consumers in other processes),
//! faults injected while it runs (processes killed and stopped, connections cut, servers
//! killed and restarted, foreign entries in the logs), and a checker that reads the recorded
//! history and fails unless nothing was lost (see `docs/testing.md`).
//!
//! A backend plugs in with a [`ChaosBackend`] in a test target of its crate:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use event_core::{Config, EventBus, MemoryBus};
//! use event_testkit::chaos::{Abilities, ChaosBackend};
//!
//! struct Memory;
//!
//! #[async_trait]
//! impl ChaosBackend for Memory {
//!     fn name(&self) -> &'static str { "memory" }
//!     fn test_target(&self) -> (&'static str, &'static str) { ("event-testkit", "chaos_memory") }
//!     fn base_config(&self) -> Config { Config::default() }
//!     async fn connect(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>> {
//!         Ok(Arc::new(MemoryBus::new(config)?))
//!     }
//!     fn abilities(&self) -> Abilities {
//!         Abilities {
//!             faults: Vec::new(),
//!             consumer_processes: false,
//!             second_instance: false,
//!             order_survives_takeover: true,
//!             rebalance_redelivers: false,
//!             takeover_after: Duration::from_secs(1),
//!             slow_call: Duration::from_secs(2),
//!             events_per_second: 1000,
//!             default_seconds: 30,
//!             quiescence_deadline: Duration::from_secs(60),
//!         }
//!     }
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn chaos() -> anyhow::Result<()> {
//!     event_testkit::chaos::run(Arc::new(Memory)).await?;
//!     Ok(())
//! }
//! ```

mod backend;
mod behaviour;
mod checker;
mod cluster;
mod history;
mod operations;
mod process;
mod proxy;
mod publisher;
mod quiesce;
mod report;
mod runner;
mod settings;
mod workload;

pub use backend::{Abilities, ChaosBackend, Fault, ForeignEntry};
pub use process::{CHILD_TEST, CHILD_VAR, child_main};
pub use proxy::TcpProxy;
pub use report::Summary;
pub use runner::{RunOptions, run, run_with};
pub use settings::{ChaosSettings, SECONDS_VAR, SEED_VAR};
