//! What a migration reads (`eventbus copy`): the streams in stream order with entry ids, where
//! each handler's group stands (delivered, pending), and whether aggregates exist.

mod common;

use std::sync::Arc;

use anyhow::ensure;
use common::{Scenario, Seen, numbered, publish_all, recording, secs, wait_until};
use event_core::{AggregateAppend, EventBus, ExpectedVersion, HandlerError, SubscriptionSpec};

/// More than one page of `read_stream` (1000) and of `XPENDING` rows.
const EVENTS: u64 = 2500;

#[tokio::test]
async fn streams_positions_and_aggregates_as_a_migration_reads_them() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("redis-migration").await? else {
        return Ok(());
    };
    scenario
        .run(async |s| {
            let mut config = s.config();
            // A failed event waits an hour for its retry: pending.
            config.bus.retry_base = secs(3600);
            config.bus.retry_max = secs(3600);
            config.bus.shutdown_timeout = secs(5);
            let bus = config.connect().await?;
            let (event_type, other) = (s.event_type("moved"), s.event_type("kept"));
            let seen = Arc::new(Seen::default());
            bus.subscribe(
                SubscriptionSpec::new("mover", [event_type.clone()]),
                recording("mover", seen.clone(), |event| async move {
                    if common::n_of(&event) % 500 == 3 {
                        return Err(HandlerError::transient("not now"));
                    }
                    if common::n_of(&event) == 1 {
                        return Err(HandlerError::permanent("never"));
                    }
                    Ok(())
                }),
            )
            .await?;
            let events: Vec<_> = (0..EVENTS)
                .map(|n| {
                    // A failing event on a key of its own: the key's later events do not
                    // wait for its retry.
                    let key = if n % 500 == 3 {
                        format!("alone-{n}")
                    } else {
                        format!("k{}", n % 7)
                    };
                    numbered(&event_type, n, Some(&key))
                })
                .collect();
            let ids = publish_all(&bus, events).await?;
            publish_all(&bus, vec![numbered(&other, 0, None)]).await?;
            let failing = (0..EVENTS).filter(|n| n % 500 == 3).count();
            wait_until("every event tried", secs(60), async || {
                let n = seen.distinct();
                Ok((n < EVENTS as usize).then(|| format!("{n} seen")))
            })
            .await?;
            bus.shutdown().await?;

            let reader = config.connect().await?;
            let mut types = reader.event_types().await?;
            types.sort();
            let mut expected = vec![event_type.clone(), other.clone()];
            expected.sort();
            ensure!(types == expected, "{types:?}");
            // The stream in stream order, page by page.
            let mut entries = Vec::new();
            loop {
                let after = entries.last().map(|(e, _): &(String, _)| e.clone());
                let page = reader
                    .read_stream(&event_type, after.as_deref(), 1000)
                    .await?;
                if page.is_empty() {
                    break;
                }
                for entry in page {
                    entries.push((entry.entry_id, entry.event?.id));
                }
            }
            let read: Vec<_> = entries.iter().map(|(_, id)| *id).collect();
            ensure!(
                read == ids,
                "the stream read back differs from the publish order"
            );
            // The group: everything delivered, the failing events pending.
            let positions = reader.group_positions(&event_type).await?;
            ensure!(positions.len() == 1 && positions[0].handler == "mover");
            let position = &positions[0];
            ensure!(position.group == s.group(&config, "mover"));
            ensure!(
                position.pending.len() == failing,
                "{:?}",
                position.pending.len()
            );
            let finished = entries.iter().filter(|(e, _)| position.finished(e)).count();
            ensure!(finished == EVENTS as usize - failing, "{finished} finished");
            ensure!(reader.group_positions(&other).await?.is_empty());
            // A dead letter redriven while the handler is away is unfinished.
            ensure!(reader.unfinished_redrives("mover").await? == 0);
            wait_until("the dead letter", secs(30), async || {
                let n = reader.dead_letters("mover", 10).await?.len();
                Ok((n != 1).then(|| format!("{n} dead letters")))
            })
            .await?;
            let redriven = reader
                .redrive_dead_letters("mover", event_core::DeadLetterSelection::All)
                .await?;
            ensure!(redriven.redriven == 1);
            ensure!(reader.unfinished_redrives("mover").await? == 1);
            ensure!(reader.unfinished_redrives("nobody").await? == 0);
            // Aggregates: none, then one.
            ensure!(!reader.has_aggregates().await?);
            let mut sourcing = config.clone();
            sourcing.bus.enable_event_sourcing = true;
            let writer = sourcing.connect().await?;
            writer
                .append_to_aggregate(AggregateAppend::new(
                    "thing",
                    "t-1",
                    ExpectedVersion::Exact(0),
                    vec![numbered(&other, 1, None)],
                ))
                .await?;
            ensure!(reader.has_aggregates().await?);
            writer.shutdown().await?;
            reader.shutdown().await?;
            Ok(())
        })
        .await
}
