//! [`Trial`], the list of every trial ([`TRIALS`]) and [`run_trial`];
//! [`run_conformance`](crate::run_conformance) turns the list into tests.

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

/// What a trial that did not fail came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// It ran and passed.
    Passed,
    /// It did not run: the backend lacks a capability it needs.
    NotApplicable {
        /// The backend's name.
        backend: &'static str,
        /// What it lacks.
        reason: &'static str,
    },
}

/// Runs one trial against the fixture's backend, then shuts down every bus it made (also when
/// it fails). A trial that does not apply to the backend does not run:
/// [`Verdict::NotApplicable`] says why.
///
/// # Errors
/// The trial's failure, with the trial's and the backend's names as context.
pub async fn run_trial(fixture: &Fixture, trial: &Trial) -> anyhow::Result<Verdict> {
    if let Err(reason) = (trial.requires)(&fixture.capabilities) {
        return Ok(Verdict::NotApplicable {
            backend: fixture.name,
            reason,
        });
    }
    let outcome = tokio::time::timeout(TRIAL_TIMEOUT, (trial.run)(fixture)).await;
    fixture.shut_down_all().await;
    match outcome {
        Ok(result) => result
            .map(|()| Verdict::Passed)
            .with_context(|| format!("trial {} failed on {}", trial.name, fixture.name)),
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

        /// One constant per trial, named after its function.
        #[allow(non_upper_case_globals)]
        mod by_name {
            use super::Trial;

            $(
                #[doc = $doc]
                pub(super) const $name: Trial = Trial {
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
