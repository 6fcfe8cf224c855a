//! [`run_conformance`]: the `main` of a backend's conformance test target, one test per trial
//! on [`libtest_mimic`], so that a trial a backend cannot run is reported as ignored, with the
//! reason, rather than as passed.
//!
//! What a backend supports is only known once its fixture has probed it (at run time), so the
//! outcome is decided then: libtest-mimic lets a test report itself ignored at run time, which
//! libtest's compile-time attribute cannot.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Failed};

use crate::fixture::MaybeFixture;
use crate::trial::{TRIALS, Trial, Verdict, run_trial};

/// Why every trial is ignored when the fixture has no backend.
const NO_SERVER: &str = "no test server: see the SKIPPED line above; `cargo xtask test` starts one";

/// Runs the conformance suite as the `main` of a test target declared with `harness = false`:
/// one test per trial of [`TRIALS`], named `module::function` and filtered as usual
/// (`cargo test -p event-redis --test conformance per_key_order`; `-- --list` lists them).
///
/// Each test builds its own fixture with `fixture` (an async fn returning a
/// [`Fixture`](crate::Fixture), or `Option<Fixture>` for a backend whose server may be absent)
/// on its own tokio runtime, and runs the trial with [`run_trial`]. A trial the backend's
/// capabilities rule out is reported as `ignored (not applicable on <backend>: <reason>)`;
/// without a backend (no server outside an integration run) every trial is ignored.
///
/// ```no_run
/// // tests/conformance.rs, declared in Cargo.toml as
/// // [[test]] name = "conformance" harness = false
/// use std::sync::Arc;
///
/// use event_core::{Config, EventBus, MemoryBus};
/// use event_testkit::{Fixture, factory_fn};
///
/// async fn memory() -> anyhow::Result<Fixture> {
///     let factory = factory_fn(|config| async move {
///         Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
///     });
///     Fixture::probe(factory, Config::default()).await
/// }
///
/// fn main() -> std::process::ExitCode {
///     event_testkit::run_conformance(memory)
/// }
/// ```
pub fn run_conformance<F, Fut, M>(fixture: F) -> ExitCode
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<M>>,
    M: MaybeFixture,
{
    let arguments = Arguments::from_args();
    let fixture = Arc::new(fixture);
    let tests = TRIALS
        .iter()
        .map(|trial| {
            let fixture = fixture.clone();
            libtest_mimic::Trial::ignorable_test(trial.name, move || test(&*fixture, trial))
        })
        .collect();
    libtest_mimic::run(&arguments, tests).exit_code()
}

/// One test: a runtime of its own (as `#[tokio::test]` gives), its fixture, the trial.
fn test<F, Fut, M>(fixture: &F, trial: &'static Trial) -> Result<Completion, Failed>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<M>>,
    M: MaybeFixture,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let verdict = runtime.block_on(async {
        let Some(fixture) = fixture().await?.into_fixture() else {
            return Ok(None);
        };
        run_trial(&fixture, trial).await.map(Some)
    });
    match verdict {
        Ok(Some(Verdict::Passed)) => Ok(Completion::Completed),
        Ok(Some(Verdict::NotApplicable { backend, reason })) => Ok(Completion::ignored_with(
            format!("not applicable on {backend}: {reason}"),
        )),
        Ok(None) => Ok(Completion::ignored_with(NO_SERVER)),
        Err(e) => Err(format!("{e:?}").into()),
    }
}
