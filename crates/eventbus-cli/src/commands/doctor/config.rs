//! The configuration's checks: variables the bus does not know (usually typos, with the
//! closest known name), values that do not load, and values that contradict each other in
//! ways `Settings::validate` cannot reject (each is valid alone).

use std::collections::BTreeSet;

use event_core::EnvSettings;
use event_core::config::table::Variable;
use event_manager::{BusType, Settings};

use super::Finding;
use crate::context::Context;

/// The prefixes of the bus's variables: a variable with one of them that the bus does not
/// read is most likely a typo.
const PREFIXES: [&str; 5] = [
    "EVENT_",
    "REDIS_",
    "KAFKA_",
    "ENABLE_EVENT",
    "ENABLED_EVENT",
];

/// Variables with the bus's prefixes that other programs read: Apache Kafka's own scripts
/// (`kafka-server-start.sh`, `kafka-run-class.sh`). Not typos.
const OTHER_PROGRAMS: [&str; 8] = [
    "KAFKA_HEAP_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_DEBUG",
    "KAFKA_HOME",
];

/// Every variable the bus reads: the tables `docs/configuration.md` is generated from.
fn known_variables() -> Vec<&'static Variable> {
    Settings::variables()
        .chain(event_handlers::AuditSettings::VARIABLES)
        .chain(event_manager::http::VARIABLES)
        .collect()
}

/// A warning for each variable of `env` with one of the bus's prefixes that no table
/// declares, naming the closest known variable when one is close.
pub(super) fn unknown_variables(env: impl Iterator<Item = (String, String)>) -> Vec<Finding> {
    let known = known_variables();
    let mut unknown: Vec<String> = env
        .map(|(name, _)| name)
        .filter(|name| PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|name| !OTHER_PROGRAMS.contains(&name.as_str()))
        .filter(|name| !known.iter().any(|v| v.name == name))
        .collect();
    unknown.sort();
    let mut findings: Vec<Finding> = unknown
        .into_iter()
        .map(|name| match closest(&name, &known) {
            Some(near) => Finding::warn(
                "config.unknown_variable",
                format!("unknown variable {name}; did you mean {near}?"),
                format!("rename {name} to {near}: the bus ignores variables it does not know, so {near} is at its default"),
            ),
            None => Finding::warn(
                "config.unknown_variable",
                format!("unknown variable {name}: no setting of the bus has this name"),
                format!("remove {name}, or find the setting you meant in docs/configuration.md"),
            ),
        })
        .collect();
    if findings.is_empty() {
        findings.push(Finding::ok(
            "config.unknown_variable",
            "every EVENT_*, REDIS_* and KAFKA_* variable set is one the bus reads",
        ));
    }
    findings
}

/// The known variable nearest to `name`, if it is near enough to be a typo of it.
fn closest(name: &str, known: &[&'static Variable]) -> Option<&'static str> {
    let (distance, near) = known
        .iter()
        .map(|v| (edit_distance(name, v.name), v.name))
        .min()?;
    // A slip of a few keys, never a third of the name.
    (distance <= 3 && distance * 3 < name.len()).then_some(near)
}

/// The edit distance with transpositions (optimal string alignment): `TPYE` is one edit
/// from `TYPE`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The configuration did not load: a failure per bad variable, with what is allowed.
pub(super) fn load_error(error: &anyhow::Error) -> Vec<Finding> {
    let problems = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<event_core::ConfigError>())
        .map(|e| e.problems().to_vec());
    match problems {
        Some(problems) if !problems.is_empty() => problems
            .into_iter()
            .map(|p| {
                Finding::fail(
                    "config.value",
                    p.to_string(),
                    format!("set {} to {}", p.variable, p.expected),
                )
            })
            .collect(),
        _ => vec![Finding::fail(
            "config.value",
            format!("{error:#}"),
            "correct the configuration the message names (docs/configuration.md)",
        )],
    }
}

/// The names of a backend's own variables: those of the settings' tables with its prefix
/// that the shared table does not hold (`KAFKA_CONSUMER_GROUP` is every backend's).
fn backend_variables(bus: BusType) -> Vec<&'static str> {
    let prefix = match bus {
        BusType::Redis => "REDIS_",
        BusType::Kafka => "KAFKA_",
        _ => return Vec::new(),
    };
    Settings::variables()
        .map(|v| v.name)
        .filter(|n| n.starts_with(prefix))
        .filter(|n| !event_core::Config::VARIABLES.iter().any(|v| v.name == *n))
        .collect()
}

