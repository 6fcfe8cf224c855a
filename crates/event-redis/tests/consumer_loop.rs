//! The consumer loop of one subscription on several streams: one `XREADGROUP` can return up to
//! `COUNT` entries *per stream*, more than the room the loop reserved. Every event must be
//! handled, in order per key within a type; and a loop that dies while it holds entries
//! (in the dispatcher, or read and not yet dispatched) is restarted, reported in health, and
//! its entries are delivered.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};
use common::{
    Scenario, Seen, exactly_once, n_of, numbered, publish_all, recording, secs, wait_until,
};
use event_core::{EventBus, EventId, HandlerError, StartFrom, SubscriptionSpec};

/// Events per type: several reads of `EVENT_BATCH_SIZE` (100) each.
const PER_TYPE: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_bigger_than_a_read_keep_per_key_order() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-loop-order").await? else {
        return Ok(());
    };
    scenario.run(order_scenario).await
}

/// Three types with backlogs of six reads each; 11 keys per type: every event handled once,
/// and each key's events of one type in publish order.
async fn order_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let config = sc.config();
    let handler = format!("order{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let types = [
        sc.event_type("one"),
        sc.event_type("two"),
        sc.event_type("three"),
    ];
    let bus = config.connect().await?;
    let mut ids: Vec<EventId> = Vec::new();
    for event_type in &types {
        let events = (0..PER_TYPE)
            .map(|n| numbered(event_type, n, Some(&format!("k{}", n % 11))))
            .collect();
        ids.extend(publish_all(&bus, events).await?);
    }
    let seen = Arc::new(Seen::default());
    let handler_fn = recording(&handler, seen.clone(), |_| async {
        Ok::<(), HandlerError>(())
    });
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), types.clone()).start_from(StartFrom::Earliest),
        handler_fn,
    )
    .await?;
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    sc.wait_all_handled(&seen, ids.len(), &streams, &group, secs(60))
        .await?;
    exactly_once(&seen, &ids)?;
    check_per_key_order(&seen)?;
    let health = bus.health().await;
    let consumer = health.consumers.iter().find(|c| c.handler == handler);
    ensure!(
        consumer.is_some_and(|c| c.alive && c.loop_failures == 0),
        "the loop should have run without failing: {consumer:?}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Each (type, key)'s first deliveries came in publish order.
fn check_per_key_order(seen: &Seen) -> anyhow::Result<()> {
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let mut first_seen = std::collections::HashSet::new();
    for event in seen.all() {
        if !first_seen.insert(event.id) {
            continue;
        }
        let key = (
            event.event_type.to_string(),
            event.partition_key.clone().unwrap_or_default(),
        );
        let n = n_of(&event);
        if let Some(previous) = last.insert(key.clone(), n)
            && previous > n
        {
            bail!("{key:?}: event {n} was handled after {previous}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_dies_holding_entries_is_restarted_and_they_are_delivered() -> anyhow::Result<()>
{
    let Some(scenario) = Scenario::start("eventbus-loop-panic").await? else {
        return Ok(());
    };
    scenario.run(panic_scenario).await
}

/// Two types of 600 events, a handler taking 2 ms per event on 4 lanes: once it has handled
/// some, the loop panics (a test fault) while it holds entries. The bus restarts it and says
/// so in health; the dead loop's lanes finish what they hold, then the restarted loop takes
/// back the entries the dead one had not handed out, before newer ones: every event is
/// handled, none twice, each key in order.
async fn panic_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.claim_idle = Duration::from_millis(500);
    config.bus.handler_concurrency = 4;
    let handler = format!("panic{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let types = [sc.event_type("one"), sc.event_type("two")];
    let bus = config.connect().await?;
    let mut ids: Vec<EventId> = Vec::new();
    for event_type in &types {
        let events = (0..PER_TYPE)
            .map(|n| numbered(event_type, n, Some(&format!("k{}", n % 9))))
            .collect();
        ids.extend(publish_all(&bus, events).await?);
    }
    let seen = Arc::new(Seen::default());
    let handler_fn = recording(&handler, seen.clone(), |_| async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok::<(), HandlerError>(())
    });
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), types.clone()).start_from(StartFrom::Earliest),
        handler_fn,
    )
    .await?;
    wait_until("some events handled", secs(30), async || {
        Ok((seen.distinct() < 150).then(|| format!("{} handled", seen.distinct())))
    })
    .await?;
    event_core::fault::panic_loop_once(&handler);
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    let outcome = wait_until(
        "every event handled and acknowledged after the loop's restart",
        secs(60),
        async || {
            let handled = seen.distinct();
            let mut pending = 0;
            for stream in &streams {
                pending += sc.pending(stream, &group).await?;
            }
            let failures = bus
                .health()
                .await
                .consumers
                .iter()
                .find(|c| c.handler == handler)
                .map_or(0, |c| c.loop_failures);
            Ok((handled < ids.len() || pending > 0 || failures == 0).then(|| {
                format!(
                    "{handled} of {} handled, {pending} pending, {failures} loop failures reported",
                    ids.len()
                )
            }))
        },
    )
    .await;
    event_core::fault::clear(&handler);
    outcome?;
    let counts = seen.counts();
    let missing = ids.iter().filter(|id| !counts.contains_key(id)).count();
    let again = counts.values().filter(|n| **n > 1).count();
    ensure!(missing == 0, "{missing} events never handled");
    // The restarted loop claims nothing back before the dead loop's lanes have finished what
    // they held, so nothing runs twice (before, about a third of the events did).
    ensure!(
        again == 0,
        "{again} events handled twice: the restarted loop took back entries the dead loop's lanes were still handling"
    );
    // What the dead loop read and did not finish goes out before anything newer.
    check_per_key_order(&seen)?;
    let health = bus.health().await;
    let consumer = health.consumers.iter().find(|c| c.handler == handler);
    ensure!(
        consumer.is_some_and(|c| c.alive && c.loop_failures == 1),
        "health should show the restarted loop alive, with one failure: {consumer:?}"
    );
    eprintln!("{} events handled once each after a loop panic", ids.len());
    bus.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lost_with_its_connection_keeps_per_key_order() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-loop-lost-read").await? else {
        return Ok(());
    };
    scenario.run(lost_read_scenario).await
}

