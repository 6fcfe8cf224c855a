//! Failures of the control-plane client, the Kafka error codes in its responses, and how both
//! become [`event_core::Error::Backend`] at the client's edge.

use std::fmt;

use event_core::{BoxError, Error};
use kafka_protocol::error::ResponseError;

/// A non-zero error code from a Kafka response. A number rather than kafka-protocol's enum, so
/// the client's callers never see that crate's types.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KafkaCode(pub(crate) i16);

impl KafkaCode {
    /// `TOPIC_ALREADY_EXISTS`: what creating an existing topic answers; not a failure here.
    pub(crate) const TOPIC_ALREADY_EXISTS: KafkaCode = KafkaCode(36);
    /// `LEADER_NOT_AVAILABLE`: used for a partition whose metadata names no leader.
    pub(crate) const LEADER_NOT_AVAILABLE: KafkaCode = KafkaCode(5);

    /// The code of a response field, `None` for 0 (no error).
    pub(crate) fn from_code(code: i16) -> Option<KafkaCode> {
        (code != 0).then_some(KafkaCode(code))
    }

    fn known(self) -> Option<ResponseError> {
        ResponseError::try_from_code(self.0).filter(|e| !matches!(e, ResponseError::Unknown(_)))
    }

    /// Kafka's name for it, as the protocol guide and the Java client spell it
    /// (`NOT_COORDINATOR`), or `UNKNOWN_CODE` for a code newer than this client.
    pub(crate) fn name(self) -> String {
        let Some(known) = self.known() else {
            return "UNKNOWN_CODE".into();
        };
        // kafka-protocol names the variants in camel case (`NotCoordinator`).
        let camel = format!("{known:?}");
        let mut name = String::with_capacity(camel.len() + 8);
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    /// Whether Kafka defines the error as retriable: the same request may succeed later.
    pub(crate) fn is_retriable(self) -> bool {
        self.known().is_some_and(|e| e.is_retriable())
    }

    /// Whether the request went to the wrong broker or came too early: partition leadership or
    /// a group coordinator is moving or loading. The client refreshes what it knows and asks
    /// again, within the call's deadline.
    pub(crate) fn is_routing(self) -> bool {
        matches!(
            self.known(),
            Some(
                ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorLoadInProgress
                    | ResponseError::NotController
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
            )
        )
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl fmt::Debug for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What kind of failure a [`ControlError`] is; decides whether it is transient and whether the
/// client retries by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The connection could not be made or broke (refused, reset, closed, DNS).
    Io,
    /// The broker did not answer within the call's deadline.
    Timeout,
    /// The broker answered with an error code.
    Kafka(KafkaCode),
    /// The answer could not be understood (not a Kafka broker, a protocol mismatch).
    Protocol,
    /// Refused for good until something changes: credentials, TLS trust, an API the broker
    /// lacks, a bad argument or setting.
    Refused,
}

/// A failure inside the control-plane client, with a message that already says where and what
/// (no secrets). Turned into [`Error::Backend`] at the client's edge.
#[derive(Debug)]
pub(crate) struct ControlError {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
    pub(crate) source: Option<BoxError>,
}

impl ControlError {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            kind: FailureKind::Io,
            message: format!("{}: {source}", message.into()),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Protocol, message)
    }

    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Refused, message)
    }

    /// An error code in a response; `context` says what was asked (`committing offsets of
    /// group g`), `detail` is the broker's own message when it sent one.
    pub(crate) fn kafka(code: KafkaCode, context: &str, detail: Option<&str>) -> Self {
        let message = match detail.filter(|d| !d.is_empty()) {
            Some(detail) => format!("{context}: {code}: {detail}"),
            None => format!("{context}: {code}"),
        };
        Self::new(FailureKind::Kafka(code), message)
    }

    /// Whether the same call can succeed later: connection problems, timeouts and the error
    /// codes Kafka defines as retriable.
    pub(crate) fn is_transient(&self) -> bool {
        match self.kind {
            FailureKind::Io | FailureKind::Timeout => true,
            FailureKind::Kafka(code) => code.is_retriable(),
            FailureKind::Protocol | FailureKind::Refused => false,
        }
    }

    /// Whether the client should refresh its routing and ask again (see
    /// [`KafkaCode::is_routing`]).
    pub(crate) fn is_routing(&self) -> bool {
        matches!(self.kind, FailureKind::Kafka(code) if code.is_routing())
    }

    /// The Kafka error code, when the broker answered with one.
    pub(crate) fn code(&self) -> Option<KafkaCode> {
        match self.kind {
            FailureKind::Kafka(code) => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        Error::Backend {
            backend: "kafka",
            transient: e.is_transient(),
            message: e.message,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_spelling() {
        assert_eq!(KafkaCode(16).name(), "NOT_COORDINATOR");
        assert_eq!(KafkaCode(6).name(), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(KafkaCode(-1).name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(KafkaCode(36).to_string(), "TOPIC_ALREADY_EXISTS (36)");
        assert_eq!(KafkaCode(31_000).to_string(), "UNKNOWN_CODE (31000)");
        assert_eq!(KafkaCode::from_code(0), None);
    }

    #[test]
    fn retriable_codes_are_transient() {
        // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT, NETWORK_EXCEPTION,
        // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
        // NOT_CONTROLLER, NOT_ENOUGH_REPLICAS.
        for code in [6, 5, 7, 13, 14, 15, 16, 41, 19] {
            let e = ControlError::kafka(KafkaCode(code), "asking", None);
            assert!(e.is_transient(), "{code}");
            assert!(Error::from(e).is_transient(), "{code}");
        }
        // TOPIC_ALREADY_EXISTS, INVALID_REPLICATION_FACTOR, SASL_AUTHENTICATION_FAILED,
        // ILLEGAL_GENERATION, an unknown code.
        for code in [36, 38, 58, 22, 31_000] {
            assert!(
                !ControlError::kafka(KafkaCode(code), "asking", None).is_transient(),
                "{code}"
            );
        }
        assert!(ControlError::new(FailureKind::Timeout, "slow").is_transient());
        assert!(!ControlError::refused("no").is_transient());
    }

    #[test]
    fn routing_codes_are_a_subset_of_the_retriable_ones() {
        for code in -1..120 {
            let code = KafkaCode(code);
            if code.is_routing() {
                assert!(code.is_retriable(), "{code}");
            }
        }
        assert!(KafkaCode(16).is_routing());
        assert!(
            !KafkaCode(3).is_routing(),
            "an unknown topic is not a routing problem"
        );
    }

    #[test]
    fn backend_errors_carry_the_message() {
        let e = Error::from(ControlError::kafka(
            KafkaCode(38),
            "creating topic t",
            Some("Replication factor: 3 larger than available brokers: 1."),
        ));
        let text = e.to_string();
        assert!(text.starts_with("kafka backend error: creating topic t: INVALID_REPLICATION_FACTOR (38): Replication factor"), "{text}");
    }
}
