//! Dead letters: events a handler gave up on, with where and why.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Event;

/// Why an event was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler returned a permanent error.
    PermanentFailure,
    /// Every attempt allowed by `EVENT_MAX_RETRIES` failed.
    RetriesExhausted,
    /// The stored record was not a valid envelope (written by a foreign producer).
    InvalidEnvelope,
    /// The stored event's payload is encrypted with a key this process does not have, or
    /// does not authenticate; the letter holds the sealed event, which a redrive publishes
    /// again once the key is in `EVENT_ENCRYPTION_KEYS`.
    Undecryptable,
}

/// An event a handler gave up on, with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The dead letter's id in its queue (backend-specific; use it to redrive or purge one).
    pub id: String,
    /// The handler that failed.
    pub handler: String,
    /// The handler's consumer group.
    pub group: String,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The event; `None` when the record was not a valid envelope.
    pub event: Option<Event>,
    /// The record as stored, when it was not a valid envelope (lossy UTF-8).
    pub raw: Option<String>,
    /// Attempts made, counting redeliveries after crashes.
    pub attempts: u32,
    /// The first failure's message.
    pub first_error: String,
    /// The last failure's message.
    pub last_error: String,
    /// When the first attempt failed.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: OffsetDateTime,
    /// When the last attempt failed.
    #[serde(with = "time::serde::rfc3339")]
    pub last_failed_at: OffsetDateTime,
    /// When it entered the dead-letter queue.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
}

/// The failure history of one event, kept while it is retried; turned into a [`DeadLetter`]
/// when the handler gives up. Used by backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    /// Attempts that failed.
    pub attempts: u32,
    /// The first failure's message.
    pub first_error: String,
    /// The last failure's message.
    pub last_error: String,
    /// When the first attempt failed.
    pub first_failed_at: OffsetDateTime,
    /// When the last attempt failed.
    pub last_failed_at: OffsetDateTime,
}

impl FailureRecord {
    /// The record of a first failure.
    pub fn first(error: String, attempts: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            attempts,
            first_error: error.clone(),
            last_error: error,
            first_failed_at: now,
            last_failed_at: now,
        }
    }

    /// Adds one more failure.
    pub fn record(&mut self, error: String) {
        self.attempts += 1;
        self.last_error = error;
        self.last_failed_at = OffsetDateTime::now_utc();
    }
}

/// Which dead letters an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterSelection {
    /// Every dead letter of the handler.
    All,
    /// Only these ids.
    Ids(Vec<String>),
}

impl DeadLetterSelection {
    /// Whether the dead letter with `id` is selected.
    pub fn includes(&self, id: &str) -> bool {
        match self {
            DeadLetterSelection::All => true,
            DeadLetterSelection::Ids(ids) => ids.iter().any(|i| i == id),
        }
    }
}

/// What a redrive did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveReport {
    /// Dead letters handed back to the handler (and removed from the queue).
    pub redriven: u64,
    /// Dead letters left in place, with the reason (an invalid envelope cannot be redriven).
    pub skipped: Vec<(String, String)>,
}
