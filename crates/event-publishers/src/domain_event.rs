//! [`DomainEvent`]: a typed payload tied to its event type, partition key and schema version,
//! with the conversions to and from the [`Event`] envelope, and [`Upcaster`]s that lift older
//! schema versions.

use std::fmt::Debug;

use event_core::{Event, EventBuilder, EventType, JsonObject};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, FieldError};

/// A typed event payload: the compiler checks its fields, the trait knows its event type,
/// its partition key and its schema version.
///
/// The 20 standard types ([`OpportunityCreated`](crate::OpportunityCreated), ...) and
/// [`AgentTaskStarted`](crate::AgentTaskStarted) implement it; services implement it for
/// their own custom types the same way.
///
/// Decoding runs the [upcasters](DomainEvent::UPCASTERS), so a handler always sees the
/// current shape, whatever version the producer wrote:
///
/// ```
/// use event_core::{Event, EventType};
/// use event_publishers::{DomainEvent, OpportunityCreated};
///
/// let payload = OpportunityCreated {
///     opportunity_id: "opp-123".into(),
///     title: "AI-Powered Customer Service".into(),
///     description: "Automated customer support using NLP".into(),
///     ai_solution_type: "nlp".into(),
///     ..Default::default()
/// };
/// let event: Event = payload.to_event("opportunity_service")?.build()?;
/// assert_eq!(event.event_type, EventType::OPPORTUNITY_CREATED);
/// assert_eq!(event.partition_key.as_deref(), Some("opp-123"));
///
/// let back = OpportunityCreated::from_event(&event)?;
/// assert_eq!(back.title, "AI-Powered Customer Service");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DomainEvent:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + Send + Sync + 'static
{
    /// The payload's current schema version, written to the envelope's `schema_version`.
    /// Raise it when the shape changes incompatibly, and add an [`Upcaster`] from the previous
    /// version.
    const SCHEMA_VERSION: u32 = 1;

    /// The upcasters from older versions: one per version below
    /// [`SCHEMA_VERSION`](DomainEvent::SCHEMA_VERSION) that producers may still have written,
    /// each lifting a payload from `from_version` to `from_version + 1`.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// The name of the payload field used as the partition key (for the catalog), or `None`
    /// when events of this type have no key and are ordered by nothing.
    const PARTITION_KEY_FIELD: Option<&'static str>;

    /// The event type this payload is published as.
    fn event_type() -> EventType;

    /// The partition key: events with the same key reach each handler in publish order.
    fn partition_key(&self) -> Option<String>;

    /// Checks the fields before publishing: required strings not empty, numbers in range.
    ///
    /// # Errors
    /// The first field at fault.
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// Computes derived fields (`change_count`, `change_amount`, `signal_count`) as the
    /// original system did; the publishers call it before validating.
    fn derive_fields(&mut self) {}

    /// The payload as a JSON object.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it does not serialize to an object (a custom type that is not
    /// a struct).
    fn to_payload(&self) -> Result<JsonObject, Error> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(
                FieldError::new("payload", "must serialize to a JSON object")
                    .into_error(Self::event_type()),
            ),
            Err(e) => Err(
                FieldError::new("payload", format!("does not serialize: {e}"))
                    .into_error(Self::event_type()),
            ),
        }
    }

    /// Validates the payload and starts its envelope: type, payload, partition key and schema
    /// version are set; add correlation id, metadata and so on, then `build()`. Does not
    /// compute derived fields (call [`derive_fields`](DomainEvent::derive_fields) first, or
    /// use a publisher, which does).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault.
    fn to_event(&self, source: impl Into<String>) -> Result<EventBuilder, Error> {
        self.validate()
            .map_err(|e| e.into_error(Self::event_type()))?;
        let mut builder = Event::builder(Self::event_type(), source)
            .payload(self.to_payload()?)
            .schema_version(Self::SCHEMA_VERSION);
        if let Some(key) = self.partition_key() {
            builder = builder.partition_key(key);
        }
        Ok(builder)
    }

    /// Reads the payload of an event of this type, upcasting it from older schema versions.
    ///
    /// # Errors
    /// [`Error::WrongEventType`], [`Error::SchemaTooNew`], [`Error::MissingUpcaster`],
    /// [`Error::Upcast`], or [`Error::Decode`] naming the field at fault.
    fn from_event(event: &Event) -> Result<Self, Error> {
        let expected = Self::event_type();
        if event.event_type != expected {
            return Err(Error::WrongEventType {
                expected,
                found: event.event_type.clone(),
                id: event.id,
            });
        }
        let payload = upcast::<Self>(event)?;
        decode::<Self>(payload).map_err(|e| Error::Decode {
            event_type: expected,
            id: event.id,
            field: e.field,
            reason: e.reason,
        })
    }
}

