//! A dead letter is stored and its entry acknowledged both or neither: when the dead-letter
//! stream cannot be written (here its key holds a string, so `XADD` fails with `WRONGTYPE`),
//! the entries stay pending and health says why; once the key is fixed, each dead letter is
//! stored exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use common::{Scenario, Seen, numbered, publish_all, recording, secs, wait_until};
use event_core::{EventBus, EventId, HandlerError, StartFrom, SubscriptionSpec};
use fred::prelude::{ClientLike, KeysInterface};
use fred::types::Value;

/// Events per type: more than a read (`EVENT_BATCH_SIZE` is 20 here).
const PER_TYPE: u64 = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_never_acknowledged_without_being_stored() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-dlq-store").await? else {
        return Ok(());
    };
    scenario.run(dead_letter_store_scenario).await
}

async fn dead_letter_store_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.batch_size = 20;
    config.bus.claim_idle = Duration::from_millis(500);
    config.bus.handler_concurrency = 16;
    let handler = format!("dlqstore{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let types = [sc.event_type("one"), sc.event_type("two")];
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    let dlq = sc.dead_letters(&group);
    // The dead-letter key is not a stream: every XADD to it fails with WRONGTYPE.
    let _: Value = sc.admin.set(dlq.as_str(), "x", None, None, false).await?;

    let bus = config.connect().await?;
    let mut ids: Vec<EventId> = Vec::new();
    for event_type in &types {
        let events = (0..PER_TYPE)
            .map(|n| numbered(event_type, n, Some(&format!("k{}", n % 5))))
            .collect();
        ids.extend(publish_all(&bus, events).await?);
    }
    let seen = Arc::new(Seen::default());
    let failing = recording(&handler, seen.clone(), |_| async {
        Err::<(), _>(HandlerError::permanent("this handler refuses every event"))
    });
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), types.clone()).start_from(StartFrom::Earliest),
        failing,
    )
    .await?;

    let pending = async || -> anyhow::Result<u64> {
        Ok(sc.pending(&streams[0], &group).await? + sc.pending(&streams[1], &group).await?)
    };
    wait_until(
        "every event tried, and health reporting the dead letters it cannot store",
        secs(60),
        async || {
            let tried = seen.distinct();
            let health = bus.health().await;
            let reported = health
                .problems
                .iter()
                .any(|p| p.contains(&handler) && p.contains("dead letter"));
            let pending = pending().await?;
            Ok((tried < ids.len() || !reported).then(|| {
                format!(
                    "{tried} of {} tried, {pending} pending, health problems: {:?}",
                    ids.len(),
                    health.problems
                )
            }))
        },
    )
    .await?;
    let pending_now = pending().await?;
    ensure!(
        pending_now == ids.len() as u64,
        "{pending_now} of {} entries pending while no dead letter can be stored: entries were acknowledged without their dead letter",
        ids.len()
    );
    let key_type: Value = sc
        .admin
        .custom(fred::cmd!("TYPE"), vec![dlq.clone()])
        .await?;
    ensure!(
        key_type.as_string().as_deref() == Some("string"),
        "the dead-letter key changed type: {key_type:?}"
    );

    // Fixed: the dead letters are stored, once each, and the entries acknowledged.
    let _: Value = sc.admin.del(dlq.as_str()).await?;
    wait_until(
        "every dead letter stored and nothing pending",
        secs(60),
        async || {
            let stored = sc.xlen(&dlq).await?;
            let pending = pending().await?;
            Ok((stored < ids.len() as u64 || pending > 0)
                .then(|| format!("{stored} of {} stored, {pending} pending", ids.len())))
        },
    )
    .await?;
    let letters = bus.dead_letters(&handler, 10_000).await?;
    let mut per_event: HashMap<EventId, usize> = HashMap::new();
    for letter in &letters {
        if let Some(event) = &letter.event {
            *per_event.entry(event.id).or_default() += 1;
        }
    }
    ensure!(
        letters.len() == ids.len() && ids.iter().all(|id| per_event.get(id) == Some(&1)),
        "{} dead letters for {} events; each must be stored exactly once",
        letters.len(),
        ids.len()
    );
    wait_until(
        "health no longer reports the failure",
        secs(30),
        async || {
            let health = bus.health().await;
            Ok(health
                .problems
                .iter()
                .any(|p| p.contains("dead letter"))
                .then(|| format!("{:?}", health.problems)))
        },
    )
    .await?;
    eprintln!(
        "{} events: pending while the dead-letter key was a string, then each stored once ({} handler calls)",
        ids.len(),
        seen.len()
    );
    bus.shutdown().await?;
    Ok(())
}
