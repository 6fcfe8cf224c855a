//! [`Trial`], the list of every trial ([`TRIALS`]), [`run_trial`], and the
//! [`conformance_tests!`](crate::conformance_tests) macro that turns the list into tests.

use std::time::Duration;

use anyhow::Context as _;
use event_core::Capabilities;
use futures::future::BoxFuture;

use crate::fixture::Fixture;

/// How long one trial may take in all before it counts as hung. Trials wait on conditions
/// with their own, shorter deadlines; this only catches a trial stuck in a backend call.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(180);

/// One behaviour every backend must have, checked against a [`Fixture`].
#[derive(Clone, Copy)]
pub struct Trial {
    /// `module::function`, for example `ordering::per_key_order`.
    pub name: &'static str,
    /// What it checks, in one line.
    pub doc: &'static str,
    /// Whether it applies to a backend; `Err` says why not.
    pub requires: fn(&Capabilities) -> Result<(), &'static str>,
    /// Runs it.
    pub run: fn(&Fixture) -> BoxFuture<'_, anyhow::Result<()>>,
}

impl std::fmt::Debug for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trial")
            .field("name", &self.name)
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

/// Runs one trial against the fixture's backend, then shuts down every bus it made (also when
/// it fails). A trial that does not apply to the backend prints why to stderr and passes.
///
/// # Errors
/// The trial's failure, with the trial's and the backend's names as context.
pub async fn run_trial(fixture: &Fixture, trial: &Trial) -> anyhow::Result<()> {
    if let Err(reason) = (trial.requires)(&fixture.capabilities) {
        eprintln!(
            "{}: not applicable on {}: {reason}",
            trial.name, fixture.name
        );
        return Ok(());
    }
    let outcome = tokio::time::timeout(TRIAL_TIMEOUT, (trial.run)(fixture)).await;
    fixture.shut_down_all().await;
    match outcome {
        Ok(result) => {
            result.with_context(|| format!("trial {} failed on {}", trial.name, fixture.name))
        }
        Err(_) => anyhow::bail!(
            "trial {} did not finish within {TRIAL_TIMEOUT:?} on {}",
            trial.name,
            fixture.name
        ),
    }
}

/// Builds [`TRIALS`] and one constant per trial from the list in `trials/mod.rs`.
macro_rules! define_trials {
    ($($module:ident :: $name:ident => $requires:ident, $doc:literal;)*) => {
        /// Every trial of the suite, once each, in suite order.
        pub static TRIALS: &[Trial] = &[$(by_name::$name),*];

        /// One constant per trial, named after its function, for
        /// [`conformance_tests!`](crate::conformance_tests).
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        pub mod by_name {
            use super::Trial;

            $(
                #[doc = $doc]
                pub const $name: Trial = Trial {
                    name: concat!(stringify!($module), "::", stringify!($name)),
                    doc: $doc,
                    requires: crate::trials::requires::$requires,
                    run: |fixture| Box::pin(crate::trials::$module::$name(fixture)),
                };
            )*
        }
    };
}

crate::__for_each_trial!(define_trials);

/// Expands to one test per conformance trial, each running against the fixture that
/// `$fixture` (an `async fn() -> anyhow::Result<event_testkit::Fixture>`) builds.
///
/// Each test is named after its trial's function, so `cargo test per_key_order` runs one.
///
/// ```
/// # use std::sync::Arc;
/// # use event_core::{Config, EventBus, MemoryBus};
/// async fn memory() -> anyhow::Result<event_testkit::Fixture> {
///     let factory = event_testkit::factory_fn(|config| async move {
///         Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
///     });
///     event_testkit::Fixture::probe(factory, Config::default()).await
/// }
///
/// event_testkit::conformance_tests!(memory);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::__for_each_trial!($crate::__conformance_test_fns; $fixture);
    };
}

/// The body of [`conformance_tests!`]: one `#[tokio::test]` per trial of the list.
///
/// tokio's `crate` option takes a string, where `$crate` does not expand: it names this crate
/// as `event_testkit`, the name every test crate uses, so they need no tokio dependency of
/// their own.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ($fixture:path; $($module:ident :: $name:ident => $requires:ident, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "::event_testkit::__private::tokio"
            )]
            async fn $name() -> $crate::__private::anyhow::Result<()> {
                let Some(fixture) = $crate::__private::MaybeFixture::into_fixture($fixture().await?) else {
                    // The fixture said why it has no backend (a server not configured outside
                    // an integration run).
                    return Ok(());
                };
                $crate::run_trial(&fixture, &$crate::__private::by_name::$name).await
            }
        )*
    };
}
