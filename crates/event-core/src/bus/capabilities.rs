//! [`Capabilities`]: what a backend supports, so callers and the conformance suite can tell.

/// What a backend supports. The conformance suite selects trials by it, and the manager checks
/// the configuration against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name (`memory`, `redis`, `kafka`).
    pub backend: &'static str,
    /// Events survive a restart of the application.
    pub persistent: bool,
    /// Several processes running the same handler share its events.
    pub shared_groups: bool,
    /// Events with the same partition key reach a handler in publish order.
    pub per_key_order: bool,
    /// Replay by time window.
    pub replay_by_time: bool,
    /// Aggregate append with optimistic concurrency, and aggregate load.
    pub event_sourcing: bool,
    /// Events older than the retention are trimmed.
    pub retention: bool,
}
