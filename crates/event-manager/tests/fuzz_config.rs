//! Every configuration variable of every table (the manager's, the shared ones, Redis, Kafka,
//! the audit trail, the HTTP API) fed random values, alone and several at once: reading them
//! never panics, and a refusal names a variable that was set. The tables are walked, so a new
//! variable is fuzzed as soon as it is declared.

use std::collections::BTreeMap;

mod fuzz_runner;

use event_core::config::table::Variable;
use event_core::{Config, EnvSettings};
use event_handlers::AuditSettings;
use event_manager::Settings;
use event_manager::http::{ApiLimits, ApiTls, ApiTokens, VARIABLES as API_VARIABLES};
use fuzz_runner::run;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Values people write, and values nobody should: numbers of every size and sign, words,
/// separators, URLs with odd user information, control characters and any Unicode.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "-?[0-9_]{0,25}",
        "[0-9]{18,40}",
        "(true|false|yes|no|on|off|1|0|TRUE|maybe)",
        "[ \t]{0,3}[a-zA-Z0-9:,=@/._-]{0,30}[ \t]{0,3}",
        "(redis|rediss|redis-cluster|unix|kafka|http)://[a-zA-Z0-9:@/.,?=%#-]{0,40}",
        "(read|admin|root):[a-zA-Z0-9]{0,40}(,(read|admin|x):[a-zA-Z0-9]{0,40}){0,3}",
        "[a-z0-9._-]{1,12}:[A-Za-z0-9+/=]{0,60}(,[a-z]{1,4}:[A-Za-z0-9+/=]{0,50}){0,2}",
        "\\PC{0,20}",
        "[\\x00-\\x1f]{1,5}",
    ]
}

/// Every variable of every table.
fn every_variable() -> Vec<&'static Variable> {
    Settings::variables()
        .chain(AuditSettings::VARIABLES)
        .chain(API_VARIABLES)
        .collect()
}

/// Reads `vars` with every reader; the message of each refusal.
fn read_all(vars: &BTreeMap<String, String>) -> Vec<String> {
    let lookup = |name: &str| vars.get(name).cloned();
    let mut refusals = Vec::new();
    let mut note = |result: Result<(), String>| {
        if let Err(message) = result {
            refusals.push(message);
        }
    };
    note(
        Settings::from_vars(vars.clone())
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        AuditSettings::from_lookup(&lookup)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        ApiLimits::from_lookup(&lookup)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        ApiTls::from_lookup(&lookup)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    if let Some(tokens) = vars.get("EVENT_API_TOKENS") {
        note(
            ApiTokens::parse(tokens)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    }
    refusals
}

/// Appended to each secret value before the leak check: a value the fuzz made up may happen
/// to be part of a refusal's help text (`redis-cluster://`), the marked one cannot.
const MARK: &str = "Zq7xK9";

/// Every refusal names one of the variables set, and shows no secret value in full.
fn check(vars: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    for message in read_all(vars) {
        prop_assert!(!message.is_empty());
        prop_assert!(
            vars.keys().any(|name| message.contains(name.as_str())),
            "{message:?} names none of {:?}",
            vars.keys().collect::<Vec<_>>()
        );
    }
    let variables = every_variable();
    let secret = |name: &str, value: &str| {
        variables
            .iter()
            .any(|var| var.name == name && var.redact(value) != value)
    };
    let marked: BTreeMap<String, String> = vars
        .iter()
        .map(|(name, value)| {
            let with_mark = format!("{value}{MARK}");
            if secret(name, &with_mark) {
                (name.clone(), with_mark)
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect();
    for message in read_all(&marked) {
        for (name, value) in &marked {
            if secret(name, value) {
                prop_assert!(
                    !message.contains(value.as_str()),
                    "{message:?} shows the secret {name}"
                );
            }
        }
    }
    Ok(())
}

/// The tables the walk must reach; the backends' ones only with their features, so a build
/// without them fails here rather than fuzzing fewer variables in silence.
#[test]
fn every_table_is_walked() {
    let names: Vec<&str> = every_variable().iter().map(|v| v.name).collect();
    for backend in ["REDIS_KEY_PREFIX", "KAFKA_BOOTSTRAP_SERVERS"] {
        assert!(
            names.contains(&backend),
            "no {backend}: the configuration fuzz needs the redis and kafka features \
             (--all-features)"
        );
    }
    let mut tables: Vec<(&str, &[Variable])> = vec![
        ("Settings", Settings::own_variables()),
        ("Config", Config::VARIABLES),
        ("AuditSettings", AuditSettings::VARIABLES),
        ("http", API_VARIABLES),
    ];
    #[cfg(feature = "redis")]
    tables.push(("RedisConfig", event_redis::RedisConfig::VARIABLES));
    #[cfg(feature = "kafka")]
    tables.push(("KafkaConfig", event_kafka::KafkaConfig::VARIABLES));
    for (table, variables) in tables {
        assert!(!variables.is_empty(), "{table} declares no variable");
        for var in variables {
            assert!(
                names.contains(&var.name),
                "{table}'s {} is not fuzzed",
                var.name
            );
        }
    }
}

#[test]
fn each_variable_alone_never_panics_and_refusals_name_it() -> anyhow::Result<()> {
    for var in every_variable() {
        run(var.name, 100, &value(), |value| {
            let vars = BTreeMap::from([(var.name.to_string(), value)]);
            check(&vars)
        })?;
    }
    Ok(())
}

#[test]
fn several_variables_at_once_never_panic() -> anyhow::Result<()> {
    let names: Vec<&'static str> = every_variable().iter().map(|v| v.name).collect();
    let strategy = prop::collection::btree_map(prop::sample::select(names), value(), 1..12);
    run("several variables", 2_000, &strategy, |vars| {
        let vars = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        check(&vars)
    })
}
