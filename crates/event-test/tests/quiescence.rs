//! `settle`: it returns only when the bus is truly quiet (thousands of events over several
//! types and handlers, follow-ups in chains, parallel lanes), and fails rather than hangs
//! when a handler never finishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_core::{Config, DeadLetterReason, Event, EventType, HandlerError, ResultExt, handler_fn};
use event_test::{Outcome, TestBus, TestBusError};

/// More than `EVENT_BATCH_SIZE` (100), the dispatcher's room (1,024 events in flight) and its
/// acknowledgement batches (256), per type.
const PER_TYPE: usize = 2_000;
const KEYS: usize = 40;

fn numbered(event_type: &EventType, n: usize) -> Event {
    Event::builder(event_type.clone(), "test")
        .field("n", n as u64)
        .partition_key(format!("key-{}", n % KEYS))
        .build()
        .expect("a valid event")
}

fn n_of(event: &Event) -> u64 {
    event.payload["n"].as_u64().expect("a number")
}

/// Three types, 6,000 events, four handlers on eight lanes each: one counts everything, one
/// dead-letters every tenth event, one publishes a follow-up for each of two types, and the
/// follow-ups' own handler. After one `settle`, every handler has every event exactly once,
/// in per-key order, the dead letters and follow-ups are all there, and the stats agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settles_thousands_of_events_over_types_and_handlers() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.handler_concurrency = 8;
    let t = TestBus::with_config(config)?;
    let types = [
        EventType::SIGNAL_DETECTED,
        EventType::OPPORTUNITY_CREATED,
        EventType::AGENT_TASK_COMPLETED,
    ];
    let follow_up_type = EventType::SIGNAL_PROCESSED;

    t.subscribe(types.clone(), handler_fn("counter", |_| async { Ok(()) }))
        .await?;
    t.subscribe(
        types.clone(),
        handler_fn("picky", |event| async move {
            if n_of(&event).is_multiple_of(10) {
                return Err(HandlerError::permanent("every tenth is refused"));
            }
            Ok(())
        }),
    )
    .await?;
    let bus = t.bus();
    t.subscribe(
        types[..2].to_vec(),
        handler_fn("projector", move |event| {
            let bus = bus.clone();
            async move {
                // Lets other lanes run between the event and its follow-up.
                tokio::task::yield_now().await;
                let follow_up = event
                    .caused(EventType::SIGNAL_PROCESSED, "projector")
                    .field("n", n_of(&event))
                    .field("from", event.event_type.to_string())
                    .partition_key(event.partition_key.clone().unwrap_or_default())
                    .build()
                    .permanent()?;
                bus.publish(follow_up).await.transient()?;
                Ok(())
            }
        }),
    )
    .await?;
    t.subscribe(
        [follow_up_type.clone()],
        handler_fn("follower", |_| async { Ok(()) }),
    )
    .await?;

    for event_type in &types {
        let events: Vec<Event> = (0..PER_TYPE).map(|n| numbered(event_type, n)).collect();
        for chunk in events.chunks(500) {
            t.publish_all(chunk.to_vec()).await?;
        }
    }
    t.settle().await?;

    let total = types.len() * PER_TYPE;
    for handler in ["counter", "picky"] {
        let received = t.received(handler)?;
        assert_eq!(received.len(), total, "{handler} received");
        let ids: HashSet<_> = received.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), total, "{handler} received an event twice");
        assert_in_key_order(&received, handler);
    }
    assert_eq!(t.handled("counter")?.len(), total);
    let refused = total / 10;
    assert_eq!(t.handled("picky")?.len(), total - refused);
    let dead = t.dead_letters("picky").await?;
    assert_eq!(dead.len(), refused);
    assert!(
        dead.iter()
            .all(|d| d.reason == DeadLetterReason::PermanentFailure
                && d.attempts == 1
                && d.event.as_ref().is_some_and(|e| n_of(e).is_multiple_of(10)))
    );
    assert!(t.dead_letters("counter").await?.is_empty());

    let follow_ups = t.published_by("projector")?;
    assert_eq!(follow_ups.len(), 2 * PER_TYPE);
    assert_eq!(t.handled("projector")?.len(), 2 * PER_TYPE);
    let followed: HashSet<_> = t.received("follower")?.iter().map(|e| e.id).collect();
    assert_eq!(followed, follow_ups.iter().map(|e| e.id).collect());
    // Everything else was published by the test.
    let published = t.published();
    assert_eq!(published.len(), total + 2 * PER_TYPE);
    assert_eq!(published.iter().filter(|p| p.by.is_none()).count(), total);

    let stats = t.stats().await?;
    for (handler, h) in &stats.handlers {
        assert_eq!((h.lag, h.pending), (0, 0), "{handler} is not quiet: {h:?}");
    }
    assert_eq!(stats.handlers["counter"].processed, total as u64);
    assert_eq!(stats.handlers["picky"].dead_lettered, refused as u64);
    Ok(())
}

/// Per key, a handler saw the events of each type in publish order (`n` rising).
fn assert_in_key_order(received: &[Event], handler: &str) {
    let mut last: HashMap<(String, Option<String>), u64> = HashMap::new();
    for event in received {
        let key = (event.event_type.to_string(), event.partition_key.clone());
        let n = n_of(event);
        if let Some(before) = last.insert(key.clone(), n) {
            assert!(before < n, "{handler} got {key:?} {n} after {before}");
        }
    }
}

