//! A record dead-lettered again after its partition moved before the commit (a rebalance, a
//! broker restart, a crashed member) leaves two dead letters of one record in the topic: the
//! list shows it once, and purge and redrive take every copy with it.

mod support;

use support::Settings;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    DeadLetterSelection, Event, EventBus, EventHandler, EventType, HandlerError, StartFrom,
    SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;
use support::{hex_field, kafka_script};

/// Events published and dead-lettered; more than one batch of the dead-letter topic's reads
/// is not needed here: what matters is that every copy is matched to its record.
const EVENTS: usize = 120;

async fn wait_for_letters(bus: &KafkaBus, handler: &str, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let count = bus.dead_letters(handler, 10_000).await?.len();
        if count == n {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{count} dead letters of {handler}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_dead_letter_are_listed_once_and_removed_together() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = event_testkit::unique("eventbus-dlq-copies");
    // One partition: the events' offsets are their publish order.
    config.kafka.partitions = 1;
    let prefix = config.kafka.topic_prefix.clone();
    let group_prefix = config.bus.consumer_group.clone();
    let bus = config.connect().await?;
    let event_type = EventType::new(format!("test.copies{:08x}", fastrand::u32(..)))?;
    let handler = format!("copies{:08x}", fastrand::u32(..));
    // Fails every event the first time it sees it (permanently), handles it when redriven.
    let failed = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (f, h) = (failed.clone(), handled.clone());
    let fails_once: Arc<dyn EventHandler> = handler_fn(handler.clone(), move |event| {
        let (f, h) = (f.clone(), h.clone());
        async move {
            if f.lock().unwrap().insert(event.id) {
                return Err(HandlerError::permanent("refused the first time"));
            }
            h.lock().unwrap().push(event.id);
            Ok(())
        }
    });
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
        fails_once,
    )
    .await?;
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| {
            Event::builder(event_type.clone(), "test")
                .field("n", n)
                .build()
        })
        .collect::<Result<_, _>>()?;
    for result in bus.publish_batch(events).await {
        result?;
    }
    wait_for_letters(&bus, &handler, EVENTS).await?;

    // What a member that lost its partition before committing writes again: a copy of each
    // of the first 40 letters, with the same origin.
    let letters = bus.dead_letters(&handler, 10_000).await?;
    let dlq = format!("{prefix}.dlq.{group_prefix}.{handler}");
    let source = format!("{prefix}.{event_type}");
    let write_copies = async |count: usize| -> anyhow::Result<()> {
        let mut script = String::from("PRODUCER\t-\n");
        for (offset, letter) in letters.iter().enumerate().take(count) {
            let json = serde_json::to_vec(letter)?;
            script.push_str(&format!(
                "SEND\t{dlq}\t0\t-\t{}\t-\tdlq_original_topic={source}\tdlq_original_partition=0\tdlq_original_offset={offset}\n",
                hex_field(&json)
            ));
        }
        script.push_str("FLUSH\n");
        kafka_script(&classpath, &brokers, &script).await
    };
    write_copies(40).await?;

    // Listed once each, whatever the copies.
    let listed = bus.dead_letters(&handler, 10_000).await?;
    let ids: HashSet<_> = listed
        .iter()
        .filter_map(|l| l.event.as_ref().map(|e| e.id))
        .collect();
    ensure!(
        listed.len() == EVENTS && ids.len() == EVENTS,
        "{} dead letters listed ({} distinct events), expected {EVENTS}: copies are listed",
        listed.len(),
        ids.len()
    );

    // Redriving the first 20 takes their copies too: each event is handled once.
    let first: Vec<String> = listed.iter().take(20).map(|l| l.id.clone()).collect();
    let report = bus
        .redrive_dead_letters(&handler, DeadLetterSelection::Ids(first))
        .await?;
    ensure!(
        report.redriven == 20,
        "redrove {}, expected 20",
        report.redriven
    );
    wait_for_letters(&bus, &handler, EVENTS - 20).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while handled.lock().unwrap().len() < 20 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the redriven events were not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Purging the rest removes every copy: nothing is left to show.
    let purged = bus
        .purge_dead_letters(&handler, DeadLetterSelection::All)
        .await?;
    ensure!(
        purged == (EVENTS - 20) as u64,
        "purged {purged}, expected {}",
        EVENTS - 20
    );
    let left = bus.dead_letters(&handler, 10_000).await?;
    ensure!(
        left.is_empty(),
        "{} dead letters left after the purge (copies)",
        left.len()
    );

    // Copies written after their record's letter was redriven (the first 20) or purged (the
    // rest) stay hidden with it: the record is not dead-lettered twice.
    write_copies(EVENTS).await?;
    let left = bus.dead_letters(&handler, 10_000).await?;
    ensure!(
        left.is_empty(),
        "{} dead letters listed again from copies written after a redrive or purge",
        left.len()
    );
    let handled = handled.lock().unwrap().clone();
    let distinct: HashSet<_> = handled.iter().collect();
    ensure!(
        handled.len() == 20 && distinct.len() == 20,
        "redriven events handled {} times for {} events: a copy was redriven too",
        handled.len(),
        distinct.len()
    );
    bus.shutdown().await?;
    Ok(())
}