/// Lifts a payload from one schema version to the next: registered in
/// [`DomainEvent::UPCASTERS`].
///
/// ```
/// use event_core::JsonObject;
/// use event_publishers::Upcaster;
///
/// // Version 2 renamed `name` to `title`.
/// fn rename_name_to_title(mut payload: JsonObject) -> Result<JsonObject, String> {
///     let name = payload.remove("name").ok_or("version 1 payload without `name`")?;
///     payload.insert("title".into(), name);
///     Ok(payload)
/// }
/// const UPCASTERS: &[Upcaster] = &[Upcaster::new(1, rename_name_to_title)];
/// # assert_eq!(UPCASTERS[0].from_version(), 1);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    from_version: u32,
    upgrade: fn(JsonObject) -> Result<JsonObject, String>,
}

impl Upcaster {
    /// An upcaster that turns a payload of `from_version` into one of `from_version + 1`;
    /// `upgrade` returns a message when the old payload cannot be lifted.
    pub const fn new(
        from_version: u32,
        upgrade: fn(JsonObject) -> Result<JsonObject, String>,
    ) -> Self {
        Self {
            from_version,
            upgrade,
        }
    }

    /// The version this upcaster reads.
    pub const fn from_version(&self) -> u32 {
        self.from_version
    }

    /// Lifts one payload by one version.
    ///
    /// # Errors
    /// The upgrade function's message.
    pub fn upgrade(&self, payload: JsonObject) -> Result<JsonObject, String> {
        (self.upgrade)(payload)
    }
}

/// Runs the upcasters of `P` from the event's schema version up to `P::SCHEMA_VERSION`.
fn upcast<P: DomainEvent>(event: &Event) -> Result<JsonObject, Error> {
    let event_type = P::event_type();
    let mut version = event.schema_version;
    if version > P::SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            event_type,
            id: event.id,
            version,
            current: P::SCHEMA_VERSION,
        });
    }
    let mut payload = event.payload.clone();
    while version < P::SCHEMA_VERSION {
        let upcaster = P::UPCASTERS
            .iter()
            .find(|u| u.from_version == version)
            .ok_or_else(|| Error::MissingUpcaster {
                event_type: event_type.clone(),
                from_version: version,
            })?;
        payload = upcaster.upgrade(payload).map_err(|reason| Error::Upcast {
            event_type: event_type.clone(),
            id: event.id,
            from_version: version,
            reason,
        })?;
        version += 1;
    }
    Ok(payload)
}

/// Deserializes a payload, naming the field at fault when it does not fit.
pub(crate) fn decode<P: DomainEvent>(payload: JsonObject) -> Result<P, FieldError> {
    match P::deserialize(Value::Object(payload.clone())) {
        Ok(value) => Ok(value),
        Err(e) => Err(blame_field::<P>(&payload, &e.to_string())),
    }
}

/// Finds the field a serde error is about: a missing field is named by serde; for a value of
/// the wrong type, the payload is compared with the type's JSON Schema.
fn blame_field<P: JsonSchema>(payload: &JsonObject, message: &str) -> FieldError {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return FieldError::new(field, "is required");
    }
    let schema = schemars::schema_for!(P);
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in payload {
        let Some(property) = properties.and_then(|p| p.get(name)) else {
            continue;
        };
        if !fits_declared_type(value, property) {
            return FieldError::new(name.clone(), format!("has the wrong type: {message}"));
        }
    }
    FieldError::new("payload", message.to_owned())
}

/// Whether a value matches the `type` of a property's schema (true when no type is declared).
fn fits_declared_type(value: &Value, property: &Value) -> bool {
    let kinds: Vec<&str> = match property.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    kinds.iter().any(|kind| match *kind {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_u64() || value.is_i64(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    })
}
