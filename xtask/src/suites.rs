//! The backend suites and the servers each one needs: the one table that `cargo xtask test`
//! and `cargo xtask integration-test` read.
//!
//! A suite takes part once its backend crate exists in the workspace, so a new backend's
//! servers start as soon as its crate appears; the memory suite always does.

use std::path::Path;

use anyhow::bail;

use crate::services::Service;
use crate::shell::project_root;

/// One backend's integration tests.
#[derive(Debug)]
pub(crate) struct Suite {
    pub(crate) backend: &'static str,
    /// The backend's own package, under `crates/`; its tests read the servers' addresses from
    /// the environment. `None` for memory, which lives in `event-core`.
    pub(crate) package: Option<&'static str>,
    /// The conformance suite's test target in `event-testkit` (`tests/<name>.rs`), run when
    /// that file exists.
    pub(crate) conformance_target: &'static str,
    /// The servers it needs, started before its tests and stopped after them.
    pub(crate) services: &'static [Service],
    /// Whether its tests drive a headless Chromium (through chromedriver, which xtask installs
    /// when missing and names in `EVENTBUS_TEST_CHROMEDRIVER`).
    pub(crate) browser: bool,
}

/// Every suite, in the order they run.
pub(crate) const SUITES: &[Suite] = &[
    Suite {
        backend: "memory",
        package: None,
        conformance_target: "memory",
        services: &[],
        browser: false,
    },
    // The conformance suite also runs on a Redis Cluster (`tests/cluster.rs`).
    Suite {
        backend: "redis",
        package: Some("event-redis"),
        conformance_target: "redis",
        services: &[Service::Redis, Service::RedisCluster],
        browser: false,
    },
    // The conformance suite also runs on a three-node cluster (`tests/conformance_cluster.rs`).
    Suite {
        backend: "kafka",
        package: Some("event-kafka"),
        conformance_target: "kafka",
        services: &[Service::Kafka, Service::KafkaCluster],
        browser: false,
    },
    // Not a backend: the batch publisher is tested against the real Redis server.
    Suite {
        backend: "publishers",
        package: Some("event-publishers"),
        conformance_target: "publishers",
        services: &[Service::Redis],
        browser: false,
    },
    // Not a backend: the handlers' Redis idempotency store is tested against the real server.
    Suite {
        backend: "handlers",
        package: Some("event-handlers"),
        conformance_target: "handlers",
        services: &[Service::Redis],
        browser: false,
    },
    // Not a backend: the transactional outbox and inbox run against the real PostgreSQL, and
    // the relay also delivers to the real Redis server.
    Suite {
        backend: "outbox",
        package: Some("event-outbox"),
        conformance_target: "outbox",
        services: &[Service::Postgres, Service::Redis],
        browser: false,
    },
    // Not a backend: the manager starts and checks real Redis and Kafka buses, and its
    // dashboard is tested in a headless Chromium (`tests/dashboard.rs`).
    Suite {
        backend: "manager",
        package: Some("event-manager"),
        conformance_target: "manager",
        services: &[Service::Redis, Service::Kafka],
        browser: true,
    },
    // Not a backend: the `eventbus` binary runs against Redis and copies to Kafka.
    Suite {
        backend: "cli",
        package: Some("eventbus-cli"),
        conformance_target: "cli",
        services: &[Service::Redis, Service::Kafka],
        browser: false,
    },
];

impl Suite {
    /// Whether its backend is in the workspace yet.
    pub(crate) fn is_present(&self) -> bool {
        self.package
            .is_none_or(|package| crate_dir(package).join("Cargo.toml").is_file())
    }

    /// Whether `event-testkit` has a test target for it.
    pub(crate) fn has_conformance_target(&self) -> bool {
        crate_dir("event-testkit")
            .join("tests")
            .join(format!("{}.rs", self.conformance_target))
            .is_file()
    }
}

fn crate_dir(package: &str) -> std::path::PathBuf {
    project_root().join("crates").join(package)
}

/// The suites whose backend is in the workspace.
pub(crate) fn present() -> Vec<&'static Suite> {
    SUITES.iter().filter(|s| s.is_present()).collect()
}

/// The named backend's suite; an error when it is unknown or not in the workspace yet.
pub(crate) fn find(backend: &str) -> anyhow::Result<&'static Suite> {
    let Some(suite) = SUITES.iter().find(|s| s.backend == backend) else {
        bail!("unknown backend {backend:?}; known backends: {}", known());
    };
    if !suite.is_present() {
        bail!(
            "the {backend} backend is not in the workspace yet ({} is missing)",
            Path::new("crates")
                .join(suite.package.unwrap_or_default())
                .display()
        );
    }
    Ok(suite)
}

/// Whether any of `suites` drives a browser.
pub(crate) fn need_browser(suites: &[&Suite]) -> bool {
    suites.iter().any(|s| s.browser)
}

/// The servers that `suites` need, each once, in table order.
pub(crate) fn services_for(suites: &[&Suite]) -> Vec<Service> {
    let mut services = Vec::new();
    for service in suites.iter().flat_map(|s| s.services) {
        if !services.contains(service) {
            services.push(*service);
        }
    }
    services
}

pub(crate) fn known() -> String {
    SUITES
        .iter()
        .map(|s| s.backend)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_always_present_and_needs_no_server() {
        let memory = find("memory").unwrap();
        assert!(memory.services.is_empty());
        assert!(memory.has_conformance_target());
        assert!(present().iter().any(|s| s.backend == "memory"));
        assert!(
            find("mongo")
                .unwrap_err()
                .to_string()
                .contains("memory, redis, kafka")
        );
    }

    #[test]
    fn each_server_is_needed_once() {
        let all: Vec<&Suite> = SUITES.iter().collect();
        assert_eq!(
            services_for(&all),
            [
                Service::Redis,
                Service::RedisCluster,
                Service::Kafka,
                Service::KafkaCluster,
                Service::Postgres
            ]
        );
        let doubled = [&SUITES[1], &SUITES[1], &SUITES[0]];
        assert_eq!(
            services_for(&doubled),
            [Service::Redis, Service::RedisCluster]
        );
        assert!(services_for(&[&SUITES[0]]).is_empty());
    }
}
