//! The conformance suite against the embedded [`MemoryBus`]: one test per trial
//! (`cargo test -p event-testkit --test memory per_key_order` runs one).

use std::sync::Arc;

use event_core::{Config, EventBus, MemoryBus};
use event_testkit::{Fixture, factory_fn};

/// The fixture: a fresh `MemoryBus` per bus a trial asks for.
async fn memory() -> anyhow::Result<Fixture> {
    let factory = factory_fn(|config: Config| async move {
        Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
    });
    Fixture::probe(factory, Config::default()).await
}

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(memory)
}
