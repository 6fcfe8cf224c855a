//! `eventbus doctor`: checks the configured backend and the configuration, and prints each
//! finding with its fix (`docs/troubleshooting.md` explains every one).
//!
//! - `config`: unknown `EVENT_*`, `REDIS_*`, `KAFKA_*` variables (typos), bad values, and
//!   values that contradict each other;
//! - `groups`: the bus itself, opened as every command opens it (reachability, authentication,
//!   TLS), and every handler's group from its stats (lag, pending, dead letters, members);
//! - `redis`: the Redis server's facts (version, memory policy, replicas, clock, streams,
//!   stalled consumers);
//! - `kafka`: the Kafka cluster's facts through `event_kafka::KafkaAdmin`, with the bus's TLS
//!   and SASL settings (the APIs the bus needs, brokers, topics: partitions, replication,
//!   retention).
//!
//! An unreachable server is a finding, not an error: the configuration is still checked, and
//! every network step is bounded by `--timeout`, so doctor never hangs.

mod config;
mod groups;
mod kafka;
mod redis;

use std::time::Duration;

use serde::Serialize;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// `eventbus doctor` flags.
#[derive(clap::Args, Debug)]
pub(crate) struct DoctorArgs {
    /// The longest any one network step may take, in seconds (connecting, one command).
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Fine.
    Ok,
    /// Not checked, with the reason (the backend cannot tell, or an earlier failure).
    Skip,
    /// Works, but something is off: the fix says what to change.
    Warn,
    /// Broken: the fix says what to change.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One finding: what was checked, how it came out, and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    /// The check, such as `server.version` or `group.lag` (listed in
    /// `docs/troubleshooting.md`).
    pub(crate) check: &'static str,
    pub(crate) status: Status,
    pub(crate) message: String,
    /// What to do: set for `warn` and `fail`.
    pub(crate) fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn skip(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Skip,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn fail(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check and prints the findings. Exit 0 when all are ok (or skipped), 6 when the
/// worst is a warning, 7 when one failed.
pub(crate) async fn run(ctx: &Context, args: DoctorArgs) -> anyhow::Result<Exit> {
    let timeout = Duration::from_secs(args.timeout);
    let mut findings = config::unknown_variables(std::env::vars());
    findings.extend(config::contradictions(ctx));
    findings.extend(backend(ctx, timeout).await);
    print(&findings, ctx.json)?;
    Ok(exit_code(&findings))
}

/// The findings when the configuration does not load (`error`, from `Context::from_env`):
/// each bad value, and the unknown variables, which are often why.
pub(crate) fn unloadable(error: &anyhow::Error, json: bool) -> anyhow::Result<Exit> {
    let mut findings = config::unknown_variables(std::env::vars());
    findings.extend(config::load_error(error));
    findings.push(Finding::skip(
        "connection",
        "the backend was not checked: the configuration does not load",
    ));
    print(&findings, json)?;
    Ok(exit_code(&findings))
}

/// The backend's checks: the bus as every command opens it, then the server's own facts.
async fn backend(ctx: &Context, timeout: Duration) -> Vec<Finding> {
    let settings = &ctx.settings;
    match settings.bus_type {
        event_manager::BusType::Memory => vec![Finding::ok(
            "connection",
            "EVENT_BUS_TYPE=memory: the bus lives in this process, nothing to reach (set EVENT_BUS_TYPE=redis or kafka to check a server)",
        )],
        event_manager::BusType::Redis => {
            let (mut findings, stats) = groups::check(ctx, timeout).await;
            if groups::reached(&findings) {
                findings.extend(redis::check(settings, stats.as_ref(), timeout).await);
            }
            findings
        }
        event_manager::BusType::Kafka => {
            let (mut findings, _) = groups::check(ctx, timeout).await;
            if groups::reached(&findings) {
                findings.extend(kafka::check(settings, timeout).await);
            }
            findings
        }
        other => vec![Finding::skip(
            "connection",
            format!("no checks for the {other} backend"),
        )],
    }
}

/// The exit code of a set of findings.
fn exit_code(findings: &[Finding]) -> Exit {
    match findings.iter().map(|f| f.status).max() {
        Some(Status::Fail) => Exit::Unhealthy,
        Some(Status::Warn) => Exit::Degraded,
        _ => Exit::Ok,
    }
}

/// One line per finding, the fix on the next; or a JSON array of findings.
fn print(findings: &[Finding], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&findings);
    }
    for finding in findings {
        out!(
            "{:<5} {}: {}",
            finding.status.label(),
            finding.check,
            finding.message
        );
        if let Some(fix) = &finding.fix {
            out!("      fix: {fix}");
        }
    }
    let count = |status| findings.iter().filter(|f| f.status == status).count();
    out!(
        "{} ok, {} warnings, {} failures, {} skipped",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    );
    Ok(())
}

/// Runs `step` for at most `timeout`; `None` when it took longer.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout(timeout, step).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_decides_the_exit_code() {
        let ok = Finding::ok("a", "fine");
        let skip = Finding::skip("b", "not here");
        let warn = Finding::warn("c", "off", "fix it");
        let fail = Finding::fail("d", "broken", "fix it");
        assert_eq!(exit_code(&[ok.clone(), skip.clone()]), Exit::Ok);
        assert_eq!(exit_code(&[ok.clone(), warn.clone()]), Exit::Degraded);
        assert_eq!(exit_code(&[warn, fail, ok]), Exit::Unhealthy);
        assert_eq!(exit_code(&[skip]), Exit::Ok);
    }
}
