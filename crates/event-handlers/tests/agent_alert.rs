//! The agent handler end to end on `MemoryBus`, with the typed `AgentEventPublisher`: the
//! fleet view, one `system.error` alert per episode of a high error rate (which the system
//! handler then records), and payloads with missing fields.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{Harness, eventually, settled};
use event_core::{
    Event, EventBus, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use event_handlers::{
    AgentAlertPolicy, AgentEventHandler, AgentStatus, DomainContext, DomainHandlerKind, Thresholds,
};
use event_publishers::{
    AgentError, AgentEventPublisher, AgentStarted, AgentStopped, AgentTaskCompleted,
    AgentTaskStarted,
};
use serde_json::json;

fn context(bus: Arc<dyn EventBus>) -> DomainContext {
    let mut thresholds = Thresholds::default();
    thresholds.agent_alert = AgentAlertPolicy::new(0.5, Duration::from_secs(3600), 4);
    DomainContext::new(bus).with_thresholds(thresholds)
}

fn task(agent: &str, id: usize, seconds: f64, success: bool) -> AgentTaskCompleted {
    AgentTaskCompleted {
        agent_id: agent.into(),
        task_id: format!("t{id}"),
        task_type: "scan".into(),
        duration_seconds: seconds,
        success,
        ..Default::default()
    }
}

fn error(agent: &str, message: &str) -> AgentError {
    AgentError {
        agent_id: agent.into(),
        agent_type: "monitoring".into(),
        error_message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn alert_fires_once_per_episode() -> anyhow::Result<()> {
    let harness = Harness::start(
        &[DomainHandlerKind::Agent, DomainHandlerKind::System],
        context,
    )
    .await?;
    let bus = harness.bus.clone();
    let alerts = Arc::new(Mutex::new(Vec::<Event>::new()));
    let sink = alerts.clone();
    let watch = bus
        .subscribe(
            SubscriptionSpec::new("alert_watch", [EventType::SYSTEM_ERROR])
                .start_from(StartFrom::Earliest),
            handler_fn("alert_watch", move |e| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((*e).clone());
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    let agents = AgentEventPublisher::new(bus.clone()).for_request("run-1");
    agents
        .agent_started(AgentStarted {
            agent_id: "agent-1".into(),
            agent_type: "monitoring".into(),
            ..Default::default()
        })
        .await?;
    // Two good tasks, one failed task, then errors: the rate reaches 50% at the 4th outcome.
    for (i, success) in [true, true, false].into_iter().enumerate() {
        agents
            .agent_task_completed(task("agent-1", i, 1.5, success))
            .await?;
    }
    for _ in 0..3 {
        agents
            .agent_error(error("agent-1", "API quota exceeded"))
            .await?;
    }
    settled(&bus, "agent", 7).await?;
    eventually("the alert", || !alerts.lock().unwrap().is_empty()).await?;
    let snapshot = harness.handler(DomainHandlerKind::Agent).view.snapshot();
    let agent = &snapshot["agents"][0];
    assert_eq!(agent["alerts_raised"], 1, "{snapshot:#}");
    assert_eq!(agent["alerting"], true);
    assert_eq!(agent["status"], "errored");
    assert_eq!(agent["errors"], 3);
    assert_eq!(agent["tasks_completed"], 3);
    assert_eq!(agent["success_rate"].as_f64().context("rate")?, 2.0 / 3.0);
    let alert = alerts.lock().unwrap()[0].clone();
    assert_eq!(alert.source, "agent_monitor");
    assert_eq!(alert.payload["error_code"], "AGENT_ERROR_RATE");
    assert_eq!(alert.payload["component"], "agent:agent-1");
    assert_eq!(alert.payload["severity"], "high");
    assert_eq!(alert.payload["failures"], 2);
    assert_eq!(alert.payload["outcomes"], 4);
    assert_eq!(alert.correlation_id.as_deref(), Some("run-1"));
    // It decodes as the typed payload other services read.
    let typed =
        <event_publishers::SystemError as event_publishers::DomainEvent>::from_event(&alert)?;
    assert_eq!(typed.component, "agent:agent-1");
    // The system handler recorded it.
    settled(&bus, "system", 1).await?;
    let status = harness.handler(DomainHandlerKind::System).view.snapshot();
    assert_eq!(status["errors_by_severity"]["high"], 1, "{status:#}");

    // Ten good tasks bring the rate to 4 of 16 (the episode ends); no new alert.
    for i in 10..20 {
        agents
            .agent_task_completed(task("agent-1", i, 0.5, true))
            .await?;
    }
    settled(&bus, "agent", 17).await?;
    let snapshot = harness.handler(DomainHandlerKind::Agent).view.snapshot();
    assert_eq!(snapshot["agents"][0]["alerting"], false, "{snapshot:#}");
    assert_eq!(snapshot["agents"][0]["status"], "running");
    // Twelve errors cross the threshold again (at the 8th): a second alert, only one.
    for _ in 0..12 {
        agents.agent_error(error("agent-1", "down")).await?;
    }
    settled(&bus, "agent", 29).await?;
    settled(&bus, "alert_watch", 2).await?;
    let snapshot = harness.handler(DomainHandlerKind::Agent).view.snapshot();
    assert_eq!(snapshot["alerts_raised"], 2, "{snapshot:#}");
    ensure!(alerts.lock().unwrap().len() == 2, "one alert per episode");
    watch.unsubscribe().await?;
    harness.stop().await
}

#[tokio::test]
async fn fleet_view_tracks_tasks_durations_and_uptime() -> anyhow::Result<()> {
    let bus: Arc<dyn EventBus> = Arc::new(event_core::MemoryBus::default());
    let handler = Arc::new(AgentEventHandler::new(
        bus.clone(),
        AgentAlertPolicy::default(),
    ));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("agent", AgentEventHandler::event_types()),
            handler.clone(),
        )
        .await?;
    let agents = AgentEventPublisher::new(bus.clone());
    for agent in ["agent-a", "agent-b"] {
        agents
            .agent_started(AgentStarted {
                agent_id: agent.into(),
                agent_type: "analysis".into(),
                ..Default::default()
            })
            .await?;
    }
    for i in 0..20 {
        agents
            .agent_task_started(AgentTaskStarted {
                agent_id: "agent-a".into(),
                task_id: format!("t{i}"),
                task_type: "analyze".into(),
                ..Default::default()
            })
            .await?;
    }
    // Durations 1..=19 s for t0..t18 (t19 still running), every fifth task failed.
    for i in 0..19 {
        agents
            .agent_task_completed(task("agent-a", i, (i + 1) as f64, i % 5 != 4))
            .await?;
    }
    // Stopped without uptime_seconds (optional): computed from start and stop.
    agents
        .agent_stopped(AgentStopped {
            agent_id: "agent-b".into(),
            agent_type: "analysis".into(),
            reason: "scaled down".into(),
            uptime_seconds: None,
            ..Default::default()
        })
        .await?;
    settled(&bus, "agent", 42).await?;
    let fleet = handler.fleet();
    assert_eq!((fleet.running, fleet.stopped, fleet.errored), (1, 1, 0));
    let a = fleet.agent("agent-a").context("agent-a")?;
    assert_eq!(a.tasks_started, 20);
    assert_eq!(a.tasks_completed, 19);
    assert_eq!(a.tasks_in_progress, 1);
    assert_eq!(a.tasks_failed, 3);
    assert_eq!(a.success_rate, Some(16.0 / 19.0));
    assert_eq!(a.mean_duration_seconds, Some(10.0));
    assert_eq!(a.p95_duration_seconds, Some(19.0));
    assert!(a.uptime_seconds.is_some_and(|s| s >= 0.0));
    let b = fleet.agent("agent-b").context("agent-b")?;
    assert_eq!(b.status, AgentStatus::Stopped);
    assert_eq!(b.stop_reason.as_deref(), Some("scaled down"));
    assert!(b.uptime_seconds.is_some_and(|s| s >= 0.0));
    assert!(!a.alerting, "3 failures of 19 is under the default 50%");
    subscription.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn missing_fields_never_crash_it() -> anyhow::Result<()> {
    let harness = Harness::start(&[DomainHandlerKind::Agent], context).await?;
    let bus = harness.bus.clone();
    // Optional fields absent (error_type, stack_trace, config, result): handled.
    let raw = |event_type: EventType, payload: serde_json::Value| -> anyhow::Result<Event> {
        Ok(Event::builder(event_type, "legacy_agent")
            .payload(payload)
            .partition_key("agent-x")
            .build()?)
    };
    bus.publish(raw(
        EventType::AGENT_STARTED,
        json!({"agent_id": "agent-x", "agent_type": "legacy"}),
    )?)
    .await?;
    bus.publish(raw(
        EventType::AGENT_ERROR,
        json!({"agent_id": "agent-x", "agent_type": "legacy", "error_message": "boom"}),
    )?)
    .await?;
    // The original's crash: a task without duration_seconds. Here a permanent failure that
    // names the field, dead-lettered; the handler goes on with the next event.
    let broken = raw(
        EventType::AGENT_TASK_COMPLETED,
        json!({"agent_id": "agent-x", "task_id": "t1", "task_type": "scan"}),
    )?;
    bus.publish(broken.clone()).await?;
    bus.publish(raw(
        EventType::AGENT_TASK_COMPLETED,
        json!({"agent_id": "agent-x", "task_id": "t2", "task_type": "scan", "duration_seconds": 2.0}),
    )?)
    .await?;
    settled(&bus, "agent", 4).await?;
    let dead = bus.dead_letters("agent", 10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.as_ref().map(|e| e.id), Some(broken.id));
    assert_eq!(dead[0].attempts, 1, "permanent: not retried");
    assert!(
        dead[0].last_error.contains("duration_seconds"),
        "{}",
        dead[0].last_error
    );
    let snapshot = harness.handler(DomainHandlerKind::Agent).view.snapshot();
    let agent = &snapshot["agents"][0];
    assert_eq!(agent["errors"], 1, "{snapshot:#}");
    assert_eq!(agent["last_error"], "boom");
    assert_eq!(agent["tasks_completed"], 1);
    assert_eq!(agent["status"], "running");
    harness.stop().await
}

/// Publishes that fail while `down`, as with a lost connection.
#[derive(Default)]
struct Switch {
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl event_testkit::PublishHook for Switch {
    async fn publish_batch(
        &self,
        inner: &dyn EventBus,
        events: Vec<Event>,
    ) -> Vec<Result<event_core::EventId, event_core::Error>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return events
                .iter()
                .map(|_| {
                    Err(event_core::Error::backend(
                        "memory",
                        "connection lost",
                        true,
                    ))
                })
                .collect();
        }
        inner.publish_batch(events).await
    }
}

/// An alert that cannot be published fails its event as transient; the retry publishes it
/// once the bus is back, without counting the event twice in the view.
#[tokio::test]
async fn a_failed_alert_publish_is_retried_without_counting_twice() -> anyhow::Result<()> {
    let bus = event_testkit::InterceptedBus::new(
        Arc::new(event_core::MemoryBus::default()),
        Switch::default(),
    );
    let alerts = Arc::new(Mutex::new(Vec::<Event>::new()));
    let sink = alerts.clone();
    let watch = bus
        .subscribe(
            SubscriptionSpec::new("alert_watch", [EventType::SYSTEM_ERROR]),
            handler_fn("alert_watch", move |e| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((*e).clone());
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    let handler = AgentEventHandler::new(
        bus.clone(),
        AgentAlertPolicy::new(0.5, Duration::from_secs(3600), 2),
    );
    let publisher = event_publishers::EventPublisher::new(bus.clone(), "agent_orchestrator");
    let first = publisher.event(error("agent-1", "boom"))?;
    event_core::EventHandler::handle(&handler, &first).await?;
    // The second error crosses the threshold while the bus cannot publish.
    bus.hook()
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let second = publisher.event(error("agent-1", "boom again"))?;
    let failure = event_core::EventHandler::handle(&handler, &second)
        .await
        .unwrap_err();
    assert!(failure.is_transient(), "{failure}");
    assert!(failure.message().contains("connection lost"), "{failure}");
    // A retry while still down: still failing, the view still counts two errors.
    event_core::EventHandler::handle(&handler, &second)
        .await
        .unwrap_err();
    assert_eq!(handler.fleet().agent("agent-1").context("agent")?.errors, 2);
    // Back up: the retry publishes the alert, once.
    bus.hook()
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    event_core::EventHandler::handle(&handler, &second).await?;
    event_core::EventHandler::handle(&handler, &second).await?;
    settled(&(bus.clone() as Arc<dyn EventBus>), "alert_watch", 1).await?;
    let fleet = handler.fleet();
    let agent = fleet.agent("agent-1").context("agent")?;
    assert_eq!((agent.errors, agent.alerts_raised), (2, 1));
    assert_eq!(alerts.lock().unwrap().len(), 1);
    assert_eq!(
        alerts.lock().unwrap()[0].causation_id,
        Some(second.id.to_string())
    );
    watch.unsubscribe().await?;
    Ok(())
}
