//! Exit codes scripts can rely on (documented in the README).

use std::process::ExitCode;

/// Why the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done; `health`: healthy.
    Ok = 0,
    /// A failure not covered below.
    Failure = 1,
    // 2 is clap's: bad command-line usage.
    /// Invalid input: a bad configuration variable, flag value or payload.
    Config = 3,
    /// The backend could not be reached (a transient failure: try again later).
    Unavailable = 4,
    /// What was asked for does not exist (an unknown handler, dead letter, ...).
    NotFound = 5,
    /// `health`: degraded. `copy`: some events failed. `doctor`: the worst finding is a
    /// warning.
    Degraded = 6,
    /// `health`: unhealthy. `doctor`: a check failed.
    Unhealthy = 7,
    /// `verify-copy`: the source and the target hold different events.
    Differ = 8,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The exit code for an error: configuration, reachability, not found, or other.
pub(crate) fn classify(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<event_manager::Error>() {
            use event_manager::Error as M;
            return match e {
                M::Config(_)
                | M::Capability { .. }
                | M::BackendNotBuilt { .. }
                | M::UnknownDomainHandler { .. }
                | M::InvalidSetting { .. }
                | M::Publish(_) => Exit::Config,
                M::UnknownHandler(_) => Exit::NotFound,
                M::Bus(e) => classify_bus(e),
                e if e.is_transient() => Exit::Unavailable,
                _ => Exit::Failure,
            };
        }
        if let Some(e) = cause.downcast_ref::<event_publishers::Error>() {
            return match e {
                event_publishers::Error::Bus(e) => classify_bus(e),
                _ => Exit::Config,
            };
        }
        if let Some(e) = cause.downcast_ref::<event_core::Error>() {
            return classify_bus(e);
        }
        if cause.downcast_ref::<event_core::ConfigError>().is_some() {
            return Exit::Config;
        }
        if cause.downcast_ref::<crate::args::ArgError>().is_some() {
            return Exit::Config;
        }
    }
    Exit::Failure
}

fn classify_bus(e: &event_core::Error) -> Exit {
    match e {
        event_core::Error::Config(_)
        | event_core::Error::InvalidArgument(_)
        | event_core::Error::InvalidEvent { .. }
        | event_core::Error::InvalidEventType { .. }
        | event_core::Error::EventTooLarge { .. }
        | event_core::Error::Disabled { .. } => Exit::Config,
        event_core::Error::UnknownHandler { .. } => Exit::NotFound,
        e if e.is_transient() => Exit::Unavailable,
        _ => Exit::Failure,
    }
}
