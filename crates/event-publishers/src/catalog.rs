//! The event catalog: every typed event this crate knows, with its JSON Schema, partition key,
//! schema version and an example. `cargo xtask docs` renders it into `docs/events.md` and
//! `docs/asyncapi.json`; the publishers use it to validate untyped JSON of known types.

use std::sync::LazyLock;

use event_core::{EventType, JsonObject};
use serde_json::{Value, json};
use time::macros::datetime;

use crate::domain_event::decode;
use crate::{
    AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted, DomainEvent,
    Error, OpportunityCreated, OpportunityDeleted, OpportunityUpdated, OpportunityValidated,
    SignalClustered, SignalDetected, SignalProcessed, SystemError, SystemHealthCheck,
    SystemMaintenance, UserProfileUpdated, UserRegistered, UserReputationChanged,
    ValidationApproved, ValidationRejected, ValidationSubmitted,
};

/// One typed event of the catalog.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CatalogEntry {
    /// The event type.
    pub event_type: EventType,
    /// The Rust payload type's name, such as `OpportunityCreated`.
    pub type_name: &'static str,
    /// The publishing service of the original system, such as `opportunity_service`.
    pub source: &'static str,
    /// The domain publisher type, such as `OpportunityEventPublisher`.
    pub publisher: &'static str,
    /// The domain publisher method that publishes it, such as `opportunity_created`.
    pub method: &'static str,
    /// The current schema version.
    pub schema_version: u32,
    /// The payload field used as partition key, if any.
    pub partition_key: Option<&'static str>,
    /// An example payload, as published (derived fields computed).
    pub example: JsonObject,
    schema: fn() -> Value,
    check: fn(&EventType, &JsonObject) -> Result<(), Error>,
}

impl CatalogEntry {
    fn of<P: DomainEvent>(source: &'static str, method: &'static str, mut example: P) -> Self {
        example.derive_fields();
        let type_name = std::any::type_name::<P>()
            .rsplit("::")
            .next()
            .unwrap_or_default();
        Self {
            event_type: P::event_type(),
            type_name,
            source,
            publisher: publisher_of(source),
            method,
            schema_version: P::SCHEMA_VERSION,
            partition_key: P::PARTITION_KEY_FIELD,
            // A hand-written example that fails to serialize is a bug the catalog tests catch.
            example: example.to_payload().unwrap_or_default(),
            schema: schema_of::<P>,
            check: check_json::<P>,
        }
    }

    /// The payload's JSON Schema (draft 2020-12), with the doc comments as descriptions.
    pub fn schema(&self) -> Value {
        (self.schema)()
    }

    /// The payload type's description (its doc comment).
    pub fn description(&self) -> String {
        self.schema()
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// Checks an untyped payload of this type: it decodes and passes validation.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault.
    pub fn check(&self, payload: &JsonObject) -> Result<(), Error> {
        (self.check)(&self.event_type, payload)
    }
}

fn schema_of<P: DomainEvent>() -> Value {
    serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Null)
}

fn check_json<P: DomainEvent>(event_type: &EventType, payload: &JsonObject) -> Result<(), Error> {
    let typed: P = decode(payload.clone()).map_err(|e| e.into_error(event_type.clone()))?;
    typed
        .validate()
        .map_err(|e| e.into_error(event_type.clone()))
}

static CATALOG: LazyLock<Vec<CatalogEntry>> = LazyLock::new(build);

/// Every typed event: the 20 standard types in the original's order, then
/// `agent.task_started`.
pub fn catalog() -> &'static [CatalogEntry] {
    &CATALOG
}

/// The catalog entry of an event type, if it is a typed one.
pub fn catalog_entry(event_type: &EventType) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| &e.event_type == event_type)
}