/// Redis registers what a blocked `XREADGROUP` hands out in the consumer's pending list when
/// it answers, even if the answer never arrives. Here the consumer's connections go through a
/// proxy that is stalled while the blocked read is answered, then dropped: the answer is
/// lost, its entries pending. The loop must take those back before it reads the newer events
/// of the same key (before the fix the client resent the read after reconnecting, and the
/// newer events ran first while the lost ones waited for a claim).
async fn lost_read_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    // Long enough that a lost entry could only come back early by being taken back.
    config.bus.claim_idle = Duration::from_secs(5);
    let server: std::net::SocketAddr = sc
        .url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .and_then(|host| std::net::ToSocketAddrs::to_socket_addrs(host).ok()?.next())
        .ok_or_else(|| anyhow::anyhow!("no host:port in {}", sc.url))?;
    let proxy = event_testkit::chaos::TcpProxy::start(server).await?;
    let mut through_proxy = config.clone();
    through_proxy.redis.url =
        sc.url
            .replacen(&server.port().to_string(), &proxy.port().to_string(), 1);
    let handler = format!("lost{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let event_type = sc.event_type("one");
    let stream = sc.stream(&event_type);
    let publisher = config.connect().await?;
    let consumer = through_proxy.connect().await?;
    let seen = Arc::new(Seen::default());
    let handler_fn = recording(&handler, seen.clone(), |_| async {
        Ok::<(), HandlerError>(())
    });
    consumer
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()])
                .start_from(StartFrom::Earliest),
            handler_fn,
        )
        .await?;
    let mut ids: Vec<EventId> = Vec::new();
    let mut next = 0u64;
    let mut publish = async |count: u64, ids: &mut Vec<EventId>| -> anyhow::Result<()> {
        let events = (next..next + count)
            .map(|n| numbered(&event_type, n, Some("k")))
            .collect();
        next += count;
        ids.extend(publish_all(&publisher, events).await?);
        Ok(())
    };
    publish(50, &mut ids).await?;
    let mut lost_reads = 0;
    for _ in 0..20 {
        let before = ids.len();
        wait_until("the backlog handled", secs(30), async || {
            let pending = sc.pending(&stream, &group).await?;
            Ok((seen.distinct() < before || pending > 0)
                .then(|| format!("{} of {before} handled, {pending} pending", seen.distinct())))
        })
        .await?;
        // The consumer is idle: its read is blocked in the server. Stalled, the proxy holds
        // the answer the new events bring.
        proxy.set_stalled(true);
        publish(20, &mut ids).await?;
        let answered = wait_until("the blocked read answered", secs(2), async || {
            let pending = sc.pending(&stream, &group).await?;
            Ok((pending == 0).then(|| "nothing pending yet".to_string()))
        })
        .await;
        if answered.is_ok() {
            // The answer is lost with the connections; newer events of the key follow at once.
            proxy.drop_connections();
            lost_reads += 1;
        }
        proxy.set_stalled(false);
        publish(20, &mut ids).await?;
        if lost_reads == 3 {
            break;
        }
    }
    ensure!(
        lost_reads == 3,
        "the consumer's read was never blocked in the server when the proxy stalled"
    );
    let total = ids.len();
    sc.wait_all_handled(&seen, total, &[stream], &group, secs(60))
        .await?;
    check_per_key_order(&seen)?;
    let missing = ids
        .iter()
        .filter(|id| !seen.counts().contains_key(id))
        .count();
    ensure!(missing == 0, "{missing} events never handled");
    consumer.shutdown().await?;
    publisher.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribed_handler_keeps_per_key_order() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-loop-resubscribe").await? else {
        return Ok(());
    };
    scenario.run(resubscribe_scenario).await
}

