//! `cargo xtask integration-test [backend]`: the backends' integration tests alone, against
//! throwaway servers: each suite's conformance target in `event-testkit` and its backend
//! crate's own tests.

use anyhow::bail;

use crate::services::{RunningServices, browser};
use crate::shell::{self, cargo};
use crate::suites::{self, Suite};

/// Runs every present suite, or only the named backend's.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let selected: Vec<&Suite> = match args {
        [] => suites::present(),
        [backend] => vec![suites::find(backend)?],
        _ => bail!(
            "`cargo xtask integration-test` takes at most one backend, found {args:?}; known backends: {}",
            suites::known()
        ),
    };
    // Stopped when dropped: at the end, or at the first failure.
    let services = RunningServices::start(&suites::services_for(&selected))?;
    let mut env = services.env();
    if suites::need_browser(&selected) {
        env.push(browser::env(&browser::find_or_install()?));
    }

    let mut commands = Vec::new();
    // The conformance targets in one cargo invocation: one build, then each binary in turn.
    let targets: Vec<&Suite> = selected
        .iter()
        .copied()
        .filter(|s| s.has_conformance_target())
        .collect();
    if !targets.is_empty() {
        let mut command = cargo(["test", "-p", "event-testkit"]);
        for suite in &targets {
            command.args(["--test", suite.conformance_target]);
        }
        let names: Vec<&str> = targets.iter().map(|s| s.backend).collect();
        commands.push((format!("conformance suite ({})", names.join(", ")), command));
    }
    for suite in &selected {
        if let Some(package) = suite.package {
            commands.push((format!("{package} tests"), cargo(["test", "-p", package])));
        }
    }
    if commands.is_empty() {
        bail!("no test target for {args:?}: nothing to run");
    }

    let mut took = std::time::Duration::ZERO;
    for (step, mut command) in commands {
        command.envs(env.iter().map(|(k, v)| (k, v)));
        // An integration run was asked for: an unreachable backend is a failure, not a skip.
        command.env("EVENTBUS_REQUIRE_INTEGRATION", "1");
        took += shell::run(&step, &mut command)?;
    }
    let names: Vec<&str> = selected.iter().map(|s| s.backend).collect();
    println!(
        "xtask integration-test: passed for {} in {:.1}s",
        names.join(", "),
        took.as_secs_f64()
    );
    drop(services);
    Ok(())
}
