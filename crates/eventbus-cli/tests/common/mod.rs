//! Running the `eventbus` binary in the tests: a clean environment, exit codes and output.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// `eventbus` with only the given variables (the test's own environment is not passed on,
/// so a developer's settings cannot change the result).
pub(crate) fn eventbus(vars: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(vars.iter().copied()).args(args);
    command
}

pub(crate) fn run(vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    Ok(eventbus(vars, args).stdin(Stdio::null()).output()?)
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}
