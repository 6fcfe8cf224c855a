//! The seed's scenarios, published with the typed publishers of `event-publishers` on a
//! `MemoryBus`, and the views the domain handlers build from them.

mod common;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use common::{Harness, eventually, settled};
use event_core::{
    Event, EventBus, EventHandler, EventType, HandlerError, JsonObject, StartFrom,
    SubscriptionSpec, handler_fn,
};
use event_handlers::{
    AuditSettings, AuditTrailHandler, DomainContext, DomainHandlerKind, MarketSignalEventHandler,
    OpportunityEventHandler, REANALYSIS_REQUESTED, SystemEventHandler, UserEventHandler, View,
};
use event_publishers::{
    MarketSignalEventPublisher, OpportunityCreated, OpportunityDeleted, OpportunityEventPublisher,
    OpportunityUpdated, OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed,
    SystemError, SystemEventPublisher, SystemHealthCheck, SystemMaintenance, UserEventPublisher,
    UserProfileUpdated, UserRegistered, UserReputationChanged, ValidationApproved,
    ValidationRejected, ValidationSubmitted,
};
use serde_json::json;

fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// Subscribes a handler that collects every event of `event_type`.
async fn collect(
    bus: &Arc<dyn EventBus>,
    name: &str,
    event_type: EventType,
) -> anyhow::Result<(Arc<Mutex<Vec<Event>>>, event_core::Subscription)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new(name, [event_type]).start_from(StartFrom::Earliest),
            handler_fn(name.to_owned(), move |e| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((*e).clone());
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    Ok((seen, subscription))
}

#[tokio::test]
async fn opportunities_created_validated_updated_and_deleted() -> anyhow::Result<()> {
    let harness = Harness::start(&[DomainHandlerKind::Opportunity], DomainContext::new).await?;
    let bus = harness.bus.clone();
    let (requests, watch) = collect(
        &bus,
        "reanalysis_watch",
        EventType::new(REANALYSIS_REQUESTED)?,
    )
    .await?;
    let publisher = OpportunityEventPublisher::new(bus.clone()).for_request("req-1");
    for (id, title) in [
        ("opp-1", "AI-Powered Customer Service"),
        ("opp-2", "Invoice OCR"),
    ] {
        publisher
            .opportunity_created(OpportunityCreated {
                opportunity_id: id.into(),
                title: title.into(),
                description: "Automated customer support using NLP".into(),
                ai_solution_type: "nlp".into(),
                market_size_estimate: Some(5_000_000.0),
                created_by: Some("user-456".into()),
                ..Default::default()
            })
            .await?;
    }
    for (validation, score) in [("val-1", 8.0), ("val-2", 6.0)] {
        publisher
            .opportunity_validated(OpportunityValidated {
                opportunity_id: "opp-1".into(),
                validation_id: validation.into(),
                validator_id: "expert-1".into(),
                validation_score: score,
                validation_type: "market_research".into(),
                ..Default::default()
            })
            .await?;
    }
    // A cosmetic change: history only. A significant one: a re-analysis request.
    publisher
        .opportunity_updated(OpportunityUpdated {
            opportunity_id: "opp-1".into(),
            changes: object(json!({"title": "AI Customer Service"})),
            updated_by: Some("user-456".into()),
            ..Default::default()
        })
        .await?;
    publisher
        .opportunity_updated(OpportunityUpdated {
            opportunity_id: "opp-1".into(),
            changes: object(json!({"description": "Now with voice", "market_signals": ["sig-1"]})),
            updated_by: Some("user-789".into()),
            ..Default::default()
        })
        .await?;
    // The validation workflow on opp-2, then its deletion.
    publisher
        .validation_submitted(ValidationSubmitted {
            validation_id: "val-3".into(),
            opportunity_id: "opp-2".into(),
            validator_id: "expert-2".into(),
            validation_type: "technical".into(),
            validation_score: Some(4.0),
            ..Default::default()
        })
        .await?;
    publisher
        .validation_approved(ValidationApproved {
            validation_id: "val-3".into(),
            opportunity_id: "opp-2".into(),
            approved_by: Some("moderator".into()),
            ..Default::default()
        })
        .await?;
    publisher
        .validation_rejected(ValidationRejected {
            validation_id: "val-4".into(),
            opportunity_id: "opp-2".into(),
            rejected_by: Some("moderator".into()),
            reason: "duplicate".into(),
            ..Default::default()
        })
        .await?;
    publisher
        .opportunity_deleted(OpportunityDeleted {
            opportunity_id: "opp-2".into(),
            deleted_by: "admin".into(),
            reason: Some("duplicate of opp-1".into()),
            ..Default::default()
        })
        .await?;
    settled(&bus, "opportunity", 10).await?;
    eventually("the re-analysis request", || {
        !requests.lock().unwrap().is_empty()
    })
    .await?;

    let snapshot = harness
        .handler(DomainHandlerKind::Opportunity)
        .view
        .snapshot();
    assert_eq!(snapshot["created"], 2, "{snapshot:#}");
    assert_eq!(snapshot["active"], 1);
    assert_eq!(snapshot["deleted_count"], 1);
    let opp = &snapshot["opportunities"]["opp-1"];
    assert_eq!(opp["title"], "AI Customer Service");
    assert_eq!(opp["description"], "Now with voice");
    assert_eq!(opp["validation_count"], 2);
    assert_eq!(opp["mean_validation_score"], 7.0);
    assert_eq!(opp["history"].as_array().context("history")?.len(), 2);
    assert_eq!(opp["history"][1]["updated_by"], "user-789");
    assert_eq!(opp["reanalysis_requests"], 1);
    let deleted = &snapshot["deleted"]["opp-2"];
    assert_eq!(deleted["title"], "Invoice OCR");
    assert_eq!(deleted["reason"], "duplicate of opp-1");
    let reanalysis = &snapshot["reanalysis_requests"];
    assert_eq!(reanalysis.as_array().context("requests")?.len(), 1);
    assert_eq!(
        reanalysis[0]["changed_fields"],
        json!(["description", "market_signals"])
    );

    // The request was published once, caused by the update, in its request's correlation.
    let published = requests.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].payload["opportunity_id"], "opp-1");
    assert_eq!(published[0].correlation_id.as_deref(), Some("req-1"));
    assert_eq!(
        published[0].causation_id.as_deref(),
        reanalysis[0]["caused_by"].as_str()
    );
    watch.unsubscribe().await?;
    harness.stop().await
}

