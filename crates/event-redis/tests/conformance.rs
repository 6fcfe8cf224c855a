//! The conformance suite against a real `redis-server` (`EVENTBUS_TEST_REDIS_URL`): one test
//! per trial (`cargo test -p event-redis --test conformance per_key_order` runs one).

mod fixture;

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(|| fixture::redis_fixture("EVENTBUS_TEST_REDIS_URL", "redis"))
}
