//! rskafka errors as [`event_core::Error::Backend`]: whether a retry can help, whether the
//! cached partition connection must be rebuilt, and a message that says what to do.

use std::time::Duration;

use event_core::Error;
use rskafka::client::error::{Error as ClientError, ProtocolError, RequestError};

/// The backend name in every error of this crate.
pub(crate) const BACKEND: &str = "kafka";

/// What an rskafka error means for the caller and for the cached partition client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Trying the same call later can succeed.
    pub(crate) transient: bool,
    /// The partition client's connection or leader may be wrong: build a new one.
    pub(crate) rebuild: bool,
}

impl Verdict {
    const PERMANENT: Verdict = Verdict {
        transient: false,
        rebuild: false,
    };
    const RECONNECT: Verdict = Verdict {
        transient: true,
        rebuild: true,
    };
}

/// Classifies a client error.
pub(crate) fn verdict(e: &ClientError) -> Verdict {
    match e {
        ClientError::Connection(e) => connection_verdict(e),
        ClientError::Request(RequestError::IO(_) | RequestError::Poisoned(_)) => Verdict::RECONNECT,
        // The broker speaks no version we know: the same on every try.
        ClientError::Request(RequestError::NoVersionMatch { .. }) => Verdict::PERMANENT,
        // A frame we could not read: the stream may be out of step, so start a new one.
        ClientError::Request(_) | ClientError::InvalidResponse(_) => Verdict {
            transient: false,
            rebuild: true,
        },
        ClientError::ServerError { protocol_error, .. } => protocol_verdict(*protocol_error),
        // rskafka retries only retriable errors, until its backoff deadline.
        ClientError::RetryFailed(_) | ClientError::Timeout => Verdict::RECONNECT,
        _ => Verdict {
            transient: false,
            rebuild: true,
        },
    }
}

fn connection_verdict(e: &rskafka::ConnectionError) -> Verdict {
    match e {
        // A refused password stays refused.
        rskafka::ConnectionError::SaslFailed(_) => Verdict::PERMANENT,
        // An unreadable host:port or host name stays so; an I/O error (refused, reset, timed
        // out) may not, unless it is an untrusted TLS certificate.
        rskafka::ConnectionError::Transport { error, .. } => match io_error(error) {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => Verdict::PERMANENT,
            Some(_) => Verdict::RECONNECT,
            None => Verdict::PERMANENT,
        },
        _ => Verdict::RECONNECT,
    }
}

/// The first `io::Error` in an error's source chain.
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(e);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// Kafka's retriable error codes (the Java client's `RetriableException`s that a plain
/// producer or fetcher can meet), and which of them mean the leader moved.
fn protocol_verdict(e: ProtocolError) -> Verdict {
    use ProtocolError as P;
    match e {
        P::NotLeaderOrFollower
        | P::LeaderNotAvailable
        | P::FencedLeaderEpoch
        | P::UnknownLeaderEpoch
        | P::UnknownTopicOrPartition
        | P::BrokerNotAvailable
        | P::ReplicaNotAvailable
        | P::NetworkException
        | P::KafkaStorageError
        | P::RequestTimedOut
        | P::PreferredLeaderNotAvailable => Verdict::RECONNECT,
        P::NotEnoughReplicas
        | P::NotEnoughReplicasAfterAppend
        | P::CorruptMessage
        | P::OffsetNotAvailable
        | P::CoordinatorLoadInProgress
        | P::CoordinatorNotAvailable
        | P::NotCoordinator
        | P::NotController
        | P::ThrottlingQuotaExceeded
        | P::ConcurrentTransactions
        | P::UnstableOffsetCommit => Verdict {
            transient: true,
            rebuild: false,
        },
        _ => Verdict::PERMANENT,
    }
}

/// What to do about a Kafka error code whose name alone does not say it.
fn hint(e: ProtocolError) -> &'static str {
    use ProtocolError as P;
    match e {
        P::UnknownTopicOrPartition => {
            " (the topic or partition does not exist; the bus creates its topics before use)"
        }
        P::MessageTooLarge | P::RecordListTooLarge => {
            " (the batch is over the topic's max.message.bytes or the broker's message.max.bytes: send smaller batches, or raise the limit)"
        }
        P::TopicAuthorizationFailed | P::ClusterAuthorizationFailed => {
            " (the broker's ACLs refuse this client: grant the principal access to the topic)"
        }
        P::NotEnoughReplicas | P::NotEnoughReplicasAfterAppend => {
            " (fewer in-sync replicas than min.insync.replicas: wait for the brokers to catch up)"
        }
        P::InvalidReplicationFactor => {
            " (more replicas than brokers: lower KAFKA_REPLICATION_FACTOR)"
        }
        _ => "",
    }
}

/// A failed call as a backend error, and whether to rebuild the partition client.
pub(crate) fn backend_error(context: &str, e: ClientError) -> (Error, bool) {
    let verdict = verdict(&e);
    let message = match &e {
        ClientError::ServerError {
            protocol_error,
            error_message,
            ..
        } => format!(
            "{context}: Kafka answered {protocol_error:?}{}{}",
            error_message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            hint(*protocol_error)
        ),
        other => format!("{context}: {other}"),
    };
    let error = Error::Backend {
        backend: BACKEND,
        message,
        transient: verdict.transient,
        source: Some(Box::new(e)),
    };
    (error, verdict.rebuild)
}

/// A call that did not finish within its time limit.
pub(crate) fn timeout_error(context: &str, after: Duration, servers: &str) -> Error {
    Error::backend(
        BACKEND,
        format!(
            "{context}: no answer from Kafka ({servers}) within {after:?}; the connection is rebuilt on the next call"
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(e: ProtocolError) -> ClientError {
        ClientError::ServerError {
            protocol_error: e,
            error_message: None,
            request: rskafka::client::error::RequestContext::Partition("t".into(), 0),
            response: None,
            is_virtual: false,
        }
    }

    #[test]
    fn leader_changes_are_transient_and_rebuild() {
        for e in [
            ProtocolError::NotLeaderOrFollower,
            ProtocolError::LeaderNotAvailable,
            ProtocolError::FencedLeaderEpoch,
        ] {
            assert_eq!(verdict(&server(e)), Verdict::RECONNECT, "{e:?}");
        }
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            verdict(&ClientError::Request(RequestError::IO(io))),
            Verdict::RECONNECT
        );
        assert_eq!(verdict(&ClientError::Timeout), Verdict::RECONNECT);
    }

    #[test]
    fn refusals_are_permanent() {
        for e in [
            ProtocolError::MessageTooLarge,
            ProtocolError::TopicAuthorizationFailed,
            ProtocolError::InvalidRecord,
            ProtocolError::UnsupportedVersion,
        ] {
            assert!(!verdict(&server(e)).transient, "{e:?}");
        }
        assert!(verdict(&server(ProtocolError::NotEnoughReplicas)).transient);
    }

    #[test]
    fn messages_name_the_call_the_code_and_what_to_do() {
        let (e, rebuild) = backend_error("produce to t/0", server(ProtocolError::MessageTooLarge));
        assert!(!rebuild && !e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with("kafka backend error: produce to t/0: Kafka answered MessageTooLarge")
                && text.contains("smaller batches"),
            "{text}"
        );
        let e = timeout_error("fetch from t/0", Duration::from_secs(10), "k1:9092");
        assert!(e.is_transient() && e.to_string().contains("k1:9092"), "{e}");
    }
}
