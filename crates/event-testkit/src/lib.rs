#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod bench_tracing;
pub mod chaos;
mod fixture;
mod harness;
mod intercept;
pub mod load;
mod metrics_probe;
mod postgres_server;
mod redis_cluster;
pub mod secrets;
mod servers;
mod support;
pub mod tls;
mod trace_probe;
mod trial;
mod trials;

pub use fixture::{BusFactory, Fixture, FnFactory, MaybeFixture, factory_fn};
pub use harness::run_conformance;
pub use intercept::{InterceptedBus, PublishHook};
pub use postgres_server::PostgresServer;
pub use redis_cluster::RedisCluster;
pub use servers::{integration_required, postgres_schema, test_server, unique};
pub use trial::{TRIALS, Trial, Verdict, run_trial};

#[cfg(test)]
mod tests {
    use super::TRIALS;

    /// The source of each trial module, to check the list against the code.
    const SOURCES: &[(&str, &str)] = &[
        ("dead_letters", include_str!("trials/dead_letters.rs")),
        ("delivery", include_str!("trials/delivery.rs")),
        ("encryption", include_str!("trials/encryption.rs")),
        ("envelope", include_str!("trials/envelope.rs")),
        ("failures", include_str!("trials/failures.rs")),
        ("groups", include_str!("trials/groups.rs")),
        ("lifecycle", include_str!("trials/lifecycle.rs")),
        ("ordering", include_str!("trials/ordering.rs")),
        ("publish", include_str!("trials/publish.rs")),
        ("replay", include_str!("trials/replay.rs")),
        ("retention", include_str!("trials/retention.rs")),
        ("sourcing", include_str!("trials/sourcing.rs")),
        ("stats_health", include_str!("trials/stats_health.rs")),
        ("telemetry", include_str!("trials/telemetry.rs")),
        ("traces", include_str!("trials/traces.rs")),
        ("supervision", include_str!("trials/supervision.rs")),
    ];

    #[test]
    fn each_trial_doc_is_its_functions_doc_comment() {
        for trial in TRIALS {
            let (module, function) = trial.name.split_once("::").unwrap();
            let source = SOURCES
                .iter()
                .find(|(m, _)| *m == module)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("no source for module {module}"));
            let expected = format!("/// {}\npub(crate) async fn {function}(", trial.doc);
            assert!(
                source.contains(&expected),
                "the list's doc of {} is not the doc comment of its function",
                trial.name
            );
        }
    }

    #[test]
    fn trial_list_is_complete_and_unique() {
        assert!(
            TRIALS.len() >= 30,
            "only {} trials in the suite",
            TRIALS.len()
        );
        let names: std::collections::HashSet<&str> = TRIALS.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), TRIALS.len(), "trial names repeat");
        for trial in TRIALS {
            assert!(
                trial.name.contains("::"),
                "{} is not module::function",
                trial.name
            );
            assert!(!trial.doc.is_empty(), "{} has no doc", trial.name);
        }
    }

    #[test]
    fn every_trial_function_is_listed() {
        let mut found = 0;
        for (module, source) in SOURCES {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub(crate) async fn ") {
                    let function = rest.split('(').next().unwrap();
                    let name = format!("{module}::{function}");
                    assert!(
                        TRIALS.iter().any(|t| t.name == name),
                        "{name} is not in the trial list"
                    );
                    found += 1;
                }
            }
        }
        assert_eq!(found, TRIALS.len());
    }
}
