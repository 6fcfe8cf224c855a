//! The bus as every command opens it: reaching the server (with its authentication and TLS),
//! the capability warnings of the settings, and every handler's group from the bus's stats:
//! lag, pending events, dead letters and members.

use std::time::Duration;

use event_manager::{HandlerReport, ManagerStats};

use super::{Finding, Status, bounded};
use crate::context::Context;
use crate::exit::Exit;

/// The check that says whether the server was reached.
const CONNECTION: &str = "connection";

/// Whether the findings say the server was reached.
pub(super) fn reached(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| f.check == CONNECTION && f.status == Status::Ok)
}

/// Opens the bus, reads its stats and judges every group; the stats for the backend's own
/// checks.
pub(super) async fn check(
    ctx: &Context,
    timeout: Duration,
) -> (Vec<Finding>, Option<ManagerStats>) {
    let bus = ctx.settings.bus_type;
    let server = server_of(ctx);
    let manager = match bounded(timeout, ctx.open()).await {
        None => {
            return (
                vec![Finding::fail(
                    CONNECTION,
                    format!("{bus} at {server} did not answer within {timeout:?}"),
                    format!(
                        "check that the server runs and that {server} is its address (host, port, firewall); raise --timeout on a slow network"
                    ),
                )],
                None,
            );
        }
        Some(Err(e)) => return (vec![connection_failure(ctx, &e)], None),
        Some(Ok(manager)) => manager,
    };
    let mut findings = vec![Finding::ok(
        CONNECTION,
        format!("connected to {bus} at {server}"),
    )];
    for warning in manager.warnings() {
        findings.push(Finding::warn(
            "config.capability",
            warning,
            "change the setting the message names (docs/configuration.md)",
        ));
    }
    let stats = match bounded(timeout, manager.stats()).await {
        Some(Ok(stats)) => Some(stats),
        Some(Err(e)) => {
            findings.push(Finding::fail(
                "group.stats",
                format!("cannot read the bus's stats: {e}"),
                "run `eventbus -v stats` to see the failing command; see docs/troubleshooting.md",
            ));
            None
        }
        None => {
            findings.push(Finding::fail(
                "group.stats",
                format!("reading the bus's stats took longer than {timeout:?}"),
                "the server is overloaded or holds very many streams or topics; raise --timeout",
            ));
            None
        }
    };
    let _ = bounded(timeout, manager.stop()).await;
    if let Some(stats) = &stats {
        findings.extend(judge_groups(stats, ctx.settings.bus_type));
    }
    (findings, stats)
}

/// The server the settings point at, with any password hidden.
pub(super) fn server_of(ctx: &Context) -> String {
    match ctx.settings.bus_type {
        event_manager::BusType::Kafka => ctx.settings.kafka.bootstrap_servers.join(","),
        _ => event_core::redact_url(&ctx.settings.redis.url),
    }
}

/// The failure to open the bus, with the fix for its kind: unreachable, refused credentials,
/// TLS, or a setting.
fn connection_failure(ctx: &Context, error: &anyhow::Error) -> Finding {
    let message = format!("{error:#}");
    // The error without the server's address, whose scheme (`rediss://`) says nothing about
    // what went wrong.
    let lower = message.replace(&server_of(ctx), "").to_lowercase();
    let bus = ctx.settings.bus_type;
    let kafka = bus == event_manager::BusType::Kafka;
    let tls_url = !kafka && ctx.settings.redis.url.starts_with("rediss");
    let fix = if [
        "wrongpass",
        "noauth",
        "invalid password",
        "authentication",
        "sasl",
        "invalid username",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        if kafka {
            "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD against the broker's listener".to_string()
        } else {
            "put the right user and password in REDIS_URL (redis://user:password@host:6379/0, percent-encoded); `redis-cli -u URL ping` answers PONG when they are right".to_string()
        }
    } else if tls_url
        && ["timed out", "reset", "eof", "wrong version"]
            .iter()
            .any(|w| lower.contains(w))
    {
        "the server does not answer TLS on this port: use a redis:// URL for a plain port, or the port of its TLS listener (tls-port)".to_string()
    } else if ["certificate", "tls", "handshake", "rediss"]
        .iter()
        .any(|w| lower.contains(w))
    {
        if kafka {
            "set KAFKA_TLS_ENABLED=true for a TLS listener, and KAFKA_TLS_CA_FILE to the CA that signed the broker's certificate".to_string()
        } else {
            "use a rediss:// URL for a TLS port, and REDIS_TLS_CA_FILE for a certificate signed by your own CA".to_string()
        }
    } else {
        match crate::exit::classify(error) {
            Exit::Config => {
                "correct the setting the message names (docs/configuration.md)".to_string()
            }
            _ if kafka => format!(
                "start the broker, or point KAFKA_BOOTSTRAP_SERVERS at it ({}); from this host, `nc -z HOST PORT` must connect, and the broker's advertised.listeners must be reachable too",
                server_of(ctx)
            ),
            _ => format!(
                "start Redis, or point REDIS_URL at it ({}); `redis-cli -u URL ping` must answer PONG from this host",
                server_of(ctx)
            ),
        }
    };
    Finding::fail(CONNECTION, message, fix)
}

/// The findings of every handler's group.
fn judge_groups(stats: &ManagerStats, bus: event_manager::BusType) -> Vec<Finding> {
    if stats.handlers.is_empty() {
        return vec![Finding::ok(
            "group.lag",
            "no handler's group on this bus yet (groups appear when a handler first subscribes)",
        )];
    }
    let mut findings = Vec::new();
    for (handler, report) in &stats.handlers {
        findings.extend(judge_group(handler, report, bus));
    }
    findings
}

fn judge_group(handler: &str, report: &HandlerReport, bus: event_manager::BusType) -> Vec<Finding> {
    let group = &report.group;
    let mut findings = Vec::new();
    let kafka = bus == event_manager::BusType::Kafka;
    if kafka {
        findings.push(if report.members.is_empty() {
            Finding::warn(
                "group.members",
                format!("group {group} (handler {handler}) has no member: no process consumes its events now"),
                format!("start a process that runs the handler {handler} (eventbus serve, or your service)"),
            )
        } else {
            Finding::ok(
                "group.members",
                format!("group {group} has {} member(s)", report.members.len()),
            )
        });
    }
    findings.push(if report.lag > 0 {
        Finding::warn(
            "group.lag",
            format!(
                "group {group} (handler {handler}) is {} events behind",
                report.lag
            ),
            format!(
                "start or scale the processes that run {handler}; if they run, they are slower than the publishers (raise EVENT_HANDLER_CONCURRENCY{}); watch the lag with `eventbus stats`",
                if kafka { ", or add partitions and members" } else { ", or add instances" }
            ),
        )
    } else {
        Finding::ok("group.lag", format!("group {group} has no lag"))
    });
    if report.pending > 0 {
        findings.push(Finding::ok(
            "group.pending",
            format!(
                "group {group}: {} events delivered and not yet acknowledged",
                report.pending
            ),
        ));
    }
    findings.push(if report.dead_letter_depth > 0 {
        Finding::warn(
            "group.dead_letters",
            format!(
                "handler {handler} has {} dead letters",
                report.dead_letter_depth
            ),
            format!(
                "read why with `eventbus dead-letters list --handler {handler}`; fix the cause, then `eventbus dead-letters redrive --handler {handler} --all` (or `purge`)"
            ),
        )
    } else {
        Finding::ok(
            "group.dead_letters",
            format!("handler {handler} has no dead letters"),
        )
    });
    findings
}