/// Chains of follow-ups between two handlers (ping publishes a pong, pong the next ping,
/// each after a short real wait), 60 chains of 30 links on a multi-thread runtime: when
/// `settle` returns, every link of every chain has been handled. Had it returned while one
/// link was between its handler and its follow-up, a chain would be short.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settle_waits_for_chains_of_follow_ups() -> anyhow::Result<()> {
    const CHAINS: u64 = 60;
    const LINKS: u64 = 30;
    let mut config = Config::default();
    config.handler_concurrency = 4;
    let t = TestBus::with_config(config)?;
    let (ping, pong) = (EventType::AGENT_STARTED, EventType::AGENT_STOPPED);
    for (name, listens, answers) in [
        ("ping", ping.clone(), pong.clone()),
        ("pong", pong.clone(), ping.clone()),
    ] {
        let bus = t.bus();
        t.subscribe(
            [listens],
            handler_fn(name, move |event| {
                let (bus, answers) = (bus.clone(), answers.clone());
                async move {
                    let link = event.payload["link"].as_u64().unwrap_or(0);
                    if link + 1 >= LINKS {
                        return Ok(());
                    }
                    // A real wait, so links straddle `settle`'s looks at the bus.
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
                    let next = event
                        .caused(answers, "chain")
                        .field("chain", event.payload["chain"].clone())
                        .field("link", link + 1)
                        .build()
                        .permanent()?;
                    bus.publish(next).await.transient()?;
                    Ok(())
                }
            }),
        )
        .await?;
    }
    let starts = (0..CHAINS).map(|chain| {
        Event::builder(ping.clone(), "test")
            .field("chain", chain)
            .field("link", 0)
            .build()
            .expect("a valid event")
    });
    t.publish_all(starts).await?;
    t.settle().await?;

    let mut links: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for handler in ["ping", "pong"] {
        for event in t.handled(handler)? {
            let chain = event.payload["chain"].as_u64().expect("a chain");
            let link = event.payload["link"].as_u64().expect("a link");
            links.entry(chain).or_default().push(link);
        }
    }
    assert_eq!(links.len() as u64, CHAINS);
    for (chain, mut got) in links {
        got.sort_unstable();
        assert_eq!(got, (0..LINKS).collect::<Vec<_>>(), "chain {chain}");
    }
    assert_eq!(t.published().len() as u64, CHAINS * LINKS);
    Ok(())
}

/// A handler that never returns: `settle` fails after its timeout, naming the handler, the
/// event it is stuck on and the events waiting behind, while the other handler finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_fails_rather_than_hangs_on_a_handler_that_never_finishes() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.handler_concurrency = 1;
    let t = TestBus::with_config(config)?.settle_timeout(Duration::from_secs(2));
    let kind = EventType::SYSTEM_MAINTENANCE;
    t.subscribe(
        [kind.clone()],
        handler_fn("stuck", |_| {
            std::future::pending::<Result<(), HandlerError>>()
        }),
    )
    .await?;
    t.subscribe([kind.clone()], handler_fn("fine", |_| async { Ok(()) }))
        .await?;
    let events: Vec<Event> = (0..300).map(|n| numbered(&kind, n)).collect();
    let first = events[0].id;
    t.publish_all(events).await?;

    let error = t.settle().await.expect_err("settled with a handler stuck");
    let TestBusError::NotQuiet { waited, busy } = &error else {
        panic!("not a NotQuiet error: {error}");
    };
    assert!(*waited >= Duration::from_secs(2));
    assert_eq!(busy.len(), 1, "{error}");
    assert_eq!(busy[0].handler, "stuck");
    assert_eq!(busy[0].waiting + busy[0].in_flight, 300, "{error}");
    assert_eq!(busy[0].running.len(), 1);
    assert_eq!(busy[0].running[0].event_id, first);
    let message = error.to_string();
    assert!(
        message.contains("stuck: ") && message.contains(&first.to_string()),
        "{message}"
    );
    assert_eq!(t.handled("fine")?.len(), 300);
    assert!(matches!(t.attempts("stuck")?[..], [ref a] if a.outcome == Outcome::Running));
    Ok(())
}

/// On a paused clock a stuck handler fails `settle` after its whole (virtual) default
/// timeout, without the test waiting 30 real seconds, and a retry waiting longer than the
/// timeout is reported as in flight, not running.
#[tokio::test(start_paused = true)]
async fn on_a_paused_clock_settle_fails_without_waiting_for_real() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.retry_base = Duration::from_secs(120);
    config.retry_max = Duration::from_secs(120);
    let t = TestBus::with_config(config)?;
    let calls = Arc::new(Mutex::new(0u32));
    let counted = calls.clone();
    t.subscribe(
        [EventType::SYSTEM_ERROR],
        handler_fn("slow-retry", move |_| {
            *counted.lock().unwrap() += 1;
            async { Err(HandlerError::transient("down")) }
        }),
    )
    .await?;
    t.publish(numbered(&EventType::SYSTEM_ERROR, 0)).await?;
    let real = std::time::Instant::now();
    let error = t
        .settle()
        .await
        .expect_err("a 60-120 s retry settled in 30 s");
    let TestBusError::NotQuiet { busy, .. } = &error else {
        panic!("not a NotQuiet error: {error}");
    };
    assert_eq!(
        (busy[0].in_flight, busy[0].running.len()),
        (1, 0),
        "{error}"
    );
    assert_eq!(*calls.lock().unwrap(), 1);
    // The 30 virtual seconds took far less than 30 real ones (a loose bound: a loaded box).
    assert!(
        real.elapsed() < Duration::from_secs(25),
        "{:?}",
        real.elapsed()
    );
    // Given the time, the retries run out and the event is dead-lettered.
    t.settle_within(Duration::from_secs(600)).await?;
    assert_eq!(*calls.lock().unwrap(), 4);
    assert_eq!(t.dead_letters("slow-retry").await?[0].attempts, 4);
    Ok(())
}
