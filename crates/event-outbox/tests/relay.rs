//! The outbox and its relay against the real PostgreSQL (`EVENTBUS_TEST_POSTGRES_URL`), with
//! the memory bus: commit and rollback, several relays, relays killed mid-round.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use event_core::{Config, EventBus, EventId, MemoryBus};
use event_outbox::{Outbox, RelayConfig};
use support::{
    KillableRelay, Recorder, check, keyed_event, repeats_were_published_by_killed_relays, seed,
    test_db, wait_until, write_randomly,
};

fn memory_bus() -> anyhow::Result<Arc<dyn EventBus>> {
    Ok(Arc::new(MemoryBus::new(Config::default())?))
}

fn relay_config(batch_size: usize) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = batch_size;
    config.poll_interval = Duration::from_millis(200);
    config
}

/// Events added in a transaction are invisible to the relay until it commits, and gone with
/// a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_exist_for_the_relay_only_once_committed() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let bus = memory_bus()?;
    let relay = db.relay(&bus, relay_config(100));
    let recorder = Recorder::subscribe(&bus).await?;

    let mut tx = db.pool.begin().await?;
    let ids = db
        .outbox
        .add(&mut tx, (0..3).map(|n| keyed_event("k", n)))
        .await?;
    assert_eq!(relay.deliver_pending().await?.claimed, 0);
    assert_eq!(Outbox::stats(&db.pool).await?.pending, 0);
    tx.commit().await?;
    assert_eq!(Outbox::stats(&db.pool).await?.pending, 3);

    let mut tx = db.pool.begin().await?;
    let gone = db.outbox.add(&mut tx, [keyed_event("k", 3)]).await?;
    tx.rollback().await?;

    let report = relay.deliver_pending().await?;
    assert_eq!((report.claimed, report.delivered), (3, 3));
    recorder.wait_for(&ids.iter().copied().collect()).await?;
    let delivered: Vec<EventId> = recorder.snapshot().iter().map(|d| d.id).collect();
    assert_eq!(delivered, ids, "same ids, same order");
    assert!(!delivered.contains(&gone[0]));
    let stats = Outbox::stats(&db.pool).await?;
    assert_eq!((stats.pending, stats.delivered), (0, 3));
    bus.shutdown().await?;
    db.drop_schema().await
}

/// Thousands of events over many keys from concurrent writers that commit or roll back at
/// random: a running relay delivers every committed event once, in per-key order, and no
/// rolled-back one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_are_all_delivered_and_rolled_back_ones_never() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let seed = seed("committed_events_are_all_delivered");
    let bus = memory_bus()?;
    let recorder = Recorder::subscribe(&bus).await?;
    let relay = db.relay(&bus, relay_config(500)).spawn();
    let started = Instant::now();
    let written = write_randomly(&db, seed, 8, 40, 5000).await?;
    recorder.wait_for(&written.committed).await?;
    let took = started.elapsed();
    let repeats = check(&written, &recorder.snapshot())?;
    // One relay that is never interrupted publishes each event once.
    assert_eq!(repeats, 0);
    eprintln!(
        "{} committed, {} rolled back, over {} keys: written and delivered in {:.2}s ({:.0} events/s)",
        written.committed.len(),
        written.rolled_back.len(),
        written.by_key.len(),
        took.as_secs_f64(),
        written.committed.len() as f64 / took.as_secs_f64()
    );
    relay.shut_down().await?;
    let stats = Outbox::stats(&db.pool).await?;
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.delivered as usize, written.committed.len());
    bus.shutdown().await?;
    db.drop_schema().await
}

/// Two relays on one outbox, with small batches so that they contend for keys, keep each
/// key's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_outbox_keep_per_key_order() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let seed = seed("two_relays_keep_per_key_order");
    let bus = memory_bus()?;
    let recorder = Recorder::subscribe(&bus).await?;
    let mut config = relay_config(40);
    config.scan_window = 200;
    let relays = [
        db.relay(&bus, config.clone()).spawn(),
        db.relay(&bus, config).spawn(),
    ];
    let written = write_randomly(&db, seed, 6, 20, 4000).await?;
    recorder.wait_for(&written.committed).await?;
    let repeats = check(&written, &recorder.snapshot())?;
    assert_eq!(repeats, 0, "no relay was interrupted");
    // The handler sees a round's events before its relay records them as delivered.
    let committed = written.committed.len() as u64;
    support::wait_until("the relays to record every delivery", || {
        let delivered: u64 = relays.iter().map(|r| r.stats().delivered).sum();
        (delivered >= committed)
            .then_some(())
            .ok_or_else(|| format!("{delivered} of {committed} recorded"))
    })
    .await?;
    let shares: Vec<u64> = relays.iter().map(|r| r.stats().delivered).collect();
    eprintln!(
        "two relays delivered {shares:?} of {} events",
        written.committed.len()
    );
    assert_eq!(shares.iter().sum::<u64>() as usize, written.committed.len());
    for relay in relays {
        relay.shut_down().await?;
    }
    bus.shutdown().await?;
    db.drop_schema().await
}

