//! The `alert rules` step of `cargo xtask test`: `promtool` checks the Prometheus files in
//! `docker/prometheus/` (the rules, their unit tests, and the compose file's configuration).

use std::process::Command;

use crate::services::promtool;
use crate::shell::{project_root, run_to_stderr};

/// The folder, its rules and the rules' unit tests.
const DIR: &str = "docker/prometheus";
const RULES: &str = "eventbus-rules.yml";
const RULE_TESTS: &str = "eventbus-rules.test.yml";
const CONFIG: &str = "prometheus.yml";

/// Checks the rules' syntax and queries, runs their unit tests (each alert fires in one case
/// and stays silent in another), and checks the configuration's syntax (its token file is the
/// user's to write, so only the syntax).
pub(crate) fn check() -> anyhow::Result<()> {
    let promtool = promtool::find_or_install()?;
    let dir = project_root().join(DIR);
    for args in [
        &["check", "rules", RULES][..],
        &["test", "rules", RULE_TESTS],
        &["check", "config", "--syntax-only", CONFIG],
    ] {
        let mut command = Command::new(&promtool);
        command.args(args).current_dir(&dir);
        run_to_stderr(&format!("promtool {}", args.join(" ")), &mut command)?;
    }
    Ok(())
}