/// The JSON Schema of the envelope (wire format v1) that carries every payload; `payload`
/// is any object here, each catalog entry's [`schema`](CatalogEntry::schema) describes it.
pub fn envelope_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Event",
        "description": "The event envelope, wire format v1: the same JSON object on every backend.",
        "type": "object",
        "required": ["id", "event_type", "payload", "timestamp", "source"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "Unique id; a UUIDv7 made at publish unless given."},
            "event_type": {"type": "string", "pattern": "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$", "description": "The dotted event type, such as `opportunity.created`."},
            "payload": {"type": "object", "description": "The event's data: the payload type of `event_type`."},
            "timestamp": {"type": "string", "format": "date-time", "description": "When the event happened: UTC, RFC 3339, six fractional digits."},
            "source": {"type": "string", "minLength": 1, "description": "The service or component that published it."},
            "correlation_id": {"type": ["string", "null"], "description": "The request or unit of work this event belongs to."},
            "causation_id": {"type": ["string", "null"], "description": "The id of the event that caused this one."},
            "partition_key": {"type": ["string", "null"], "description": "Events with the same key reach each handler in publish order; absent: the id."},
            "metadata": {"type": ["object", "null"], "description": "Free-form context; the publishers add `publisher_source` and `published_at`."},
            "schema_version": {"type": "integer", "minimum": 1, "default": 1, "description": "The payload's schema version; older versions are upcast when read."},
            "aggregate_id": {"type": "string", "description": "Event sourcing: the aggregate this event belongs to."},
            "aggregate_type": {"type": "string", "description": "Event sourcing: the kind of aggregate."},
            "aggregate_version": {"type": "integer", "minimum": 1, "description": "Event sourcing: this event's position in its aggregate's history."},
            "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", "description": "W3C Trace Context of the span that published it (the CloudEvents distributed-tracing extension); handling continues the trace."},
            "tracestate": {"type": "string", "description": "W3C Trace Context `tracestate` that goes with `traceparent`."}
        },
        "additionalProperties": true
    })
}

fn changes(pairs: &[(&str, Value)]) -> JsonObject {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn publisher_of(source: &str) -> &'static str {
    match source {
        OPPORTUNITY => "OpportunityEventPublisher",
        USER => "UserEventPublisher",
        AGENT => "AgentEventPublisher",
        SIGNAL => "MarketSignalEventPublisher",
        _ => "SystemEventPublisher",
    }
}

const OPPORTUNITY: &str = "opportunity_service";
const USER: &str = "user_service";
const AGENT: &str = "agent_orchestrator";
const SIGNAL: &str = "monitoring_agent";
const SYSTEM: &str = "system";

