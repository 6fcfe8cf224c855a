//! The domain publishers on `MemoryBus`: every method publishes the right type, key, source
//! and payload; validation names the field and publishes nothing; correlation ids belong to
//! requests.

use std::sync::Arc;

use event_core::{Config, Event, EventBus, EventType, JsonObject, MemoryBus, ReplayQuery};
use event_publishers::*;
use futures::TryStreamExt;
use serde_json::json;
use time::OffsetDateTime;

fn bus() -> Arc<MemoryBus> {
    Arc::new(MemoryBus::new(Config::default()).expect("memory bus"))
}

/// Every retained event, in publish order.
async fn published(bus: &MemoryBus) -> Vec<Event> {
    let mut types: Vec<EventType> = EventType::STANDARD.to_vec();
    types.push(EventType::new(AgentTaskStarted::EVENT_TYPE).unwrap());
    types.push(EventType::new("billing.invoice_paid").unwrap());
    let from = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    bus.replay(ReplayQuery::new(types, from))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn object(value: serde_json::Value) -> JsonObject {
    value.as_object().cloned().unwrap()
}

/// Checks one published event against the payload that was given, after derived fields.
fn check<P: DomainEvent + PartialEq>(event: &Event, mut given: P, source: &str, key: Option<&str>) {
    given.derive_fields();
    assert_eq!(event.event_type, P::event_type());
    assert_eq!(event.source, source);
    assert_eq!(event.partition_key.as_deref(), key, "{}", event.event_type);
    assert_eq!(event.schema_version, P::SCHEMA_VERSION);
    assert_eq!(event.metadata["publisher_source"], source);
    assert!(event.metadata["published_at"].is_string());
    assert_eq!(P::from_event(event).unwrap(), given);
}

#[tokio::test]
async fn every_method_publishes_its_type_key_source_and_payload() {
    let bus = bus();
    let opportunities = OpportunityEventPublisher::new(bus.clone());
    let users = UserEventPublisher::new(bus.clone());
    let agents = AgentEventPublisher::new(bus.clone());
    let signals = MarketSignalEventPublisher::new(bus.clone());
    let system = SystemEventPublisher::new(bus.clone());

    let created = OpportunityCreated {
        opportunity_id: "opp-1".into(),
        title: "AI-Powered Customer Service".into(),
        description: "Automated customer support using NLP".into(),
        ai_solution_type: "nlp".into(),
        market_size_estimate: Some(5e6),
        created_by: Some("user-456".into()),
        extra: object(json!({"tags": ["support"]})),
    };
    let updated = OpportunityUpdated {
        opportunity_id: "opp-1".into(),
        changes: object(json!({"title": "New", "description": "Newer"})),
        updated_by: None,
        ..Default::default()
    };
    let validated = OpportunityValidated {
        opportunity_id: "opp-1".into(),
        validation_id: "val-1".into(),
        validator_id: "user-2".into(),
        validation_score: 7.5,
        validation_type: "market_demand".into(),
        comments: None,
        ..Default::default()
    };
    let deleted = OpportunityDeleted {
        opportunity_id: "opp-1".into(),
        deleted_by: "admin".into(),
        reason: Some("duplicate".into()),
        ..Default::default()
    };
    let submitted = ValidationSubmitted {
        validation_id: "val-2".into(),
        opportunity_id: "opp-1".into(),
        validator_id: "user-3".into(),
        validation_type: "technical".into(),
        ..Default::default()
    };
    let approved = ValidationApproved {
        validation_id: "val-2".into(),
        opportunity_id: "opp-1".into(),
        approved_by: Some("mod".into()),
        validation_score: Some(9.0),
        ..Default::default()
    };
    let rejected = ValidationRejected {
        validation_id: "val-3".into(),
        opportunity_id: "opp-1".into(),
        reason: "no evidence".into(),
        ..Default::default()
    };
    opportunities
        .opportunity_created(created.clone())
        .await
        .unwrap();
    opportunities
        .opportunity_updated(updated.clone())
        .await
        .unwrap();
    opportunities
        .opportunity_validated(validated.clone())
        .await
        .unwrap();
    opportunities
        .opportunity_deleted(deleted.clone())
        .await
        .unwrap();
    opportunities
        .validation_submitted(submitted.clone())
        .await
        .unwrap();
    opportunities
        .validation_approved(approved.clone())
        .await
        .unwrap();
    opportunities
        .validation_rejected(rejected.clone())
        .await
        .unwrap();

    let registered = UserRegistered {
        user_id: "user-1".into(),
        email: "ada@example.com".into(),
        ..Default::default()
    };
    let profile = UserProfileUpdated {
        user_id: "user-1".into(),
        changes: object(json!({"bio": "hi"})),
        ..Default::default()
    };
    let reputation = UserReputationChanged {
        user_id: "user-1".into(),
        old_score: 10.0,
        new_score: 12.5,
        reason: "validation accepted".into(),
        ..Default::default()
    };
    users.user_registered(registered.clone()).await.unwrap();
    users.user_profile_updated(profile.clone()).await.unwrap();
    users
        .user_reputation_changed(reputation.clone())
        .await
        .unwrap();

    let started = AgentStarted {
        agent_id: "agent-1".into(),
        agent_type: "monitoring".into(),
        config: Some(object(json!({"interval": 60}))),
        ..Default::default()
    };
    let stopped = AgentStopped {
        agent_id: "agent-1".into(),
        agent_type: "monitoring".into(),
        reason: "done".into(),
        uptime_seconds: Some(12.0),
        ..Default::default()
    };
    let error = AgentError {
        agent_id: "agent-1".into(),
        agent_type: "monitoring".into(),
        error_message: "boom".into(),
        ..Default::default()
    };
    let task_started = AgentTaskStarted {
        agent_id: "agent-1".into(),
        task_id: "task-1".into(),
        task_type: "scan".into(),
        ..Default::default()
    };
    let task_completed = AgentTaskCompleted {
        agent_id: "agent-1".into(),
        task_id: "task-1".into(),
        task_type: "scan".into(),
        duration_seconds: 1.25,
        result: Some(json!({"found": 2})),
        ..Default::default()
    };
    agents.agent_started(started.clone()).await.unwrap();
    agents.agent_stopped(stopped.clone()).await.unwrap();
    agents.agent_error(error.clone()).await.unwrap();
    agents
        .agent_task_started(task_started.clone())
        .await
        .unwrap();
    agents
        .agent_task_completed(task_completed.clone())
        .await
        .unwrap();

    let detected = SignalDetected {
        signal_id: "signal-1".into(),
        source: "reddit".into(),
        signal_type: "pain_point".into(),
        content: String::new(),
        confidence: 0.8,
        ..Default::default()
    };
    let processed = SignalProcessed {
        signal_id: "signal-1".into(),
        processing_result: json!("ok"),
        quality_score: Some(0.5),
        ..Default::default()
    };
    let clustered = SignalClustered {
        cluster_id: "cluster-1".into(),
        signal_ids: vec!["signal-1".into(), "signal-2".into(), "signal-3".into()],
        cluster_theme: "support".into(),
        ..Default::default()
    };
    signals.signal_detected(detected.clone()).await.unwrap();
    signals.signal_processed(processed.clone()).await.unwrap();
    signals.signal_clustered(clustered.clone()).await.unwrap();

    let health = SystemHealthCheck {
        component: "api".into(),
        status: "degraded".into(),
        response_time_ms: Some(250.0),
        ..Default::default()
    };
    let failure = SystemError {
        component: "api".into(),
        error_message: "db down".into(),
        ..Default::default()
    };
    let maintenance = SystemMaintenance {
        maintenance_type: "upgrade".into(),
        start_time: time::macros::datetime!(2026-12-01 02:00 UTC),
        estimated_duration: "2 hours".into(),
        affected_components: vec!["api".into()],
        extra: JsonObject::new(),
    };
    system.health_check(health.clone()).await.unwrap();
    system.system_error(failure.clone()).await.unwrap();
    system
        .maintenance_scheduled(maintenance.clone())
        .await
        .unwrap();

    let events = published(&bus).await;
    assert_eq!(events.len(), 21);
    let find = |t: &str| {
        events
            .iter()
            .find(|e| e.event_type.as_str() == t)
            .unwrap_or_else(|| panic!("no {t} event"))
    };
    let opp = "opportunity_service";
    check(find("opportunity.created"), created, opp, Some("opp-1"));
    check(find("opportunity.updated"), updated, opp, Some("opp-1"));
    check(find("opportunity.validated"), validated, opp, Some("opp-1"));
    check(find("opportunity.deleted"), deleted, opp, Some("opp-1"));
    check(find("validation.submitted"), submitted, opp, Some("opp-1"));
    check(find("validation.approved"), approved, opp, Some("opp-1"));
    check(find("validation.rejected"), rejected, opp, Some("opp-1"));
    check(
        find("user.registered"),
        registered,
        "user_service",
        Some("user-1"),
    );
    check(
        find("user.profile_updated"),
        profile,
        "user_service",
        Some("user-1"),
    );
    check(
        find("user.reputation_changed"),
        reputation,
        "user_service",
        Some("user-1"),
    );
    let orchestrator = "agent_orchestrator";
    check(
        find("agent.started"),
        started,
        orchestrator,
        Some("agent-1"),
    );
    check(
        find("agent.stopped"),
        stopped,
        orchestrator,
        Some("agent-1"),
    );
    check(find("agent.error"), error, orchestrator, Some("agent-1"));
    check(
        find("agent.task_started"),
        task_started,
        orchestrator,
        Some("agent-1"),
    );
    check(
        find("agent.task_completed"),
        task_completed,
        orchestrator,
        Some("agent-1"),
    );
    let monitoring = "monitoring_agent";
    check(
        find("signal.detected"),
        detected,
        monitoring,
        Some("signal-1"),
    );
    check(
        find("signal.processed"),
        processed,
        monitoring,
        Some("signal-1"),
    );
    check(
        find("signal.clustered"),
        clustered,
        monitoring,
        Some("cluster-1"),
    );
    check(find("system.health_check"), health, "system", Some("api"));
    check(find("system.error"), failure, "system", Some("api"));
    check(find("system.maintenance"), maintenance, "system", None);

    // The wire payloads carry the original's names, derived fields and defaults.
    let wire = |t: &str| &find(t).payload;
    assert_eq!(wire("opportunity.created")["tags"], json!(["support"]));
    assert_eq!(
        wire("opportunity.created")["market_size_estimate"],
        json!(5e6)
    );
    assert_eq!(wire("opportunity.updated")["change_count"], 2);
    assert_eq!(wire("opportunity.updated")["updated_by"], json!(null));
    assert_eq!(wire("user.profile_updated")["change_count"], 1);
    assert_eq!(wire("user.reputation_changed")["change_amount"], 2.5);
    assert_eq!(wire("user.registered")["user_type"], "user");
    assert_eq!(wire("signal.clustered")["signal_count"], 3);
    assert_eq!(wire("agent.task_completed")["success"], true);
    assert_eq!(wire("system.error")["severity"], "medium");
    assert_eq!(
        wire("system.maintenance")["start_time"],
        "2026-12-01T02:00:00.000000Z"
    );
}

#[tokio::test]
async fn explicit_derived_values_are_kept_as_the_original_kept_them() {
    let bus = bus();
    let users = UserEventPublisher::new(bus.clone());
    let signals = MarketSignalEventPublisher::new(bus.clone());
    users
        .user_reputation_changed(UserReputationChanged {
            user_id: "user-1".into(),
            old_score: 1.0,
            new_score: 2.0,
            reason: "bonus".into(),
            change_amount: 5.0,
            ..Default::default()
        })
        .await
        .unwrap();
    signals
        .signal_clustered(SignalClustered {
            cluster_id: "c".into(),
            signal_ids: vec!["a".into()],
            cluster_theme: "t".into(),
            signal_count: 40,
            ..Default::default()
        })
        .await
        .unwrap();
    let events = published(&bus).await;
    assert_eq!(events[0].payload["change_amount"], 5.0);
    assert_eq!(events[1].payload["signal_count"], 40);
}

#[tokio::test]
async fn validation_names_the_field_and_publishes_nothing() {
    let bus = bus();
    let signals = MarketSignalEventPublisher::new(bus.clone());
    let opportunities = OpportunityEventPublisher::new(bus.clone());
    let agents = AgentEventPublisher::new(bus.clone());

    let cases: Vec<(Error, &str)> = vec![
        (
            signals
                .signal_detected(SignalDetected {
                    signal_id: "s".into(),
                    source: "reddit".into(),
                    signal_type: "pain".into(),
                    confidence: 1.2,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "confidence",
        ),
        (
            opportunities
                .opportunity_created(OpportunityCreated {
                    opportunity_id: "opp".into(),
                    title: "  ".into(),
                    description: "d".into(),
                    ai_solution_type: "nlp".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "title",
        ),
        (
            opportunities
                .opportunity_validated(OpportunityValidated {
                    opportunity_id: "opp".into(),
                    validation_id: "v".into(),
                    validator_id: "u".into(),
                    validation_score: 11.0,
                    validation_type: "t".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "validation_score",
        ),
        (
            signals
                .signal_processed(SignalProcessed {
                    signal_id: "s".into(),
                    processing_result: json!({}),
                    quality_score: Some(f64::NAN),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "quality_score",
        ),
        (
            agents
                .agent_task_completed(AgentTaskCompleted {
                    agent_id: "a".into(),
                    task_id: "t".into(),
                    task_type: "scan".into(),
                    duration_seconds: -1.0,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            "duration_seconds",
        ),
    ];
    for (error, expected) in cases {
        match &error {
            Error::Invalid { field, .. } => assert_eq!(field, expected, "{error}"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert!(error.to_string().contains(expected), "{error}");
        assert!(!error.is_transient());
    }
    assert!(
        published(&bus).await.is_empty(),
        "an invalid event was published"
    );
}

#[tokio::test]
async fn untyped_json_is_checked_for_known_types_and_free_for_custom_ones() {
    let bus = bus();
    let publisher = EventPublisher::new(bus.clone(), "api_middleware");

    let err = publisher
        .publish_json(
            EventType::USER_REGISTERED,
            object(json!({"user_id": "u-1"})),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "email"),
        "{err}"
    );

    publisher
        .publish_json(
            EventType::USER_REGISTERED,
            object(json!({"user_id": "u-1", "email": "a@b.c", "plan": "pro"})),
            None,
        )
        .await
        .unwrap();
    let custom = EventType::new("billing.invoice_paid").unwrap();
    publisher
        .publish_json(
            custom.clone(),
            object(json!({"anything": [1, 2]})),
            Some("inv-1".into()),
        )
        .await
        .unwrap();

    let events = published(&bus).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].partition_key.as_deref(),
        Some("u-1"),
        "key from the catalog"
    );
    let user = UserRegistered::from_event(&events[0]).unwrap();
    assert_eq!(user.user_type, "user");
    assert_eq!(user.extra["plan"], "pro");
    assert_eq!(events[1].event_type, custom);
    assert_eq!(events[1].partition_key.as_deref(), Some("inv-1"));
    assert_eq!(events[1].payload["anything"], json!([1, 2]));
}

#[tokio::test]
async fn correlation_ids_belong_to_requests_not_to_the_process() {
    let bus = bus();
    let service = SystemEventPublisher::new(bus.clone());
    let health = |component: &str| SystemHealthCheck {
        component: component.into(),
        status: "healthy".into(),
        ..Default::default()
    };
    service
        .for_request("req-1")
        .health_check(health("a"))
        .await
        .unwrap();
    service
        .for_request("req-2")
        .health_check(health("b"))
        .await
        .unwrap();
    // Two units of work without a request id still get two different ids.
    let generic = EventPublisher::new(bus.clone(), "worker");
    generic
        .for_unit_of_work()
        .publish(health("c"))
        .await
        .unwrap();
    generic
        .for_unit_of_work()
        .publish(health("d"))
        .await
        .unwrap();

    let events = published(&bus).await;
    let ids: Vec<_> = events
        .iter()
        .map(|e| e.correlation_id.clone().unwrap())
        .collect();
    assert_eq!(ids[0], "req-1");
    assert_eq!(ids[1], "req-2");
    assert_ne!(ids[2], ids[3]);
    assert!(events.iter().all(|e| e.causation_id.is_none()));

    // Events caused by a received event carry its correlation id and its id as causation.
    let follow_up = generic.caused_by(&events[0]);
    follow_up.publish(health("e")).await.unwrap();
    let events = published(&bus).await;
    assert_eq!(events[4].correlation_id.as_deref(), Some("req-1"));
    assert_eq!(events[4].causation_id, Some(events[0].id.to_string()));
    assert_eq!(events[4].source, "worker");
}

#[tokio::test]
async fn decoding_refuses_other_types_and_names_bad_fields() {
    let bus = bus();
    let publisher = EventPublisher::new(bus.clone(), "svc");
    publisher
        .publish(SystemHealthCheck {
            component: "api".into(),
            status: "healthy".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut event = published(&bus).await.remove(0);
    let err = SystemError::from_event(&event).unwrap_err();
    assert!(matches!(err, Error::WrongEventType { .. }), "{err}");

    event
        .payload
        .insert("response_time_ms".into(), json!("fast"));
    let err = SystemHealthCheck::from_event(&event).unwrap_err();
    assert!(
        matches!(&err, Error::Decode { field, .. } if field == "response_time_ms"),
        "{err}"
    );

    event.schema_version = 2;
    let err = SystemHealthCheck::from_event(&event).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SchemaTooNew {
                version: 2,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
}