/// Values that are each valid but contradict each other or the chosen backend.
pub(super) fn contradictions(ctx: &Context) -> Vec<Finding> {
    let explicit = ctx.explicit_variables();
    let settings = &ctx.settings;
    let mut findings = Vec::new();
    let set = |name: &str| explicit.contains(name);
    let other_backends: Vec<(BusType, Vec<&'static str>)> = [BusType::Redis, BusType::Kafka]
        .into_iter()
        .filter(|b| *b != settings.bus_type)
        .map(|b| {
            let names = backend_variables(b)
                .into_iter()
                .filter(|n| set(n))
                .collect();
            (b, names)
        })
        .filter(|(_, names): &(BusType, Vec<&str>)| !names.is_empty())
        .collect();
    for (other, names) in &other_backends {
        let list = names.join(", ");
        let bus = settings.bus_type;
        let (message, fix) = if !set("EVENT_BUS_TYPE") {
            (
                format!(
                    "{list} set but EVENT_BUS_TYPE is not, so the bus runs on {bus} and ignores them"
                ),
                format!("set EVENT_BUS_TYPE={other}"),
            )
        } else if own_server_unset(bus, &explicit) {
            (
                format!(
                    "EVENT_BUS_TYPE={bus} but only {other}'s settings are set ({list}): the bus connects to {bus} at its default address"
                ),
                format!(
                    "set EVENT_BUS_TYPE={other}, or set {} to your {bus} server",
                    server_variable(bus)
                ),
            )
        } else {
            (
                format!("{list} has no effect with EVENT_BUS_TYPE={bus}"),
                format!(
                    "remove {list}, or set EVENT_BUS_TYPE={other} if that is the backend you meant"
                ),
            )
        };
        findings.push(Finding::warn("config.contradiction", message, fix));
    }
    if !settings.enable_event_handlers && set("ENABLED_EVENT_HANDLERS") {
        findings.push(Finding::warn(
            "config.contradiction",
            "ENABLED_EVENT_HANDLERS is set but ENABLE_EVENT_HANDLERS=false: no domain handler runs, whatever the list says",
            "set ENABLE_EVENT_HANDLERS=true to run the listed handlers, or remove ENABLED_EVENT_HANDLERS",
        ));
    }
    if settings.bus_type == BusType::Redis
        && settings.redis.wait_replicas == 0
        && set("REDIS_WAIT_TIMEOUT_MS")
    {
        findings.push(Finding::warn(
            "config.contradiction",
            "REDIS_WAIT_TIMEOUT_MS is set but REDIS_WAIT_REPLICAS=0: publishes wait for no replica, so the timeout is never used",
            "set REDIS_WAIT_REPLICAS to the replicas each publish must reach, or remove REDIS_WAIT_TIMEOUT_MS",
        ));
    }
    if !settings.bus.encrypt_payloads && set("EVENT_ENCRYPTION_KEYS") {
        findings.push(Finding::warn(
            "config.contradiction",
            "EVENT_ENCRYPTION_KEYS is set but ENABLE_EVENT_ENCRYPTION is false: new events are published in clear",
            "set ENABLE_EVENT_ENCRYPTION=true to encrypt payloads (docs/operations.md, \"Payload encryption\")",
        ));
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            "config.contradiction",
            format!(
                "the settings agree with each other and with EVENT_BUS_TYPE={}",
                settings.bus_type
            ),
        ));
    }
    findings
}

/// Whether the variable naming `bus`'s server is unset.
fn own_server_unset(bus: BusType, explicit: &BTreeSet<String>) -> bool {
    !explicit.contains(server_variable(bus))
}

fn server_variable(bus: BusType) -> &'static str {
    match bus {
        BusType::Kafka => "KAFKA_BOOTSTRAP_SERVERS",
        _ => "REDIS_URL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(names: &[&str]) -> impl Iterator<Item = (String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), "x".to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_typo_names_the_variable_meant() {
        let findings = unknown_variables(env(&[
            "EVENT_BUS_TPYE",
            "REDIS_URI",
            "KAFKA_PARTITONS",
            "EVENT_BUS_TYPE",
            "PATH",
            "KAFKA_HEAP_OPTS",
        ]));
        let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown variable EVENT_BUS_TPYE; did you mean EVENT_BUS_TYPE?",
                "unknown variable KAFKA_PARTITONS; did you mean KAFKA_PARTITIONS?",
                "unknown variable REDIS_URI; did you mean REDIS_URL?",
            ]
        );
    }

    #[test]
    fn a_name_far_from_every_variable_gets_no_suggestion() {
        let findings = unknown_variables(env(&["EVENT_SOMETHING_ELSE_ENTIRELY"]));
        assert_eq!(
            findings[0].message,
            "unknown variable EVENT_SOMETHING_ELSE_ENTIRELY: no setting of the bus has this name"
        );
    }

    #[test]
    fn transpositions_are_one_edit() {
        assert_eq!(edit_distance("TPYE", "TYPE"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
