//! What the harness records: attempts and their outcomes (panics included), publishes and
//! who made them (under parallel lanes, through every publishing method), handlers subscribed
//! through the bus it hands out, and clear errors for names it never saw.

use std::sync::Arc;
use std::time::Duration;

use event_core::{
    AggregateAppend, Config, Event, EventBus, EventType, ExpectedVersion, HandlerError, ResultExt,
    SubscriptionSpec, handler_fn,
};
use event_test::{Outcome, TestBus, TestBusError};

fn event(event_type: &EventType, n: u64) -> Event {
    Event::builder(event_type.clone(), "test")
        .field("n", n)
        .partition_key(format!("key-{}", n % 16))
        .build()
        .expect("a valid event")
}

/// Two handlers publish follow-ups on eight lanes each, one event at a time and in batches;
/// each of the 3,000 follow-ups is attributed to the handler that published it, the test's
/// own 1,500 events to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_are_attributed_to_their_handler_under_parallel_lanes() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.handler_concurrency = 8;
    let t = TestBus::with_config(config)?;
    let source = EventType::OPPORTUNITY_CREATED;
    let bus = t.bus();
    t.subscribe(
        [source.clone()],
        handler_fn("single", move |event| {
            let bus = bus.clone();
            async move {
                let next = event
                    .caused(EventType::OPPORTUNITY_VALIDATED, "single")
                    .build()
                    .permanent()?;
                bus.publish(next).await.transient()?;
                Ok(())
            }
        }),
    )
    .await?;
    let bus = t.bus();
    t.subscribe(
        [source.clone()],
        handler_fn("batched", move |event| {
            let bus = bus.clone();
            async move {
                let next = event
                    .caused(EventType::OPPORTUNITY_UPDATED, "batched")
                    .build()
                    .permanent()?;
                for result in bus.publish_batch_returning(vec![next]).await {
                    result.map_err(|u| u.error).transient()?;
                }
                Ok(())
            }
        }),
    )
    .await?;
    t.publish_all((0..1_500).map(|n| event(&source, n))).await?;
    t.settle().await?;

    for (handler, made) in [
        ("single", EventType::OPPORTUNITY_VALIDATED),
        ("batched", EventType::OPPORTUNITY_UPDATED),
    ] {
        let published = t.published_by(handler)?;
        assert_eq!(published.len(), 1_500, "{handler}");
        assert!(published.iter().all(|e| e.event_type == made), "{handler}");
        let causes: std::collections::HashSet<_> = published
            .iter()
            .filter_map(|e| e.causation_id.clone())
            .collect();
        assert_eq!(
            causes.len(),
            1_500,
            "{handler} published for an event twice"
        );
    }
    let all = t.published();
    assert_eq!(all.len(), 4_500);
    assert!(
        all.iter()
            .filter(|p| p.by.is_none())
            .all(|p| p.event.event_type == source)
    );
    Ok(())
}

/// A panic is recorded as such, and the bus retries it like a transient failure.
#[tokio::test(start_paused = true)]
async fn a_panic_is_recorded_and_retried() -> anyhow::Result<()> {
    let t = TestBus::new();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    t.subscribe(
        [EventType::AGENT_TASK_COMPLETED],
        handler_fn("fragile", move |_| {
            let call = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                assert!(call > 0, "the first call breaks");
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;
    t.publish(event(&EventType::AGENT_TASK_COMPLETED, 0))
        .await?;
    t.settle().await?;
    let attempts = t.attempts("fragile")?;
    assert_eq!(attempts.len(), 2);
    assert!(
        matches!(&attempts[0].outcome, Outcome::Panicked { message } if message.contains("the first call breaks")),
        "{:?}",
        attempts[0].outcome
    );
    assert_eq!(
        (attempts[1].number, &attempts[1].outcome),
        (2, &Outcome::Handled)
    );
    assert_eq!(t.stats().await?.handlers["fragile"].failed, 1);
    Ok(())
}

/// A handler subscribed through `bus()` (as a registry given an `Arc<dyn EventBus>` does) is
/// recorded, and so are events appended to an aggregate, with their versions.
#[tokio::test]
async fn subscriptions_and_appends_through_the_bus_are_recorded() -> anyhow::Result<()> {
    let t = TestBus::new();
    let bus: Arc<dyn EventBus> = t.bus();
    bus.subscribe(
        SubscriptionSpec::new("registry-made", [EventType::OPPORTUNITY_CREATED]),
        handler_fn("registry-made", |_| async { Ok(()) }),
    )
    .await?;
    let events = (0..3)
        .map(|n| {
            Event::builder(EventType::OPPORTUNITY_CREATED, "test")
                .field("n", n)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let append = AggregateAppend::new("opportunity", "opp-1", ExpectedVersion::Exact(0), events);
    assert_eq!(bus.append_to_aggregate(append).await?, 3);
    t.settle().await?;

    assert_eq!(t.handled("registry-made")?.len(), 3);
    let versions: Vec<_> = t
        .published()
        .into_iter()
        .map(|p| p.event.aggregate_version)
        .collect();
    assert_eq!(versions, [Some(1), Some(2), Some(3)]);
    Ok(())
}

/// Asking about a handler never subscribed is an error naming the ones that were, not an
/// empty list that would pass an assertion of "received nothing".
#[tokio::test]
async fn an_unknown_handler_is_a_clear_error() -> anyhow::Result<()> {
    let t = TestBus::new().settle_timeout(Duration::from_secs(5));
    t.subscribe(
        [EventType::USER_REGISTERED],
        handler_fn("welcome", |_| async { Ok(()) }),
    )
    .await?;
    for result in [
        t.received("welcom"),
        t.handled("welcom"),
        t.published_by("welcom"),
    ] {
        let error = result.expect_err("a typo answered");
        assert!(
            matches!(&error, TestBusError::UnknownHandler { name, known } if name == "welcom" && known == &["welcome"]),
            "{error}"
        );
        assert!(error.to_string().contains("\"welcome\""), "{error}");
    }
    assert!(t.attempts("welcom").is_err());
    assert!(t.dead_letters("welcom").await.is_err());
    // Known and idle: empty, not an error.
    assert!(t.received("welcome")?.is_empty());
    assert!(t.dead_letters("welcome").await?.is_empty());
    t.settle().await?;
    Ok(())
}

/// `publish_all` publishes what the bus takes and fails with the event it refused (too
/// large here); only what was stored is recorded as published.
#[tokio::test]
async fn publish_all_reports_a_refused_event_and_keeps_the_others() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.max_event_bytes = 2_048;
    let t = TestBus::with_config(config)?;
    t.subscribe(
        [EventType::SIGNAL_CLUSTERED],
        handler_fn("cluster", |_| async { Ok(()) }),
    )
    .await?;
    let mut events: Vec<Event> = (0..200)
        .map(|n| event(&EventType::SIGNAL_CLUSTERED, n))
        .collect();
    events[100] = Event::builder(EventType::SIGNAL_CLUSTERED, "test")
        .field("blob", "x".repeat(4_096))
        .build()?;
    let error = t
        .publish_all(events)
        .await
        .expect_err("a 4 KiB event passed a 2 KiB limit");
    assert!(
        matches!(
            error,
            TestBusError::Bus(event_core::Error::EventTooLarge { .. })
        ),
        "{error}"
    );
    t.settle().await?;
    assert_eq!(t.handled("cluster")?.len(), 199);
    assert_eq!(t.published().len(), 199);
    Ok(())
}
