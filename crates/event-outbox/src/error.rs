//! [`OutboxError`]: what can go wrong in the outbox, the relay and the inbox.

/// An error of the outbox, its relay or its inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// PostgreSQL failed the statement or could not be reached. Transient when the connection
    /// was lost, the pool timed out, or the server asked to retry (serialisation failure,
    /// deadlock, shutting down): try again later. Otherwise the message says what to fix.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// An event could not be written as JSON: it holds a value JSON cannot represent.
    #[error("encoding event {event_id} for the outbox failed: {source}; fix the event's payload")]
    Encode {
        /// The event's id.
        event_id: event_core::EventId,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The outbox's tables are missing or older than this crate: run the migrations
    /// ([`migrate`](crate::migrate)) first.
    #[error(
        "the outbox schema is at version {found}, this crate needs {needed}: run event_outbox::migrate, or `eventbus outbox migrate`"
    )]
    SchemaOutdated {
        /// The newest migration applied (0: none).
        found: i64,
        /// The newest migration this crate ships.
        needed: i64,
    },
}

impl OutboxError {
    /// Whether the same call can succeed if tried again later: a lost connection, a pool
    /// time-out, or an error class PostgreSQL documents as retryable (08 connection
    /// exception, 40 transaction rollback, 53 insufficient resources, 57P operator
    /// intervention).
    pub fn is_transient(&self) -> bool {
        match self {
            OutboxError::Database(error) => is_transient_sqlx(error),
            OutboxError::Encode { .. } | OutboxError::SchemaOutdated { .. } => false,
        }
    }
}

pub(crate) fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "40", "53", "57P"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_and_bad_input_is_not() {
        let io = OutboxError::from(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(io.is_transient());
        assert!(OutboxError::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!OutboxError::from(sqlx::Error::RowNotFound).is_transient());
        let outdated = OutboxError::SchemaOutdated {
            found: 0,
            needed: 1,
        };
        assert!(!outdated.is_transient());
        assert!(outdated.to_string().contains("migrate"));
    }
}
