//! The conformance suite against a real Kafka broker (`EVENTBUS_TEST_KAFKA_BROKERS`): one test
//! per trial (`cargo test -p event-kafka --test conformance per_key_order` runs one).

mod fixture;

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(|| {
        fixture::kafka_fixture("EVENTBUS_TEST_KAFKA_BROKERS", "kafka", 1)
    })
}
