//! The in-memory bus end to end: publish events of several types, handle them (with a retry and
//! a dead letter), replay the last minute, and print the stats.
//!
//! `cargo run --release -p event-core --example demo`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{
    Config, DeadLetterSelection, Event, EventBus, EventHandler, EventType, HandlerError, MemoryBus,
    ReplayQuery, StartFrom, SubscriptionSpec, timestamp,
};
use futures::StreamExt;
use serde_json::json;

/// Keeps a catalogue of opportunities: title by id.
#[derive(Default)]
struct OpportunityCatalogue {
    titles: Mutex<BTreeMap<String, String>>,
}

#[async_trait]
impl EventHandler for OpportunityCatalogue {
    fn name(&self) -> &str {
        "opportunity"
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let id = event.payload.get("opportunity_id").and_then(|v| v.as_str());
        let Some(id) = id else {
            return Err(HandlerError::permanent(
                "opportunity event without opportunity_id",
            ));
        };
        let title = event
            .payload
            .get("title")
            .and_then(|v| v.as_str())
            .unwrap_or("Unknown");
        self.titles
            .lock()
            .map_err(|_| HandlerError::permanent("catalogue lock poisoned"))?
            .insert(id.to_string(), title.to_string());
        Ok(())
    }
}

/// Counts agent tasks; fails transiently once to show a retry.
#[derive(Default)]
struct AgentMonitor {
    seen: Mutex<u32>,
}

#[async_trait]
impl EventHandler for AgentMonitor {
    fn name(&self) -> &str {
        "agent"
    }

    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| HandlerError::permanent("monitor lock poisoned"))?;
        *seen += 1;
        if *seen == 1 {
            return Err(HandlerError::transient("metrics store warming up"));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    config.retry_base = Duration::from_millis(20);
    let bus = MemoryBus::new(config)?;

    let catalogue = Arc::new(OpportunityCatalogue::default());
    let monitor = Arc::new(AgentMonitor::default());
    let opportunity_types = [
        EventType::OPPORTUNITY_CREATED,
        EventType::OPPORTUNITY_UPDATED,
    ];
    bus.subscribe(
        SubscriptionSpec::new("opportunity", opportunity_types.clone())
            .start_from(StartFrom::Earliest),
        catalogue.clone(),
    )
    .await?;
    bus.subscribe(
        SubscriptionSpec::new("agent", [EventType::AGENT_TASK_COMPLETED]),
        monitor.clone(),
    )
    .await?;

    println!("publishing events of several types...");
    let started = time::OffsetDateTime::now_utc();
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(
            Event::builder(EventType::OPPORTUNITY_CREATED, "opportunity_service")
                .payload(json!({
                    "opportunity_id": format!("opp-{i}"),
                    "title": format!("AI opportunity #{i}"),
                    "ai_solution_type": "nlp",
                }))
                .partition_key(format!("opp-{i}"))
                .correlation_id("demo-request-1")
                .build()?,
        );
    }
    events.push(
        Event::builder(EventType::AGENT_TASK_COMPLETED, "agent_orchestrator")
            .payload(json!({"agent_id": "agent-1", "task_id": "t-1", "duration_seconds": 1.25}))
            .partition_key("agent-1")
            .build()?,
    );
    // No opportunity_id: the handler refuses it permanently, so it lands in the dead-letter queue.
    events.push(
        Event::builder(EventType::OPPORTUNITY_UPDATED, "opportunity_service")
            .payload(json!({"changes": {"title": "?"}}))
            .build()?,
    );
    for result in bus.publish_batch(events).await {
        println!("  published {}", result?);
    }

    // Wait (with a deadline) until every handler has finished its events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = bus.stats().await?;
        let done = |h: &str| {
            stats
                .handlers
                .get(h)
                .map_or(0, |s| s.processed + s.dead_lettered)
        };
        if done("opportunity") == 6 && done("agent") == 1 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("handlers did not finish within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!("\ncatalogue view:");
    for (id, title) in catalogue.titles.lock().map_err(|_| "poisoned")?.iter() {
        println!("  {id}: {title}");
    }

    let dead = bus.dead_letters("opportunity", 10).await?;
    println!("\ndead letters of `opportunity`: {}", dead.len());
    for letter in &dead {
        println!(
            "  {} after {} attempt(s): {}",
            letter.id, letter.attempts, letter.last_error
        );
    }
    let purged = bus
        .purge_dead_letters("opportunity", DeadLetterSelection::All)
        .await?;
    println!("  purged {purged}");

    println!("\nreplay of the last minute:");
    let mut replay = bus
        .replay(ReplayQuery::new([], started - time::Duration::minutes(1)))
        .await?;
    while let Some(event) = replay.next().await {
        let event = event?;
        println!(
            "  {} {} {}",
            timestamp::format(event.timestamp),
            event.event_type,
            event.id
        );
    }

    let stats = bus.stats().await?;
    println!("\nstats: {} events retained", stats.total_events);
    for (event_type, count) in &stats.events_by_type {
        println!("  {event_type}: {count}");
    }
    for (handler, s) in &stats.handlers {
        println!(
            "  handler {handler} ({}): processed {}, failed attempts {}, retried {}, dead-lettered {}",
            s.group, s.processed, s.failed, s.retried, s.dead_lettered
        );
    }
    println!("health: {:?}", bus.health().await.status);
    bus.shutdown().await?;
    Ok(())
}
