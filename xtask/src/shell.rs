//! Running commands: each one is printed before it runs, and a failure names the step.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root (the parent of `xtask/`), where every command runs.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A `cargo` command in the workspace root. Uses the cargo that runs xtask (`$CARGO`), so the
/// toolchain pinned by `rust-toolchain.toml` does the work.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(project_root());
    command
}

/// Runs `command` as the step called `step`, with its output going to the terminal.
///
/// # Errors
/// When the command cannot start or exits with a failure; the message names the step.
pub(crate) fn run(step: &str, command: &mut Command) -> anyhow::Result<Duration> {
    announce(command);
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("step `{step}`: could not start `{}`", display(command)))?;
    if !status.success() {
        bail!(
            "step `{step}` failed ({status}) after {:.1}s: `{}`",
            started.elapsed().as_secs_f64(),
            display(command)
        );
    }
    Ok(started.elapsed())
}

/// Runs `command` as the step called `step`, with both its output streams going to standard
/// error: for commands whose standard output is kept for machine-readable lines
/// (`cargo xtask services up`).
///
/// # Errors
/// As [`run`].
pub(crate) fn run_to_stderr(step: &str, command: &mut Command) -> anyhow::Result<Duration> {
    eprintln!("$ {}", display(command));
    let started = Instant::now();
    let status = command
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("step `{step}`: could not start `{}`", display(command)))?;
    if !status.success() {
        bail!(
            "step `{step}` failed ({status}) after {:.1}s: `{}`",
            started.elapsed().as_secs_f64(),
            display(command)
        );
    }
    Ok(started.elapsed())
}

/// Runs `command` as the step called `step` and returns its standard output, which is also
/// copied to the terminal line by line as it arrives; standard error goes to the terminal.
///
/// # Errors
/// As [`run`].
pub(crate) fn run_tee(step: &str, command: &mut Command) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader};

    announce(command);
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("step `{step}`: could not start `{}`", display(command)))?;
    let mut captured = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("step `{step}`: reading its output"))?;
            println!("{line}");
            captured.push_str(&line);
            captured.push('\n');
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("step `{step}`: waiting for `{}`", display(command)))?;
    if !status.success() {
        bail!(
            "step `{step}` failed ({status}) after {:.1}s: `{}`",
            started.elapsed().as_secs_f64(),
            display(command)
        );
    }
    Ok(captured)
}

/// Runs a short query command (`rustc --version`) and returns its trimmed output, or `None`
/// when it is unavailable: the callers only use it for information.
pub(crate) fn read_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(project_root())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn announce(command: &Command) {
    println!("$ {}", display(command));
}

/// The command as one would type it: environment set for it, the program's file name, the
/// arguments.
fn display(command: &Command) -> String {
    let mut parts: Vec<String> = command
        .get_envs()
        .filter_map(|(name, value)| {
            Some(format!(
                "{}={}",
                name.to_string_lossy(),
                value?.to_string_lossy()
            ))
        })
        .collect();
    let program = Path::new(command.get_program());
    parts.push(
        program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned(),
    );
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}