#[tokio::test]
async fn validation_workflow_scores_count_once_approved() -> anyhow::Result<()> {
    // The typed view, for Rust callers.
    let bus: Arc<dyn EventBus> = Arc::new(event_core::MemoryBus::default());
    let handler = Arc::new(OpportunityEventHandler::new(bus.clone(), 100));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("opportunity", OpportunityEventHandler::event_types()),
            handler.clone(),
        )
        .await?;
    let publisher = OpportunityEventPublisher::new(bus.clone());
    publisher
        .opportunity_created(OpportunityCreated {
            opportunity_id: "opp-9".into(),
            title: "t".into(),
            description: "d".into(),
            ai_solution_type: "cv".into(),
            ..Default::default()
        })
        .await?;
    publisher
        .validation_submitted(ValidationSubmitted {
            validation_id: "v".into(),
            opportunity_id: "opp-9".into(),
            validator_id: "e".into(),
            validation_type: "technical".into(),
            validation_score: Some(9.0),
            ..Default::default()
        })
        .await?;
    settled(&bus, "opportunity", 2).await?;
    let catalog = handler.catalog();
    let record = catalog.opportunity("opp-9").context("opp-9")?;
    assert_eq!(
        record.validation_count, 0,
        "a submitted score is not counted yet"
    );
    assert_eq!(record.validations["v"].status, "submitted");
    publisher
        .validation_approved(ValidationApproved {
            validation_id: "v".into(),
            opportunity_id: "opp-9".into(),
            ..Default::default()
        })
        .await?;
    settled(&bus, "opportunity", 3).await?;
    let catalog = handler.catalog();
    let record = catalog.opportunity("opp-9").context("opp-9")?;
    assert_eq!(record.validation_count, 1);
    assert_eq!(record.mean_validation_score, Some(9.0));
    assert_eq!(record.validations["v"].status, "approved");
    subscription.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn users_register_and_gain_reputation() -> anyhow::Result<()> {
    let bus: Arc<dyn EventBus> = Arc::new(event_core::MemoryBus::default());
    let handler = Arc::new(UserEventHandler::new(100));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("user", UserEventHandler::event_types()),
            handler.clone(),
        )
        .await?;
    let users = UserEventPublisher::new(bus.clone());
    users
        .user_registered(UserRegistered {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
            username: Some("ada".into()),
            ..Default::default()
        })
        .await?;
    users
        .user_registered(UserRegistered {
            user_id: "u-2".into(),
            email: "alan@example.com".into(),
            user_type: "expert".into(),
            ..Default::default()
        })
        .await?;
    for (old, new, reason) in [
        (0.0, 10.0, "first validation"),
        (10.0, 25.0, "validation approved"),
        (25.0, 20.0, "validation rejected"),
    ] {
        users
            .user_reputation_changed(UserReputationChanged {
                user_id: "u-1".into(),
                old_score: old,
                new_score: new,
                reason: reason.into(),
                ..Default::default()
            })
            .await?;
    }
    users
        .user_profile_updated(UserProfileUpdated {
            user_id: "u-1".into(),
            changes: object(json!({"bio": "mathematician", "username": "countess"})),
            ..Default::default()
        })
        .await?;
    settled(&bus, "user", 6).await?;
    let directory = handler.directory();
    assert_eq!(directory.registered, 2);
    assert_eq!(directory.reputation_changes, 3);
    let ada = directory.user("u-1").context("u-1")?;
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    assert_eq!(ada.username.as_deref(), Some("countess"));
    assert_eq!(ada.profile["bio"], "mathematician");
    assert_eq!(ada.reputation, 20.0);
    let ledger: Vec<(f64, &str)> = ada
        .ledger
        .iter()
        .map(|e| (e.change_amount, e.reason.as_str()))
        .collect();
    assert_eq!(
        ledger,
        [
            (10.0, "first validation"),
            (15.0, "validation approved"),
            (-5.0, "validation rejected")
        ]
    );
    assert_eq!(
        directory.user("u-2").context("u-2")?.user_type.as_deref(),
        Some("expert")
    );
    assert_eq!(handler.snapshot()["users"]["u-1"]["reputation"], 20.0);
    subscription.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn signals_detected_processed_and_clustered() -> anyhow::Result<()> {
    let bus: Arc<dyn EventBus> = Arc::new(event_core::MemoryBus::default());
    let handler = Arc::new(MarketSignalEventHandler::new(10_000));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("market_signal", MarketSignalEventHandler::event_types()),
            handler.clone(),
        )
        .await?;
    let signals = MarketSignalEventPublisher::new(bus.clone());
    // 100 signals, confidences 0.00 to 0.99: 20 per bucket of 0.2.
    for i in 0..100u32 {
        signals
            .signal_detected(SignalDetected {
                signal_id: format!("sig-{i}"),
                source: if i % 4 == 0 { "hackernews" } else { "reddit" }.into(),
                signal_type: "pain_point".into(),
                content: format!("Market signal {i}"),
                confidence: f64::from(i) / 100.0,
                ..Default::default()
            })
            .await?;
    }
    for i in 0..30u32 {
        signals
            .signal_processed(SignalProcessed {
                signal_id: format!("sig-{i}"),
                processing_result: json!({"sentiment": "negative"}),
                quality_score: Some(0.5),
                extracted_keywords: Some(vec!["support".into()]),
                ..Default::default()
            })
            .await?;
    }
    signals
        .signal_clustered(SignalClustered {
            cluster_id: "cluster-a".into(),
            signal_ids: (0..10).map(|i| format!("sig-{i}")).collect(),
            cluster_theme: "customer support pain".into(),
            ..Default::default()
        })
        .await?;
    // Overlapping cluster: sig-5..sig-14, five of them new.
    signals
        .signal_clustered(SignalClustered {
            cluster_id: "cluster-b".into(),
            signal_ids: (5..15).map(|i| format!("sig-{i}")).collect(),
            cluster_theme: "invoicing".into(),
            ..Default::default()
        })
        .await?;
    settled(&bus, "market_signal", 132).await?;
    let funnel = handler.funnel();
    assert_eq!(
        (funnel.detected, funnel.processed, funnel.clustered),
        (100, 30, 15)
    );
    assert_eq!(funnel.cluster_count, 2);
    let counts: Vec<u64> = funnel
        .confidence_distribution
        .iter()
        .map(|b| b.count)
        .collect();
    assert_eq!(counts, [20, 20, 20, 20, 20]);
    assert_eq!(funnel.by_source["hackernews"], 25);
    assert_eq!(funnel.by_source["reddit"], 75);
    assert_eq!(funnel.clusters["cluster-b"].members.len(), 10);
    assert_eq!(funnel.clusters["cluster-a"].signal_count, 10);
    let moved = funnel.signal("sig-7").context("sig-7")?;
    assert_eq!(moved.cluster_id.as_deref(), Some("cluster-b"));
    assert!(moved.processed);
    assert_eq!(funnel.mean_quality_score, Some(0.5));
    subscription.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn health_checks_errors_and_maintenance() -> anyhow::Result<()> {
    let bus: Arc<dyn EventBus> = Arc::new(event_core::MemoryBus::default());
    let handler = Arc::new(SystemEventHandler::new(100));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("system", SystemEventHandler::event_types()),
            handler.clone(),
        )
        .await?;
    let system = SystemEventPublisher::new(bus.clone());
    for (component, status, ms) in [
        ("api", "healthy", 12.0),
        ("database", "healthy", 3.0),
        ("database", "degraded", 950.0),
        ("search", "unhealthy", 5000.0),
    ] {
        system
            .health_check(SystemHealthCheck {
                component: component.into(),
                status: status.into(),
                response_time_ms: Some(ms),
                ..Default::default()
            })
            .await?;
    }
    for severity in ["high", "medium", "high", "critical"] {
        system
            .system_error(SystemError {
                component: "database".into(),
                error_message: "connection pool exhausted".into(),
                severity: severity.into(),
                error_code: Some("POOL".into()),
                ..Default::default()
            })
            .await?;
    }
    // Severity left to its default.
    system
        .system_error(SystemError {
            component: "api".into(),
            error_message: "slow".into(),
            ..Default::default()
        })
        .await?;
    let start = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    system
        .maintenance_scheduled(SystemMaintenance {
            maintenance_type: "database_upgrade".into(),
            start_time: start,
            estimated_duration: "2h".into(),
            affected_components: vec!["database".into(), "api".into()],
            extra: JsonObject::new(),
        })
        .await?;
    settled(&bus, "system", 10).await?;
    let status = handler.status();
    assert_eq!(status.degraded, ["database", "search"]);
    let database = status.component("database").context("database")?;
    assert_eq!(database.status, "degraded");
    assert_eq!(database.response_time_ms, Some(950.0));
    assert_eq!(database.checks, 2);
    assert_eq!(database.errors, 4);
    assert_eq!(status.errors_by_severity["high"], 2);
    assert_eq!(status.errors_by_severity["medium"], 2);
    assert_eq!(status.errors_by_severity["critical"], 1);
    assert_eq!(status.recent_errors.len(), 5);
    assert_eq!(status.maintenance.len(), 1);
    assert_eq!(
        status.maintenance[0].affected_components,
        ["database", "api"]
    );
    assert_eq!(
        status.maintenance[0].start_time.unix_timestamp(),
        start.unix_timestamp()
    );
    subscription.unsubscribe().await?;
    Ok(())
}

