//! The conformance suite against a real `redis-server` (`EVENTBUS_TEST_REDIS_URL`).

use std::sync::Arc;

use event_core::{Config, EventBus};
use event_redis::RedisBus;
use event_testkit::{Fixture, factory_fn};

/// The server under test, or a failure that says how to get one. Outside an integration run
/// (`EVENTBUS_REQUIRE_INTEGRATION` unset) a missing server is reported and the test passes.
fn redis_url() -> anyhow::Result<Option<String>> {
    match std::env::var("EVENTBUS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        _ if std::env::var("EVENTBUS_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1") => {
            anyhow::bail!(
                "EVENTBUS_TEST_REDIS_URL is not set: run `cargo xtask test`, or start a server with \
             `eval \"$(cargo xtask services up redis)\"` and run the tests again"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED: no Redis server (set EVENTBUS_TEST_REDIS_URL, or run `cargo xtask test`, which starts one)"
            );
            Ok(None)
        }
    }
}

/// A fresh `RedisBus` per bus a trial asks for, all on the test server under one key prefix.
async fn redis() -> anyhow::Result<Option<Fixture>> {
    let Some(url) = redis_url()? else {
        return Ok(None);
    };
    let mut config = Config::default();
    config.redis_url = url;
    config.redis_key_prefix = "eventbus-conformance".into();
    let factory = factory_fn(|config: Config| async move {
        Ok(Arc::new(RedisBus::connect(config).await?) as Arc<dyn EventBus>)
    });
    Ok(Some(Fixture::probe(factory, config).await?))
}

event_testkit::conformance_tests!(redis);
