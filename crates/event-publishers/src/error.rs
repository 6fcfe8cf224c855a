//! The crate's error type.

use event_core::{EventId, EventType, HandlerError};

/// Everything that can go wrong when building, publishing or decoding a typed event.
///
/// [`Error::is_transient`] tells whether the same call can succeed later. A handler can use `?`
/// on these errors: they convert into an [`event_core::HandlerError`], transient only when the
/// bus failed transiently (a payload that does not decode will not decode on a retry either).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload failed validation at publish; nothing was published.
    #[error(
        "invalid {event_type} payload: field `{field}` {reason}; nothing was published: fix the field and publish again"
    )]
    Invalid {
        /// The event's type.
        event_type: EventType,
        /// The field at fault (`payload` when no single field can be named).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An event of another type was given to a typed decoder.
    #[error(
        "event {id} is a {found} event, not {expected}: decode it with the payload type of {found}"
    )]
    WrongEventType {
        /// The type the decoder reads.
        expected: EventType,
        /// The event's type.
        found: EventType,
        /// The event's id.
        id: EventId,
    },

    /// An event's payload does not decode into its type, even after upcasting.
    #[error("cannot decode the payload of {event_type} event {id}: field `{field}` {reason}")]
    Decode {
        /// The event's type.
        event_type: EventType,
        /// The event's id.
        id: EventId,
        /// The field at fault (`payload` when no single field can be named).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An event was written with a schema version newer than this build knows.
    #[error(
        "{event_type} event {id} has schema version {version}, newer than this build's {current}: deploy a version of this service that knows it, then redrive the event"
    )]
    SchemaTooNew {
        /// The event's type.
        event_type: EventType,
        /// The event's id.
        id: EventId,
        /// The event's schema version.
        version: u32,
        /// The newest version this build reads.
        current: u32,
    },

    /// No upcaster is registered to lift an older schema version to the next one.
    #[error(
        "no upcaster for {event_type} from schema version {from_version}: register one in the payload type's `UPCASTERS`"
    )]
    MissingUpcaster {
        /// The event's type.
        event_type: EventType,
        /// The version that has no upcaster.
        from_version: u32,
    },

    /// An upcaster refused an older payload.
    #[error(
        "upcasting {event_type} event {id} from schema version {from_version} failed: {reason}"
    )]
    Upcast {
        /// The event's type.
        event_type: EventType,
        /// The event's id.
        id: EventId,
        /// The version the failing upcaster reads.
        from_version: u32,
        /// The upcaster's message.
        reason: String,
    },

    /// The bus refused or failed the publish.
    #[error(transparent)]
    Bus(#[from] event_core::Error),
}

impl Error {
    /// Whether the same call can succeed if tried again later (only bus failures can).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Bus(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        if error.is_transient() {
            HandlerError::transient(error)
        } else {
            HandlerError::permanent(error)
        }
    }
}

/// A field that fails validation: what [`DomainEvent::validate`](crate::DomainEvent::validate)
/// returns; the publisher adds the event type and makes it an [`Error::Invalid`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as it appears in the payload JSON.
    pub field: String,
    /// What is wrong with it (`must not be empty`, `must be between 0 and 1, found 1.5`).
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Fails when a required string is empty or only whitespace.
    ///
    /// # Errors
    /// `must not be empty`.
    pub fn check_non_empty(field: &str, value: &str) -> Result<(), FieldError> {
        if value.trim().is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        Ok(())
    }

    /// Fails when a number is not finite or outside `min..=max`.
    ///
    /// # Errors
    /// `must be between {min} and {max}, found {value}`.
    pub fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), FieldError> {
        if !(min..=max).contains(&value) {
            return Err(FieldError::new(
                field,
                format!("must be between {min} and {max}, found {value}"),
            ));
        }
        Ok(())
    }

    /// Fails when a number is negative or not finite (durations, sizes).
    ///
    /// # Errors
    /// `must be a finite number >= 0, found {value}`.
    pub fn check_non_negative(field: &str, value: f64) -> Result<(), FieldError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(FieldError::new(
                field,
                format!("must be a finite number >= 0, found {value}"),
            ));
        }
        Ok(())
    }

    /// Fails when a number is NaN or infinite (JSON cannot carry it).
    ///
    /// # Errors
    /// `must be a finite number, found {value}`.
    pub fn check_finite(field: &str, value: f64) -> Result<(), FieldError> {
        if !value.is_finite() {
            return Err(FieldError::new(
                field,
                format!("must be a finite number, found {value}"),
            ));
        }
        Ok(())
    }

    /// Adds the event type: the error the publisher returns.
    pub(crate) fn into_error(self, event_type: EventType) -> Error {
        Error::Invalid {
            event_type,
            field: self.field,
            reason: self.reason,
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_bus_errors_become_transient_handler_errors() {
        let bus = Error::Bus(event_core::Error::backend(
            "redis",
            "connection reset",
            true,
        ));
        assert!(HandlerError::from(bus).is_transient());
        let invalid = FieldError::new("title", "must not be empty")
            .into_error(EventType::OPPORTUNITY_CREATED);
        assert!(!invalid.is_transient());
        let message = invalid.to_string();
        assert!(message.contains("`title`") && message.contains("opportunity.created"));
        assert!(!HandlerError::from(invalid).is_transient());
    }
}
