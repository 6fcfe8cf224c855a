//! Consumer groups: a handler's position is kept while it is away, its subscriptions share
//! the work, and a new group starts where it is told to.

use anyhow::ensure;
use event_core::{StartFrom, SubscriptionSpec};
use time::{Duration, OffsetDateTime};

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, exactly_once, fresh_handler, fresh_type, numbered, numbered_at,
    publish_all, publish_marker, subscribe, subscribe_spec, wait_until,
};

/// A handler that resubscribes gets the events published while it was away, and nothing twice.
pub(crate) async fn resubscribe_resumes_group_position(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    let subscription = subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let mut ids = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    recorder.wait_for_count(5).await?;
    subscription.unsubscribe().await?;
    ids.extend(publish_all(&*bus, (5..12).map(|n| numbered(&event_type, n))).await?);
    ensure!(
        recorder.calls() == 5,
        "the handler was called while unsubscribed"
    );
    // `Latest` applies to new groups only: this group continues from its own position.
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).start_from(StartFrom::Latest),
    )
    .await?;
    recorder.wait_for_count(12).await?;
    ids.push(publish_marker(&*bus, &event_type).await?);
    recorder.wait_for_count(13).await?;
    exactly_once(&*bus, &[&recorder], &ids, "resubscribed handler").await?;
    bus.shutdown().await?;
    Ok(())
}

/// Two subscriptions of one handler share its events: each is handled once across both.
pub(crate) async fn subscriptions_of_one_handler_share_work(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let one = Recorder::new(&name);
    let two = Recorder::new(&name);
    let first = subscribe(&*bus, &one, [event_type.clone()]).await?;
    subscribe(&*bus, &two, [event_type.clone()]).await?;
    let stats = bus.stats().await?;
    let subscriptions = stats.handlers.get(&name).map_or(0, |h| h.subscriptions);
    ensure!(
        subscriptions == 2,
        "stats show {subscriptions} subscriptions of the handler, expected 2"
    );
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..40)
            .map(|n| numbered(&event_type, chunk * 40 + n))
            .collect();
        for result in bus.publish_batch(batch).await {
            ids.push(result?);
        }
    }
    let both = || one.handled_count() + two.handled_count();
    wait_until(DEADLINE, "the two subscriptions handled 400 events", || {
        both() >= ids.len()
    })
    .await?;
    let marker = publish_marker(&*bus, &event_type).await?;
    wait_until(
        DEADLINE,
        "one of the subscriptions handled the marker",
        || one.has_handled(&marker) || two.has_handled(&marker),
    )
    .await?;
    ids.push(marker);
    exactly_once(&*bus, &[&one, &two], &ids, "the two subscriptions together").await?;

    // With one subscription gone, the other takes all of the group's events.
    first.unsubscribe().await?;
    let handled_by_one = one.calls();
    let later = publish_all(&*bus, (400..450).map(|n| numbered(&event_type, n))).await?;
    wait_until(
        DEADLINE,
        "the remaining subscription handled 50 more",
        || later.iter().all(|id| two.has_handled(id)),
    )
    .await?;
    ids.extend(later);
    exactly_once(&*bus, &[&one, &two], &ids, "the two subscriptions together").await?;
    ensure!(
        one.calls() == handled_by_one,
        "the unsubscribed subscription was still called"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Two bus instances (as two processes would have) running one handler share its events: both take part, and each event is handled once across both.
pub(crate) async fn instances_of_one_handler_share_work(fx: &Fixture) -> anyhow::Result<()> {
    let (first_bus, second_bus) = (fx.bus().await?, fx.bus().await?);
    let event_type = fresh_type("created");
    let name = fresh_handler();
    let one = Recorder::new(&name);
    let two = Recorder::new(&name);
    subscribe(&*first_bus, &one, [event_type.clone()]).await?;
    subscribe(&*second_bus, &two, [event_type.clone()]).await?;
    // Events go out in rounds until both instances have handled some: a backend may need a
    // moment to give the second instance its share (a Kafka rebalance).
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut n = 0;
    while one.handled_count() == 0 || two.handled_count() == 0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "after {} events, one instance had handled none ({} and {})",
            ids.len(),
            one.handled_count(),
            two.handled_count()
        );
        let batch: Vec<_> = (0..40).map(|k| numbered(&event_type, n + k)).collect();
        n += 40;
        for result in first_bus.publish_batch(batch).await {
            ids.push(result?);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let marker = publish_marker(&*second_bus, &event_type).await?;
    ids.push(marker);
    wait_until(DEADLINE, "the two instances handled every event", || {
        one.handled_count() + two.handled_count() >= ids.len()
    })
    .await?;
    exactly_once(
        &*first_bus,
        &[&one, &two],
        &ids,
        "the two instances together",
    )
    .await?;
    first_bus.shutdown().await?;
    second_bus.shutdown().await?;
    Ok(())
}

/// A new handler with `StartFrom::Earliest` gets the events published before it subscribed.
pub(crate) async fn start_from_earliest(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let mut ids = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    let recorder = Recorder::fresh();
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
    )
    .await?;
    ids.extend(publish_all(&*bus, (5..8).map(|n| numbered(&event_type, n))).await?);
    ids.push(publish_marker(&*bus, &event_type).await?);
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(
        &*bus,
        &[&recorder],
        &ids,
        "handler starting from the earliest",
    )
    .await?;
    bus.shutdown().await?;
    Ok(())
}

/// A new handler with `StartFrom::Latest` gets only the events published after it subscribed.
pub(crate) async fn start_from_latest(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let old = publish_all(&*bus, (0..5).map(|n| numbered(&event_type, n))).await?;
    let recorder = Recorder::fresh();
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()]).start_from(StartFrom::Latest),
    )
    .await?;
    let mut ids = publish_all(&*bus, (5..8).map(|n| numbered(&event_type, n))).await?;
    ids.push(publish_marker(&*bus, &event_type).await?);
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(
        &*bus,
        &[&recorder],
        &ids,
        "handler starting from the latest",
    )
    .await?;
    ensure!(
        old.iter().all(|id| recorder.calls_for(id) == 0),
        "a handler starting from the latest got an older event"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A new handler with `StartFrom::Time(t)` gets the retained events at or after `t`, then new ones.
pub(crate) async fn start_from_time(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let base = OffsetDateTime::now_utc() - Duration::seconds(10);
    let events: Vec<_> = (0..6)
        .map(|n| {
            numbered_at(
                &event_type,
                n,
                base + Duration::milliseconds(100 * n as i64),
            )
        })
        .collect();
    let from = events[3].timestamp;
    let all = publish_all(&*bus, events).await?;
    let recorder = Recorder::fresh();
    subscribe_spec(
        &*bus,
        &recorder,
        SubscriptionSpec::new(recorder.name(), [event_type.clone()])
            .start_from(StartFrom::Time(from)),
    )
    .await?;
    let mut ids = all[3..].to_vec();
    ids.extend(publish_all(&*bus, (6..8).map(|n| numbered(&event_type, n))).await?);
    ids.push(publish_marker(&*bus, &event_type).await?);
    recorder.wait_for_count(ids.len()).await?;
    exactly_once(&*bus, &[&recorder], &ids, "handler starting from a time").await?;
    bus.shutdown().await?;
    Ok(())
}