/// A slow handler is unsubscribed while its lanes and carry-over hold read entries it cannot
/// finish within the shutdown timeout; they stay pending under its consumer name. The next
/// subscription of the handler in this process takes them back before it reads anything
/// newer (before, it read newer events of their keys at once, and they came back only by a
/// claim once idle).
async fn resubscribe_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.claim_idle = Duration::from_secs(5);
    config.bus.shutdown_timeout = Duration::from_millis(200);
    let handler = format!("resub{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let types = [sc.event_type("one"), sc.event_type("two")];
    let bus = config.connect().await?;
    let mut ids: Vec<EventId> = Vec::new();
    for event_type in &types {
        let events = (0..PER_TYPE)
            .map(|n| numbered(event_type, n, Some(&format!("k{}", n % 5))))
            .collect();
        ids.extend(publish_all(&bus, events).await?);
    }
    let seen = Arc::new(Seen::default());
    let subscribe = async || {
        let handler_fn = recording(&handler, seen.clone(), |_| async {
            tokio::time::sleep(Duration::from_millis(3)).await;
            Ok::<(), HandlerError>(())
        });
        bus.subscribe(
            SubscriptionSpec::new(handler.clone(), types.clone())
                .start_from(StartFrom::Earliest)
                .concurrency(2),
            handler_fn,
        )
        .await
    };
    let first = subscribe().await?;
    wait_until("some events handled", secs(30), async || {
        Ok((seen.distinct() < 100).then(|| format!("{} handled", seen.distinct())))
    })
    .await?;
    first.unsubscribe().await?;
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    let mut left = 0;
    for stream in &streams {
        left += sc.pending(stream, &group).await?;
    }
    ensure!(
        left > 0,
        "the unsubscribed handler left nothing pending: the scenario tests nothing"
    );
    subscribe().await?;
    sc.wait_all_handled(&seen, ids.len(), &streams, &group, secs(90))
        .await?;
    check_per_key_order(&seen)?;
    eprintln!("{left} entries left pending by the unsubscribe, taken back in order");
    bus.shutdown().await?;
    Ok(())
}