fn build() -> Vec<CatalogEntry> {
    vec![
        CatalogEntry::of(
            OPPORTUNITY,
            "opportunity_created",
            OpportunityCreated {
                opportunity_id: "opp-123".into(),
                title: "AI-Powered Customer Service".into(),
                description: "Automated customer support using NLP".into(),
                ai_solution_type: "nlp".into(),
                market_size_estimate: Some(5_000_000.0),
                created_by: Some("user-456".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "opportunity_updated",
            OpportunityUpdated {
                opportunity_id: "opp-123".into(),
                changes: changes(&[("title", json!("AI Customer Service Suite"))]),
                updated_by: Some("user-456".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "opportunity_deleted",
            OpportunityDeleted {
                opportunity_id: "opp-123".into(),
                deleted_by: "admin-1".into(),
                reason: Some("duplicate of opp-77".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "opportunity_validated",
            OpportunityValidated {
                opportunity_id: "opp-123".into(),
                validation_id: "val-9".into(),
                validator_id: "user-789".into(),
                validation_score: 8.5,
                validation_type: "market_demand".into(),
                comments: Some("Strong demand in retail".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            USER,
            "user_registered",
            UserRegistered {
                user_id: "user-456".into(),
                email: "ada@example.com".into(),
                username: Some("ada".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            USER,
            "user_profile_updated",
            UserProfileUpdated {
                user_id: "user-456".into(),
                changes: changes(&[
                    ("bio", json!("Builds NLP products")),
                    ("location", json!("Berlin")),
                ]),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            USER,
            "user_reputation_changed",
            UserReputationChanged {
                user_id: "user-456".into(),
                old_score: 10.0,
                new_score: 15.0,
                reason: "validation accepted".into(),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "validation_submitted",
            ValidationSubmitted {
                validation_id: "val-9".into(),
                opportunity_id: "opp-123".into(),
                validator_id: "user-789".into(),
                validation_type: "market_demand".into(),
                validation_score: Some(8.5),
                comments: None,
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "validation_approved",
            ValidationApproved {
                validation_id: "val-9".into(),
                opportunity_id: "opp-123".into(),
                approved_by: Some("moderator-2".into()),
                validation_score: Some(8.5),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            OPPORTUNITY,
            "validation_rejected",
            ValidationRejected {
                validation_id: "val-10".into(),
                opportunity_id: "opp-123".into(),
                rejected_by: Some("moderator-2".into()),
                reason: "no evidence given".into(),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            AGENT,
            "agent_started",
            AgentStarted {
                agent_id: "agent-1".into(),
                agent_type: "monitoring".into(),
                config: Some(changes(&[("sources", json!(["reddit", "hackernews"]))])),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            AGENT,
            "agent_stopped",
            AgentStopped {
                agent_id: "agent-1".into(),
                agent_type: "monitoring".into(),
                reason: "shutdown requested".into(),
                uptime_seconds: Some(3600.0),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            AGENT,
            "agent_error",
            AgentError {
                agent_id: "agent-1".into(),
                agent_type: "monitoring".into(),
                error_message: "rate limited by the source".into(),
                error_type: Some("RateLimitError".into()),
                stack_trace: None,
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            AGENT,
            "agent_task_completed",
            AgentTaskCompleted {
                agent_id: "agent-1".into(),
                task_id: "task-42".into(),
                task_type: "scan_subreddit".into(),
                duration_seconds: 12.5,
                result: Some(json!({"signals_found": 3})),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SIGNAL,
            "signal_detected",
            SignalDetected {
                signal_id: "signal-1".into(),
                source: "reddit".into(),
                signal_type: "pain_point".into(),
                content: "I wish support tickets answered themselves".into(),
                confidence: 0.82,
                engagement_metrics: Some(changes(&[
                    ("upvotes", json!(120)),
                    ("comments", json!(34)),
                ])),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SIGNAL,
            "signal_processed",
            SignalProcessed {
                signal_id: "signal-1".into(),
                processing_result: json!({"category": "customer_service"}),
                quality_score: Some(0.9),
                extracted_keywords: Some(vec!["support".into(), "automation".into()]),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SIGNAL,
            "signal_clustered",
            SignalClustered {
                cluster_id: "cluster-7".into(),
                signal_ids: vec!["signal-1".into(), "signal-2".into()],
                cluster_theme: "support automation".into(),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SYSTEM,
            "health_check",
            SystemHealthCheck {
                component: "api".into(),
                status: "healthy".into(),
                response_time_ms: Some(12.0),
                details: None,
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SYSTEM,
            "system_error",
            SystemError {
                component: "api".into(),
                error_message: "database connection refused".into(),
                severity: "high".into(),
                error_code: Some("OperationalError".into()),
                ..Default::default()
            },
        ),
        CatalogEntry::of(
            SYSTEM,
            "maintenance_scheduled",
            SystemMaintenance {
                maintenance_type: "database_upgrade".into(),
                start_time: datetime!(2026-12-01 02:00 UTC),
                estimated_duration: "2 hours".into(),
                affected_components: vec!["api".into(), "worker".into()],
                extra: JsonObject::new(),
            },
        ),
        CatalogEntry::of(
            AGENT,
            "agent_task_started",
            AgentTaskStarted {
                agent_id: "agent-1".into(),
                task_id: "task-42".into(),
                task_type: "scan_subreddit".into(),
                ..Default::default()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_type_has_one_entry_and_valid_examples() {
        let entries = catalog();
        assert_eq!(entries.len(), 21);
        for standard in EventType::STANDARD {
            let count = entries.iter().filter(|e| &e.event_type == standard).count();
            assert_eq!(count, 1, "{standard}");
        }
        for entry in entries {
            assert!(!entry.example.is_empty(), "{}", entry.event_type);
            entry.check(&entry.example).unwrap();
            assert!(!entry.description().is_empty(), "{}", entry.type_name);
            if let Some(key) = entry.partition_key {
                assert!(entry.example[key].is_string(), "{}", entry.type_name);
            }
        }
    }

    #[test]
    fn the_envelope_schema_names_every_field_of_the_envelope() {
        let event = event_core::Event::builder(EventType::AGENT_ERROR, "svc")
            .aggregate("agent", "agent-1")
            .build()
            .unwrap();
        let mut wire = serde_json::to_value(&event).unwrap();
        wire["aggregate_version"] = json!(1);
        let schema = envelope_schema();
        let properties = schema["properties"].as_object().unwrap();
        for field in wire.as_object().unwrap().keys() {
            assert!(
                properties.contains_key(field),
                "{field} is not in the schema"
            );
        }
    }

    #[test]
    fn untyped_payloads_are_checked_naming_the_field() {
        let entry = catalog_entry(&EventType::SIGNAL_DETECTED).unwrap();
        let mut payload = entry.example.clone();
        payload.remove("signal_type");
        let err = entry.check(&payload).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "signal_type"),
            "{err}"
        );

        let mut payload = entry.example.clone();
        payload.insert("confidence".into(), json!("high"));
        let err = entry.check(&payload).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "confidence"),
            "{err}"
        );

        let mut payload = entry.example.clone();
        payload.insert("confidence".into(), json!(1.5));
        let err = entry.check(&payload).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, reason, .. }
            if field == "confidence" && reason.contains("between 0 and 1")),
            "{err}"
        );
    }
}
