//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::services::{RunningServices, Service, browser, faketime};
use crate::shell::{self, cargo};
use crate::{alerts, docs, suites};

/// Runs rustfmt's check, the check that the generated event catalog is up to date, `promtool`'s
/// checks and unit tests of the Prometheus alerting rules (installed when missing), clippy
/// with warnings denied, rustdoc with warnings denied (the API docs users browse: no broken
/// link), starts the servers the present backend
/// suites need (and finds or installs Chromium and chromedriver for the browser tests), and runs the whole workspace's tests against them in one `cargo test`
/// invocation (one build, all test binaries), then prints a summary line.
pub(crate) fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut steps = Steps::default();
    warn_if_disk_is_short();

    steps.run("rustfmt", &mut cargo(["fmt", "--all", "--", "--check"]))?;
    steps.check("docs", docs::check)?;
    steps.check("alert rules", alerts::check)?;
    steps.run(
        "clippy",
        &mut cargo([
            "clippy",
            "--workspace",
            "--all-targets",
            "--profile",
            CI_PROFILE,
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    let mut rustdoc = cargo([
        "doc",
        "--workspace",
        "--no-deps",
        "--all-features",
        "--profile",
        CI_PROFILE,
    ]);
    rustdoc.env("RUSTDOCFLAGS", "-D warnings");
    steps.run("rustdoc", &mut rustdoc)?;

    // The servers of the backends in the workspace, stopped when `services` drops: after the
    // tests, or at a failure.
    let services = steps.start_services(&suites::services_for(&suites::present()))?;
    let mut tests = cargo(["test", "--workspace", "--profile", CI_PROFILE]);
    tests.envs(services.env());
    // The dashboard's browser tests: Chromium and chromedriver, installed when missing.
    if suites::need_browser(&suites::present()) {
        let chromedriver = steps.check("browser", browser::find_or_install)?;
        let (name, value) = browser::env(&chromedriver);
        tests.env(name, value);
    }
    // The doctor's clock test shifts the clock of one process with libfaketime.
    let libfaketime = steps.check("libfaketime", faketime::find_or_install)?;
    tests.env(faketime::VAR, libfaketime);
    // An integration run was asked for: a backend that cannot be reached fails its suite
    // instead of being skipped.
    tests.env("EVENTBUS_REQUIRE_INTEGRATION", "1");
    // One fresh chaos seed for the three backends' short chaos runs, printed before they
    // start so that a failure (or a pass worth repeating) can be replayed.
    let seed = chaos_seed();
    tests.env(CHAOS_SEED_VAR, &seed);
    println!(
        "xtask test: chaos seed {seed}; replay a backend's short run with \
         `{CHAOS_SEED_VAR}={seed} cargo test -p event-redis --test chaos -- --exact chaos --nocapture` \
         (event-kafka --test chaos, event-testkit --test chaos_memory) after \
         `eval \"$(cargo xtask services up)\"`"
    );
    steps.run("tests", &mut tests)?;
    drop(services);

    println!(
        "xtask test: all {} steps passed in {} ({})",
        steps.passed.len(),
        seconds(started.elapsed()),
        steps.timings()
    );
    Ok(())
}

/// The Cargo profile of every build step (`[profile.ci]` in the workspace's `Cargo.toml`): the
/// `dev` profile without debug info or incremental caches, so a cold build needs half the disk.
const CI_PROFILE: &str = "ci";

/// Free space a cold build of the workspace and its test binaries needs, with a margin (the
/// build took 2.8 GiB with the `ci` profile on 2026-12-05).
const DISK_NEEDED_GIB: u64 = 6;

/// Warns when the disk of the target directory has less room than a cold build needs: a
/// build that fills the disk fails in odd ways (the linker killed by SIGBUS, "Bus error").
fn warn_if_disk_is_short() {
    let target = crate::services::cache_dir();
    let dir = target.parent().unwrap_or(&target);
    let Some(free_kib) = Command::new("df")
        .args(["-Pk", "--"])
        .arg(if dir.exists() {
            dir
        } else {
            std::path::Path::new(".")
        })
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
    else {
        return;
    };
    let free_gib = free_kib / (1024 * 1024);
    if free_gib < DISK_NEEDED_GIB {
        eprintln!(
            "xtask test: warning: only {free_gib} GiB free on the disk of {}; a cold build needs about \
             {DISK_NEEDED_GIB} GiB, and one that fills the disk fails oddly (the linker killed by \
             SIGBUS); `cargo clean` in another checkout frees its target directory",
            dir.display()
        );
    }
}

/// The variable the chaos tests read their seed from (`event_testkit::chaos::SEED_VAR`).
const CHAOS_SEED_VAR: &str = "EVENTBUS_CHAOS_SEED";

/// The seed set in the environment (passed on as it is: the tests check it), or a fresh
/// random one.
fn chaos_seed() -> String {
    use std::hash::BuildHasher as _;
    std::env::var(CHAOS_SEED_VAR).unwrap_or_else(|_| {
        // The standard library's hasher keys are random per process.
        let seed = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        seed.to_string()
    })
}

/// The steps that passed so far, so a failure can say how far the run got.
#[derive(Default)]
struct Steps {
    passed: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn run(&mut self, step: &'static str, command: &mut Command) -> anyhow::Result<()> {
        match shell::run(step, command) {
            Ok(took) => {
                self.passed.push((step, took));
                Ok(())
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Runs an in-process check as the step called `step`; what it found.
    fn check<T>(
        &mut self,
        step: &'static str,
        check: fn() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        match check() {
            Ok(found) => {
                self.passed.push((step, started.elapsed()));
                Ok(found)
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Starts `services` as a step of its own (none: no step).
    fn start_services(&mut self, services: &[Service]) -> anyhow::Result<RunningServices> {
        if services.is_empty() {
            println!("xtask test: no backend suite in the workspace needs a server");
            return Ok(RunningServices::default());
        }
        let started = Instant::now();
        match RunningServices::start(services) {
            Ok(running) => {
                self.passed.push(("servers", started.elapsed()));
                Ok(running)
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    fn failed(&self, error: anyhow::Error) -> anyhow::Error {
        let passed = if self.passed.is_empty() {
            "none".to_string()
        } else {
            self.timings()
        };
        error.context(format!("xtask test failed (steps passed before: {passed})"))
    }

    fn timings(&self) -> String {
        self.passed
            .iter()
            .map(|(step, took)| format!("{step} {}", seconds(*took)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
