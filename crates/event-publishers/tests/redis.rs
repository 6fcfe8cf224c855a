//! The batch publisher on a real Redis server (`EVENTBUS_TEST_REDIS_URL`, started by
//! `cargo xtask test`): thousands of typed events in batches, none lost, none doubled, each
//! readable as its payload type.

use std::sync::Arc;

use event_core::{Config, Event, EventBus, EventType, ReplayQuery};
use event_publishers::{
    BatchPublisher, BatchSettings, DomainEvent, EventPublisher, SignalDetected,
};
use event_redis::{RedisBus, RedisConfig};
use futures::TryStreamExt;

#[tokio::test]
async fn thousands_of_batched_events_reach_redis_once_each() -> anyhow::Result<()> {
    let Some(url) = event_testkit::test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let redis = RedisConfig::builder()
        .url(url)
        .key_prefix(format!("publishers-test-{:08x}", fastrand::u32(..)))
        .build()?;
    let bus = Arc::new(RedisBus::connect(redis, Config::default()).await?);
    let publisher = EventPublisher::new(bus.clone(), "batch_service").for_request("req-redis");
    let batch = BatchPublisher::new(
        publisher,
        BatchSettings::new(100, std::time::Duration::from_secs(3600)),
    );
    let n = 2_050;
    for i in 0..n {
        batch
            .add(SignalDetected {
                signal_id: format!("signal-{i}"),
                source: "reddit".into(),
                signal_type: "pain_point".into(),
                content: format!("Market signal {i}"),
                confidence: 0.6,
                ..Default::default()
            })
            .await?;
    }
    assert_eq!(
        batch.pending(),
        50,
        "20 full batches went out as they filled"
    );
    let report = batch.close().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.published.len(), 50);
    assert_eq!(report.batches, 1);

    let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let events: Vec<Event> = bus
        .replay(ReplayQuery::new([EventType::SIGNAL_DETECTED], from))
        .await?
        .try_collect()
        .await?;
    assert_eq!(events.len(), n);
    for (i, event) in events.iter().enumerate() {
        let signal = SignalDetected::from_event(event)?;
        assert_eq!(signal.signal_id, format!("signal-{i}"));
        assert_eq!(event.correlation_id.as_deref(), Some("req-redis"));
        assert_eq!(
            event.partition_key.as_deref(),
            Some(signal.signal_id.as_str())
        );
    }
    bus.shutdown().await?;
    Ok(())
}
