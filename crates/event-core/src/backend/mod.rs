//! Building blocks for backend authors: the parts of an [`EventBus`](crate::EventBus)
//! implementation that do not depend on the engine, written once and used by every backend
//! of the workspace (memory, Redis, Kafka).
//!
//! - [`Lifecycle`]: open or shut down, the consumer loops, how shutdown stops them; it is the
//!   [`ConsumerHost`](crate::dispatch::ConsumerHost) a backend's subscriptions hold.
//! - [`LocalHandlers`]: the handlers subscribed through one bus instance and their members.
//! - [`BatchResults`]: one result per event of a `publish_batch`, and one failure handed to
//!   several events with its source kept ([`SharedFailure`]); [`hand_back`] pairs the results
//!   with the events for a `publish_batch_returning` that copies nothing.
//! - The checks and limits every backend applies the same way: [`check_replay`],
//!   [`check_sourcing`], [`cut_raw_text`], [`NOT_AN_ENVELOPE`].
//!
//! Nothing here talks to a broker; the engine-specific parts stay in each backend's crate.

mod batch;
mod lifecycle;
mod local;

pub(crate) use batch::fate_unknown;
pub use batch::{BatchResults, SharedFailure, hand_back};
pub use lifecycle::Lifecycle;
pub use local::{LocalHandler, LocalHandlers};

use crate::{Config, Error, ReplayQuery};

/// The longest [`DeadLetter::raw`](crate::DeadLetter::raw) text a backend stores: 64 KiB.
pub const RAW_TEXT_LIMIT: usize = 64 * 1024;

/// Why a redrive skips a dead letter whose record was not a valid envelope, as
/// [`RedriveReport::skipped`](crate::RedriveReport::skipped) says it.
pub const NOT_AN_ENVELOPE: &str = "not a valid envelope: nothing to redrive";

/// Cuts `text` to at most [`RAW_TEXT_LIMIT`] bytes on a character boundary, marking a cut with
/// `...`.
pub fn cut_raw_text(mut text: String) -> String {
    if text.len() > RAW_TEXT_LIMIT {
        let mut cut = RAW_TEXT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// What every replay checks first: replay is enabled (`ENABLE_EVENT_REPLAY`) and the query is
/// valid.
///
/// # Errors
/// [`Error::Disabled`] when replay is turned off, [`Error::InvalidArgument`] for a bad query.
pub fn check_replay(config: &Config, query: &ReplayQuery) -> Result<(), Error> {
    if !config.enable_event_replay {
        return Err(Error::Disabled {
            feature: "event replay",
            variable: "ENABLE_EVENT_REPLAY",
        });
    }
    query.validate()
}

/// What every aggregate append and load checks first: event sourcing is enabled
/// (`ENABLE_EVENT_SOURCING`).
///
/// # Errors
/// [`Error::Disabled`] when event sourcing is turned off.
pub fn check_sourcing(config: &Config) -> Result<(), Error> {
    if !config.enable_event_sourcing {
        return Err(Error::Disabled {
            feature: "event sourcing",
            variable: "ENABLE_EVENT_SOURCING",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut_raw_text("short".into()), "short");
        let cut = cut_raw_text("é".repeat(RAW_TEXT_LIMIT));
        assert!(cut.len() <= RAW_TEXT_LIMIT + 3 && cut.ends_with("..."));
    }

    #[test]
    fn disabled_features_name_their_variable() {
        let config = Config {
            enable_event_replay: false,
            enable_event_sourcing: false,
            ..Config::default()
        };
        let query = ReplayQuery::new([], time::OffsetDateTime::UNIX_EPOCH);
        assert!(matches!(
            check_replay(&config, &query),
            Err(Error::Disabled {
                variable: "ENABLE_EVENT_REPLAY",
                ..
            })
        ));
        assert!(matches!(
            check_sourcing(&config),
            Err(Error::Disabled {
                variable: "ENABLE_EVENT_SOURCING",
                ..
            })
        ));
        assert!(check_sourcing(&Config::default()).is_ok());
    }
}
