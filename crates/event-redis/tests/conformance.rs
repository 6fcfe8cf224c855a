//! The conformance suite against a real `redis-server` (`EVENTBUS_TEST_REDIS_URL`): one test
//! per trial (`cargo test -p event-redis --test conformance per_key_order` runs one).

use std::sync::Arc;

use event_core::{Config, EventBus};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::{Fixture, factory_fn, test_server};

/// A fresh `RedisBus` per bus a trial asks for, all on the test server under one key prefix.
async fn redis() -> anyhow::Result<Option<Fixture>> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(None);
    };
    let redis = RedisConfig::builder()
        .url(url)
        .key_prefix("eventbus-conformance")
        .build()?;
    let factory = factory_fn(move |config: Config| {
        let redis = redis.clone();
        async move { Ok(Arc::new(RedisBus::connect(redis, config).await?) as Arc<dyn EventBus>) }
    });
    Ok(Some(Fixture::probe(factory, Config::default()).await?))
}

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(redis)
}
