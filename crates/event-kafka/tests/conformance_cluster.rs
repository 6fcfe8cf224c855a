//! The conformance suite against a real three-node Kafka cluster
//! (`EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS`, from `cargo xtask services up kafka --brokers 3`),
//! with topics of replication factor 3 and `min.insync.replicas=2`: every promise of the bus
//! holds with partitions led by different nodes. One test per trial.

mod fixture;

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(|| {
        fixture::kafka_fixture("EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS", "kafka-cluster", 3)
    })
}
