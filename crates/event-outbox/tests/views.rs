//! `PostgresView`: a view applied in transactions that sometimes roll back after it applied
//! the event equals the fold of the committed events alone, in this process and in another
//! one that folds the journal; the agents' alerts go to the outbox once each. (The manager's
//! `tests/views_postgres.rs` runs it with two processes in one group on Redis and Kafka.)

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use event_core::{Event, EventBus, EventHandler, EventId, EventType, HandlerError, MemoryBus};
use event_handlers::{DomainContext, DomainHandlerKind, Fold, View, build_fold};
use event_outbox::{
    InboxConfig, InboxLayer, InboxTransaction, Outbox, PostgresView, TransactionalHandler,
};
use serde_json::json;
use tower::Layer as _;

const AGENTS: usize = 40;
const TASKS: usize = 12;

/// The agent handler's view, fresh.
fn agents(ctx: &DomainContext) -> Arc<dyn Fold> {
    build_fold(DomainHandlerKind::Agent, ctx).expect("the agent handler keeps a view")
}

/// Runs the view in the inbox's transaction, then fails the events in `doomed` (after the
/// view applied them): their transactions roll back, every time.
struct FailingAfter {
    view: Arc<PostgresView>,
    doomed: HashSet<EventId>,
}

#[async_trait]
impl TransactionalHandler for FailingAfter {
    fn name(&self) -> &str {
        TransactionalHandler::name(&*self.view)
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        self.view.handle(event, tx).await?;
        if self.doomed.contains(&event.id) {
            return Err(HandlerError::permanent("a later write failed"));
        }
        Ok(())
    }
}

/// Each agent starts, then completes tasks; the even ones fail most of theirs (an alert each).
fn history() -> Vec<Event> {
    let mut events = Vec::new();
    for task in 0..=TASKS {
        for a in 0..AGENTS {
            let id = format!("agent-{a}");
            let (event_type, payload) = if task == 0 {
                (
                    EventType::AGENT_STARTED,
                    json!({"agent_id": id, "agent_type": "monitor"}),
                )
            } else {
                let success = a % 2 == 1 || task % 4 == 0;
                (
                    EventType::AGENT_TASK_COMPLETED,
                    json!({"agent_id": id, "task_id": format!("{id}-{task}"), "task_type": "scan", "duration_seconds": 2.0, "success": success}),
                )
            };
            let serde_json::Value::Object(payload) = payload else {
                unreachable!("a json! object")
            };
            events.push(
                Event::builder(event_type, "views_test")
                    .payload(payload)
                    .partition_key(id)
                    .build()
                    .expect("a valid event"),
            );
        }
    }
    events
}

/// An agent view without the uptimes, which count to now.
fn comparable(view: &dyn View) -> serde_json::Value {
    let mut snapshot = view.snapshot();
    if let Some(serde_json::Value::Array(agents)) = snapshot.get_mut("agents") {
        for agent in agents {
            if let Some(fields) = agent.as_object_mut() {
                fields.remove("uptime_seconds");
            }
        }
    }
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_rolled_back_after_the_view_applied_them_are_taken_out() -> anyhow::Result<()> {
    let Some(db) = support::test_db().await? else {
        return Ok(());
    };
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::default());
    let ctx = DomainContext::new(bus);
    let history = history();
    // Every ninth event's transaction rolls back, whatever is retried.
    let doomed: HashSet<EventId> = history.iter().step_by(9).map(|e| e.id).collect();
    let make = {
        let ctx = ctx.clone();
        move || agents(&ctx)
    };
    let view = Arc::new(PostgresView::new("agent", db.pool.clone(), make.clone()));
    let outbox = Outbox::with_channel(db.schema.clone());
    let inbox = InboxLayer::new(db.pool.clone(), outbox.clone(), InboxConfig::default()).layer(
        FailingAfter {
            view: view.clone(),
            doomed: doomed.clone(),
        },
    );
    for event in &history {
        let handled = inbox.handle(event).await;
        anyhow::ensure!(
            handled.is_ok() != doomed.contains(&event.id),
            "event {}: {handled:?}",
            event.id
        );
        if doomed.contains(&event.id) {
            // A retry rolls back again.
            anyhow::ensure!(inbox.handle(event).await.is_err());
        }
    }

    // The reference: the committed events alone, folded in memory.
    let reference = agents(&ctx);
    let mut alerts = 0;
    for event in history.iter().filter(|e| !doomed.contains(&e.id)) {
        alerts += reference.fold(event)?.len();
    }
    anyhow::ensure!(alerts > 0, "the history raises alerts");
    View::refresh(&*view)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(comparable(&*view), comparable(&*reference));
    let applied = (history.len() - doomed.len()) as i64;
    assert_eq!(view.applied().await, applied);

    // Another process folds the journal into the same view.
    let other = PostgresView::new("agent", db.pool.clone(), make);
    View::refresh(&other)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(comparable(&other), comparable(&*reference));
    assert_eq!(other.applied().await, applied);

    // Each alert of a committed event is in the outbox once; none of a rolled-back one.
    let stats = Outbox::stats(&db.pool).await?;
    assert_eq!(stats.pending, alerts as u64);
    db.drop_schema().await
}
