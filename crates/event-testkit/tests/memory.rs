//! The conformance suite against the embedded [`MemoryBus`].

use std::collections::HashSet;
use std::sync::Arc;

use event_core::{Config, EventBus, MemoryBus};
use event_testkit::{Fixture, TRIALS, factory_fn};

/// The fixture: a fresh `MemoryBus` per bus a trial asks for.
async fn memory() -> anyhow::Result<Fixture> {
    let factory = factory_fn(|config: Config| async move {
        Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
    });
    Fixture::probe(factory, Config::default()).await
}

event_testkit::conformance_tests!(memory);

#[test]
fn trial_list_is_complete_and_unique() {
    assert!(
        TRIALS.len() >= 30,
        "only {} trials in the suite",
        TRIALS.len()
    );
    let names: HashSet<&str> = TRIALS.iter().map(|t| t.name).collect();
    assert_eq!(names.len(), TRIALS.len(), "trial names repeat");
    // Test functions are named after the trial function alone, so those must be unique too.
    let functions: HashSet<&str> = TRIALS
        .iter()
        .map(|t| t.name.rsplit("::").next().unwrap_or(t.name))
        .collect();
    assert_eq!(functions.len(), TRIALS.len(), "trial function names repeat");
    for trial in TRIALS {
        assert!(
            trial.name.contains("::"),
            "{} is not module::function",
            trial.name
        );
        assert!(!trial.doc.is_empty(), "{} has no doc", trial.name);
    }
}
