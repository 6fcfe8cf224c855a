//! `cargo xtask integration-test [backend]`: the backend conformance suites of
//! `event-testkit`, alone.

use anyhow::bail;

use crate::shell::{self, cargo};

/// One backend's conformance suite: a test target of `event-testkit`.
struct Suite {
    backend: &'static str,
    test_target: &'static str,
}

/// Every suite, in the order they run.
const SUITES: &[Suite] = &[Suite {
    backend: "memory",
    test_target: "memory",
}];

/// Runs every suite, or only the named backend's.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let selected: Vec<&Suite> = match args {
        [] => SUITES.iter().collect(),
        [backend] => vec![find(backend)?],
        _ => bail!(
            "`cargo xtask integration-test` takes at most one backend, found {args:?}; known backends: {}",
            known()
        ),
    };
    // One cargo invocation for all suites: one build, then each test binary in turn.
    let mut command = cargo(["test", "-p", "event-testkit"]);
    for suite in &selected {
        command.args(["--test", suite.test_target]);
    }
    // An integration run was asked for: an unreachable backend is a failure, not a skip.
    command.env("EVENTBUS_REQUIRE_INTEGRATION", "1");
    let names: Vec<&str> = selected.iter().map(|s| s.backend).collect();
    let took = shell::run(
        &format!("conformance suite ({})", names.join(", ")),
        &mut command,
    )?;
    println!(
        "xtask integration-test: passed for {} in {:.1}s",
        names.join(", "),
        took.as_secs_f64()
    );
    Ok(())
}

fn find(backend: &str) -> anyhow::Result<&'static Suite> {
    match SUITES.iter().find(|s| s.backend == backend) {
        Some(suite) => Ok(suite),
        None => bail!(
            "unknown backend {backend:?} for `cargo xtask integration-test`; known backends: {}",
            known()
        ),
    }
}

fn known() -> String {
    SUITES
        .iter()
        .map(|s| s.backend)
        .collect::<Vec<_>>()
        .join(", ")
}
