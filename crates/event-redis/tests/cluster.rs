//! The conformance suite against a real Redis Cluster of three masters with a replica each
//! (`EVENTBUS_TEST_REDIS_CLUSTER_URL`, from `cargo xtask services up redis --cluster`): the
//! event types' streams lie on different masters, so every read, batch, dead letter, redrive
//! and event-sourcing append crosses hash slots. One test per trial.

mod fixture;

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(|| {
        fixture::redis_fixture("EVENTBUS_TEST_REDIS_CLUSTER_URL", "redis-cluster")
    })
}
