//! [`Error`]: what can go wrong while setting up the domain handlers.

/// A failure while naming or building a domain handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handler name that is not one of the domain handlers.
    #[error("unknown event handler {name:?}: use `all` or a comma-separated list of {allowed}")]
    UnknownHandler {
        /// The name given.
        name: String,
        /// The names allowed, comma-separated.
        allowed: String,
    },
    /// The audit trail's sink cannot be opened or written.
    #[error("audit trail at {location}: {message}")]
    Audit {
        /// The file, directory or stream concerned.
        location: String,
        /// What failed and what to check.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<event_core::BoxError>,
    },
}
