//! `cargo xtask soak [memory|redis|kafka] --minutes N [--seed S]`: the chaos harness
//! (`event_testkit::chaos`) run long, in release mode, against servers started for it, with
//! its summary printed at the end.
//!
//! It runs the same test target as `cargo xtask test` (which runs it short, with a fresh seed
//! each time), with `EVENTBUS_CHAOS_SECONDS` and `EVENTBUS_CHAOS_SEED` set. The test prints one
//! machine-readable line, tab-separated:
//!
//! ```text
//! CHAOS <TAB> backend <TAB> seed <TAB> seconds <TAB> stored <TAB> faults <TAB> lost <TAB> duplicates <TAB> pass|fail
//! ```
//!
//! which becomes a row for the table of `docs/reliability.md`.

use anyhow::{Context, bail};

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::services::{RunningServices, Service};
use crate::shell::cargo;

/// One backend's chaos test target and the servers it needs (for their binaries and jars:
/// the test starts servers of its own, which it may kill).
struct Target {
    backend: &'static str,
    package: &'static str,
    test: &'static str,
    services: &'static [Service],
}

const TARGETS: &[Target] = &[
    Target {
        backend: "memory",
        package: "event-testkit",
        test: "chaos_memory",
        services: &[],
    },
    Target {
        backend: "redis",
        package: "event-redis",
        test: "chaos",
        services: &[Service::Redis],
    },
    Target {
        backend: "kafka",
        package: "event-kafka",
        test: "chaos",
        services: &[Service::Kafka],
    },
];

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    backends: Vec<&'static str>,
    minutes: u64,
    seed: Option<u64>,
}

fn parse(args: &[&str]) -> anyhow::Result<Request> {
    let mut backends = Vec::new();
    let mut minutes = 30;
    let mut seed = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--minutes" => {
                let value = args.next().context("--minutes needs a number")?;
                minutes = value
                    .parse()
                    .with_context(|| format!("--minutes {value:?} is not a whole number"))?;
                if minutes == 0 {
                    bail!("--minutes must be at least 1");
                }
            }
            "--seed" => {
                let value = args.next().context("--seed needs a number")?;
                seed = Some(
                    value
                        .parse()
                        .with_context(|| format!("--seed {value:?} is not a number"))?,
                );
            }
            name => match TARGETS.iter().find(|t| t.backend == name) {
                Some(t) => backends.push(t.backend),
                None => bail!(
                    "unknown argument {name:?}: `cargo xtask soak [memory|redis|kafka] --minutes N [--seed S]`"
                ),
            },
        }
    }
    if backends.is_empty() {
        backends = TARGETS.iter().map(|t| t.backend).collect();
    }
    Ok(Request {
        backends,
        minutes,
        seed,
    })
}

/// Runs the soak of each requested backend, one after the other, and prints a table row per
/// run.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let request = parse(args)?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for backend in &request.backends {
        let target = TARGETS
            .iter()
            .find(|t| t.backend == *backend)
            .context("a known backend")?;
        match run_one(target, &request) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("xtask soak: {backend}: {e:#}");
                failed.push(*backend);
            }
        }
    }
    println!(
        "\n| backend | minutes | seed | events stored | faults injected | lost | duplicates | checker |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---|");
    for row in &rows {
        println!("{row}");
    }
    if !failed.is_empty() {
        bail!("the soak failed on {}", failed.join(", "));
    }
    Ok(())
}

fn run_one(target: &Target, request: &Request) -> anyhow::Result<String> {
    let services = RunningServices::start(target.services)?;
    let mut command = cargo([
        "test",
        "--release",
        "-p",
        target.package,
        "--test",
        target.test,
        "--",
        "--exact",
        "chaos",
        "--nocapture",
    ]);
    command.envs(services.env());
    command.env("EVENTBUS_REQUIRE_INTEGRATION", "1");
    command.env("EVENTBUS_CHAOS_SECONDS", (request.minutes * 60).to_string());
    if let Some(seed) = request.seed {
        command.env("EVENTBUS_CHAOS_SEED", seed.to_string());
    }
    let (passed, output) = tee(&mut command)?;
    drop(services);
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CHAOS\t"))
        .map(row)
        .transpose()?;
    match (passed, line) {
        (true, Some(row)) => Ok(row),
        (true, None) => bail!("the chaos test passed but printed no CHAOS line"),
        // A failed run's figures are the point of a soak: its row is printed too.
        (false, Some(row)) => {
            println!("{row}");
            bail!("the checker failed the run; its report is above")
        }
        (false, None) => bail!("the chaos test failed before its checks; see above"),
    }
}

/// Runs `command`, copying its standard output to the terminal as it comes and keeping it;
/// returns whether it succeeded, and the output (kept also when it failed).
fn tee(command: &mut Command) -> anyhow::Result<(bool, String)> {
    println!("$ {command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the test's output")?;
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((status.success(), output))
}

/// A table row from the test's `CHAOS` line (without its prefix).
fn row(line: &str) -> anyhow::Result<String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [
        backend,
        seed,
        seconds,
        stored,
        faults,
        lost,
        duplicates,
        verdict,
    ] = fields[..]
    else {
        bail!("a CHAOS line with {} fields: {line:?}", fields.len());
    };
    let minutes = seconds.parse::<u64>().unwrap_or(0) / 60;
    Ok(format!(
        "| {backend} | {minutes} | {seed} | {stored} | {faults} | {lost} | {duplicates} | {verdict} |"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_read() {
        let r = parse(&["redis", "--minutes", "5", "--seed", "42"]).unwrap();
        assert_eq!(
            r,
            Request {
                backends: vec!["redis"],
                minutes: 5,
                seed: Some(42)
            }
        );
        assert_eq!(parse(&[]).unwrap().backends.len(), 3);
        assert!(parse(&["mongo"]).is_err());
        assert!(parse(&["--minutes", "0"]).is_err());
    }

    #[test]
    fn chaos_lines_become_rows() {
        let row = row("redis\t7\t1800\t500000\t90\t0\t12\tpass").unwrap();
        assert_eq!(row, "| redis | 30 | 7 | 500000 | 90 | 0 | 12 | pass |");
        assert!(super::row("redis\t7").is_err());
    }
}