#[tokio::test]
async fn audit_trail_appends_every_event_and_rotates() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "event-handlers-audit-{}",
        event_core::EventId::new()
    ));
    // Sealed as an encrypting bus seals events at rest: the files hold no payload in clear.
    let keys = event_core::encryption::EncryptionKeys::parse(
        "audit:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    .map_err(anyhow::Error::msg)?;
    let settings = AuditSettings::json_lines(&dir)
        .rotation(4096, 100)
        .sealed_with(Some(keys.clone()));
    let harness = Harness::start(
        &[DomainHandlerKind::Audit, DomainHandlerKind::User],
        |bus| DomainContext::new(bus).with_audit(settings),
    )
    .await?;
    let bus = harness.bus.clone();
    let users = UserEventPublisher::new(bus.clone()).for_request("signup-batch");
    let system = SystemEventPublisher::new(bus.clone());
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            users
                .user_registered(UserRegistered {
                    user_id: format!("u-{i}"),
                    email: format!("user{i}@example.com"),
                    ..Default::default()
                })
                .await?,
        );
        ids.push(
            system
                .health_check(SystemHealthCheck {
                    component: "api".into(),
                    status: "healthy".into(),
                    ..Default::default()
                })
                .await?,
        );
    }
    settled(&bus, "audit", 80).await?;
    let snapshot = harness.handler(DomainHandlerKind::Audit).view.snapshot();
    assert_eq!(snapshot["entries_written"], 80, "{snapshot:#}");
    assert_eq!(snapshot["by_type"]["user.registered"], 40);
    assert_eq!(snapshot["by_type"]["system.health_check"], 40);
    assert!(
        snapshot["rotations"].as_u64().context("rotations")? >= 2,
        "{snapshot:#}"
    );

    // Every file holds whole lines that parse back into the events, no file passes the size
    // limit, and together they hold every event exactly once. (Deleting the oldest file
    // beyond EVENT_AUDIT_MAX_FILES is the writer's unit test.)
    let rotations = snapshot["rotations"].as_u64().context("rotations")?;
    let mut names = vec!["audit.jsonl".to_owned()];
    names.extend((1..=rotations).map(|n| format!("audit.{n}.jsonl")));
    let mut audited = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).with_context(|| name.clone())?;
        assert!(text.len() <= 4096, "{name} is {} bytes", text.len());
        assert!(
            !text.contains("@example.com"),
            "{name} holds a payload in clear"
        );
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            assert!(value["audited_at"].is_string());
            let event: Event = serde_json::from_value(value["event"].clone())?;
            let event = keys.open(event)?;
            if event.event_type == EventType::USER_REGISTERED {
                assert!(
                    event.payload["email"]
                        .as_str()
                        .is_some_and(|e| e.ends_with("@example.com"))
                );
            }
            audited.push(event.id);
        }
    }
    audited.sort();
    ids.sort();
    assert_eq!(audited, ids);
    harness.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_redelivered_event_is_applied_once() -> anyhow::Result<()> {
    let handler = UserEventHandler::new(100);
    let publisher = event_publishers::EventPublisher::new(
        Arc::new(event_core::MemoryBus::default()),
        "user_service",
    );
    let event = publisher.event(UserReputationChanged {
        user_id: "u-1".into(),
        old_score: 0.0,
        new_score: 5.0,
        reason: "helpful".into(),
        ..Default::default()
    })?;
    handler.handle(&event).await?;
    handler.handle(&event).await?;
    let directory = handler.directory();
    assert_eq!(directory.reputation_changes, 1);
    assert_eq!(directory.user("u-1").context("u-1")?.ledger.len(), 1);
    Ok(())
}

#[tokio::test]
async fn every_kind_builds_with_a_view_named_after_it() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "event-handlers-kinds-{}",
        event_core::EventId::new()
    ));
    let harness = Harness::start(&DomainHandlerKind::ALL, |bus| {
        DomainContext::new(bus).with_audit(AuditSettings::json_lines(&dir))
    })
    .await?;
    for handler in &harness.handlers {
        assert_eq!(handler.handler.name(), handler.kind.as_str());
        assert_eq!(handler.view.name(), handler.kind.as_str());
        assert!(handler.view.snapshot().is_object());
        assert!(!handler.event_types.is_empty());
    }
    let audit = harness.handler(DomainHandlerKind::Audit);
    for standard in EventType::STANDARD {
        assert!(audit.event_types.contains(standard));
    }
    // An unusable audit directory is a clear error.
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"")?;
    let err = AuditTrailHandler::open(AuditSettings::json_lines(file.join("sub"))).unwrap_err();
    assert!(err.to_string().contains("EVENT_AUDIT_DIR"), "{err}");
    harness.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