/// A relay killed after publishing a round and before recording it loses nothing: another
/// relay delivers every committed event, and the only repeats are the killed round's events,
/// with the same ids. Three kills, at a random round each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_recording_loses_nothing() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let seed = seed("a_relay_killed_between_publish_and_recording");
    let mut rng = fastrand::Rng::with_seed(seed);
    let bus = memory_bus()?;
    let recorder = Recorder::subscribe(&bus).await?;
    let written = write_randomly(&db, seed, 4, 50, 3000).await?;
    let mut published_by_killed: HashSet<EventId> = HashSet::new();
    for kill in 0..3 {
        let kill_at = rng.usize(1..=4);
        let relay = KillableRelay::spawn(&db, &bus, relay_config(100), kill_at);
        wait_until("the relay stuck between publish and recording", || {
            relay
                .is_stuck()
                .then_some(())
                .ok_or_else(|| "running".to_string())
        })
        .await?;
        let published = relay.kill();
        eprintln!(
            "kill {kill}: relay killed after publishing round {kill_at} ({} events published)",
            published.len()
        );
        published_by_killed.extend(published);
    }
    let survivor = db.relay(&bus, relay_config(100)).spawn();
    recorder.wait_for(&written.committed).await?;
    let deliveries = recorder.snapshot();
    let repeats = check(&written, &deliveries)?;
    repeats_were_published_by_killed_relays(&deliveries, &published_by_killed)?;
    eprintln!(
        "{} committed events delivered, {repeats} repeats of killed rounds",
        written.committed.len()
    );
    assert!(repeats > 0, "a killed round's events are published again");
    survivor.shut_down().await?;
    assert_eq!(Outbox::stats(&db.pool).await?.pending, 0);
    bus.shutdown().await?;
    db.drop_schema().await
}

/// Two relays run while writers commit and roll back at random; four times, one of them is
/// killed between publishing a round and recording it, and replaced. Every committed event is
/// delivered, none rolled back, each key's first deliveries are in order, and the only repeats
/// are events a killed relay had published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_while_writers_run_lose_nothing_and_keep_order() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let seed = seed("relays_killed_while_writers_run");
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let bus = memory_bus()?;
    let recorder = Recorder::subscribe(&bus).await?;
    let mut config = relay_config(50);
    config.scan_window = 200;
    let writing_done = Arc::new(AtomicBool::new(false));
    let writers = async {
        let written = write_randomly(&db, seed, 6, 30, 4000).await;
        writing_done.store(true, Ordering::SeqCst);
        written
    };
    let killer = async {
        let mut relays: Vec<KillableRelay> = (0..2)
            .map(|_| KillableRelay::spawn(&db, &bus, config.clone(), rng.usize(1..=6)))
            .collect();
        let mut published_by_killed = HashSet::new();
        let mut kills = 0;
        while kills < 4 {
            // A relay stuck, or the writers done (the outbox may drain before a kill).
            wait_until("a relay stuck, or the writers done", || {
                let any = relays.iter().any(KillableRelay::is_stuck);
                (any || writing_done.load(Ordering::SeqCst))
                    .then_some(())
                    .ok_or_else(|| "no relay stuck, writers running".to_string())
            })
            .await?;
            let Some(index) = relays.iter().position(KillableRelay::is_stuck) else {
                break;
            };
            published_by_killed.extend(relays.swap_remove(index).kill());
            kills += 1;
            relays.push(KillableRelay::spawn(
                &db,
                &bus,
                config.clone(),
                rng.usize(1..=6),
            ));
        }
        Ok::<_, anyhow::Error>((relays, published_by_killed, kills))
    };
    let (written, killed) = tokio::join!(writers, killer);
    let (written, (relays, mut published_by_killed, kills)) = (written?, killed?);
    // Whatever still runs is killed too (it may be stuck), and two plain relays finish.
    for relay in relays {
        published_by_killed.extend(relay.kill());
    }
    let finishers: Vec<_> = (0..2)
        .map(|_| db.relay(&bus, config.clone()).spawn())
        .collect();
    recorder.wait_for(&written.committed).await?;
    let deliveries = recorder.snapshot();
    let repeats = check(&written, &deliveries)?;
    repeats_were_published_by_killed_relays(&deliveries, &published_by_killed)?;
    eprintln!(
        "{} committed over {} keys, {kills} relays killed mid-way while writing, {repeats} repeats",
        written.committed.len(),
        written.by_key.len()
    );
    for relay in finishers {
        relay.shut_down().await?;
    }
    bus.shutdown().await?;
    db.drop_schema().await
}
