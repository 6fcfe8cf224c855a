//! The agent handler end to end on `MemoryBus`: an agent failing too often raises one
//! `system.error` alert per episode, which the system handler then records.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{
    Event, EventBus, EventType, HandlerError, MemoryBus, StartFrom, SubscriptionSpec, handler_fn,
};
use event_handlers::{AgentAlertPolicy, DomainContext, DomainHandlerKind, Thresholds, build};
use serde_json::json;
use tokio::sync::Mutex;

const BOUND: Duration = Duration::from_secs(20);

/// Waits until `check` holds, failing after [`BOUND`].
async fn eventually(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn agent_event(event_type: EventType, payload: serde_json::Value) -> anyhow::Result<Event> {
    Ok(Event::builder(event_type, "agent_orchestrator")
        .payload(payload)
        .partition_key("agent-1")
        .correlation_id("run-1")
        .build()?)
}

#[tokio::test]
async fn alert_fires_once_per_episode() -> anyhow::Result<()> {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::default());
    let mut thresholds = Thresholds::default();
    thresholds.agent_alert = AgentAlertPolicy::new(0.5, Duration::from_secs(3600), 4);
    let ctx = DomainContext::new(bus.clone()).with_thresholds(thresholds);
    let agent = build(DomainHandlerKind::Agent, &ctx)?;
    let system = build(DomainHandlerKind::System, &ctx)?;
    let mut subscriptions = Vec::new();
    for handler in [&agent, &system] {
        let spec = SubscriptionSpec::new(handler.handler.name(), handler.event_types.clone())
            .start_from(StartFrom::Earliest);
        subscriptions.push(bus.subscribe(spec, handler.handler.clone()).await?);
    }
    let alerts = Arc::new(Mutex::new(Vec::<Event>::new()));
    let seen = alerts.clone();
    subscriptions.push(
        bus.subscribe(
            SubscriptionSpec::new("alert_watch", [EventType::SYSTEM_ERROR]),
            handler_fn("alert_watch", move |e| {
                let seen = seen.clone();
                async move {
                    seen.lock().await.push((*e).clone());
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?,
    );

    bus.publish(agent_event(
        EventType::AGENT_STARTED,
        json!({"agent_id": "agent-1", "agent_type": "monitoring"}),
    )?)
    .await?;
    // Two good tasks, then failures: the rate reaches 50% at the 4th outcome (2 of 4).
    for (i, success) in [true, true, false].into_iter().enumerate() {
        bus.publish(agent_event(
            EventType::AGENT_TASK_COMPLETED,
            json!({"agent_id": "agent-1", "task_id": format!("t{i}"), "task_type": "scan", "duration_seconds": 1.5, "success": success}),
        )?)
        .await?;
    }
    for _ in 0..3 {
        bus.publish(agent_event(
            EventType::AGENT_ERROR,
            json!({"agent_id": "agent-1", "agent_type": "monitoring", "error_message": "API quota exceeded"}),
        )?)
        .await?;
    }
    let view = agent.view.clone();
    eventually("six outcomes", || {
        view.snapshot()["agents"][0]["errors"] == 3
    })
    .await?;
    eventually("the alert", || {
        alerts.try_lock().is_ok_and(|a| !a.is_empty())
    })
    .await?;
    let snapshot = agent.view.snapshot();
    let fleet = &snapshot["agents"][0];
    assert_eq!(fleet["alerts_raised"], 1, "{snapshot:#}");
    assert_eq!(fleet["status"], "errored");
    assert_eq!(fleet["tasks_completed"], 3);
    assert_eq!(fleet["success_rate"].as_f64().context("rate")?, 2.0 / 3.0);
    let alert = alerts.lock().await[0].clone();
    assert_eq!(alert.payload["error_code"], "AGENT_ERROR_RATE");
    assert_eq!(alert.payload["component"], "agent:agent-1");
    assert_eq!(alert.correlation_id.as_deref(), Some("run-1"));
    // The system handler recorded the alert.
    let status = system.view.clone();
    eventually("the system view", || {
        status.snapshot()["errors_by_severity"]["high"] == 1
    })
    .await?;

    // Good tasks bring the rate under the threshold (episode over); new failures cross it again.
    for i in 10..20 {
        bus.publish(agent_event(
            EventType::AGENT_TASK_COMPLETED,
            json!({"agent_id": "agent-1", "task_id": format!("t{i}"), "task_type": "scan", "duration_seconds": 0.5}),
        )?)
        .await?;
    }
    eventually("recovery", || {
        view.snapshot()["agents"][0]["alerting"] == false
    })
    .await?;
    ensure!(
        alerts.lock().await.len() == 1,
        "one alert for the first episode"
    );
    for _ in 0..12 {
        bus.publish(agent_event(
            EventType::AGENT_ERROR,
            json!({"agent_id": "agent-1", "agent_type": "monitoring", "error_message": "down"}),
        )?)
        .await?;
    }
    eventually("the second alert", || {
        alerts.try_lock().is_ok_and(|a| a.len() == 2)
    })
    .await?;
    eventually("errors applied", || {
        view.snapshot()["agents"][0]["errors"] == 15
    })
    .await?;
    assert_eq!(agent.view.snapshot()["alerts_raised"], 2);
    for subscription in subscriptions {
        subscription.unsubscribe().await?;
    }
    Ok(())
}
