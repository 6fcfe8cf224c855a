//! Schema evolution: an event published as version 1 of a payload is read back, after the
//! payload type changed, as version 2 through the upcaster registered for the type.

use std::sync::Arc;

use event_core::{Config, Event, EventBus, EventType, JsonObject, MemoryBus, ReplayQuery};
use event_publishers::{DomainEvent, Error, EventPublisher, FieldError, Upcaster};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn ticket_opened() -> EventType {
    EventType::new("support.ticket_opened").unwrap()
}

/// The payload as the first release of the support service wrote it.
mod v1 {
    use super::*;

    /// A ticket was opened: version 1, a free-text `customer` and a numeric `priority`.
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    pub(crate) struct TicketOpened {
        pub ticket_id: String,
        pub customer: String,
        pub priority: u8,
    }

    impl DomainEvent for TicketOpened {
        const PARTITION_KEY_FIELD: Option<&'static str> = Some("ticket_id");

        fn event_type() -> EventType {
            ticket_opened()
        }

        fn partition_key(&self) -> Option<String> {
            Some(self.ticket_id.clone())
        }
    }
}

/// The payload after the change: `customer` became `customer_id`, `priority` a label, and a
/// new field `channel` with no value in old events. Version 3 adds `tags`.
mod current {
    use super::*;

    /// A ticket was opened: version 3.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub(crate) struct TicketOpened {
        pub ticket_id: String,
        pub customer_id: String,
        pub priority: String,
        pub channel: Option<String>,
        pub tags: Vec<String>,
    }

    fn v1_to_v2(mut payload: JsonObject) -> Result<JsonObject, String> {
        let customer = payload
            .remove("customer")
            .ok_or("a version 1 ticket without `customer`")?;
        payload.insert("customer_id".into(), customer);
        let priority = match payload.get("priority").and_then(|p| p.as_u64()) {
            Some(0..=1) => "high",
            Some(2..=3) => "normal",
            Some(_) => "low",
            None => return Err("a version 1 ticket without a numeric `priority`".into()),
        };
        payload.insert("priority".into(), json!(priority));
        payload.insert("channel".into(), json!(null));
        Ok(payload)
    }

    fn v2_to_v3(mut payload: JsonObject) -> Result<JsonObject, String> {
        payload.insert("tags".into(), json!([]));
        Ok(payload)
    }

    impl DomainEvent for TicketOpened {
        const SCHEMA_VERSION: u32 = 3;
        const UPCASTERS: &'static [Upcaster] =
            &[Upcaster::new(2, v2_to_v3), Upcaster::new(1, v1_to_v2)];
        const PARTITION_KEY_FIELD: Option<&'static str> = Some("ticket_id");

        fn event_type() -> EventType {
            ticket_opened()
        }

        fn partition_key(&self) -> Option<String> {
            Some(self.ticket_id.clone())
        }

        fn validate(&self) -> Result<(), FieldError> {
            FieldError::check_non_empty("customer_id", &self.customer_id)
        }
    }
}

async fn read_all(bus: &MemoryBus) -> Vec<Event> {
    let from = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    bus.replay(ReplayQuery::new([ticket_opened()], from))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_published_as_v1_is_read_as_the_current_version() {
    let bus = Arc::new(MemoryBus::new(Config::default()).unwrap());
    let publisher = EventPublisher::new(bus.clone(), "support_service");
    publisher
        .publish(v1::TicketOpened {
            ticket_id: "t-1".into(),
            customer: "cust-9".into(),
            priority: 1,
        })
        .await
        .unwrap();
    publisher
        .publish(current::TicketOpened {
            ticket_id: "t-2".into(),
            customer_id: "cust-3".into(),
            priority: "low".into(),
            channel: Some("email".into()),
            tags: vec!["billing".into()],
        })
        .await
        .unwrap();

    let events = read_all(&bus).await;
    assert_eq!(
        events[0].schema_version, 1,
        "the old producer wrote version 1"
    );
    assert_eq!(events[1].schema_version, 3);
    let old = current::TicketOpened::from_event(&events[0]).unwrap();
    assert_eq!(
        old,
        current::TicketOpened {
            ticket_id: "t-1".into(),
            customer_id: "cust-9".into(),
            priority: "high".into(),
            channel: None,
            tags: vec![],
        }
    );
    let new = current::TicketOpened::from_event(&events[1]).unwrap();
    assert_eq!(new.tags, ["billing"]);

    // An old reader cannot read the new version: a clear error, not a garbled payload.
    let err = v1::TicketOpened::from_event(&events[1]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SchemaTooNew {
                version: 3,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_or_missing_upcaster_is_a_named_error() {
    let bus = Arc::new(MemoryBus::new(Config::default()).unwrap());
    let publisher = EventPublisher::new(bus.clone(), "support_service");
    // A version 1 payload the upcaster cannot lift (no numeric priority).
    publisher
        .publish_json(
            ticket_opened(),
            json!({"ticket_id": "t-3", "customer": "c", "priority": "urgent"})
                .as_object()
                .cloned()
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    let mut events = read_all(&bus).await;
    let err = current::TicketOpened::from_event(&events[0]).unwrap_err();
    assert!(
        matches!(&err, Error::Upcast { from_version: 1, reason, .. } if reason.contains("priority")),
        "{err}"
    );

    events[0].schema_version = 0;
    let err = current::TicketOpened::from_event(&events[0]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingUpcaster {
                from_version: 0,
                ..
            }
        ),
        "{err}"
    );
}
