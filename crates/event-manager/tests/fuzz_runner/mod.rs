//! Running a proptest strategy a fixed number of cases, for the fuzz tests (`fuzz_api.rs`,
//! `fuzz_config.rs`).

use std::cell::Cell;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};

/// Runs `cases` generated cases of `test`, on a runner of its own: a runner counts the cases
/// it passed and stops there, so a reused one would run no more. Fails unless all ran.
pub(crate) fn run<S: Strategy>(
    what: &str,
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> anyhow::Result<()> {
    let ran = Cell::new(0u32);
    TestRunner::new(Cases {
        cases,
        failure_persistence: None,
        ..Cases::default()
    })
    .run(strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    })
    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    anyhow::ensure!(
        ran.get() >= cases,
        "{what}: only {} of {cases} cases ran",
        ran.get()
    );
    Ok(())
}
