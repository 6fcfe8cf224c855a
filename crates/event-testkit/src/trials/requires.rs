//! What a trial needs from a backend: each function says whether the backend's
//! [`Capabilities`] have it, and why not when they do not.

use event_core::Capabilities;

/// Every backend.
pub(crate) fn always(_: &Capabilities) -> Result<(), &'static str> {
    Ok(())
}

/// Events with one partition key reach a handler in publish order.
pub(crate) fn per_key_order(c: &Capabilities) -> Result<(), &'static str> {
    if c.per_key_order {
        Ok(())
    } else {
        Err("the backend does not keep per-key order")
    }
}

/// Replay by time window.
pub(crate) fn replay_by_time(c: &Capabilities) -> Result<(), &'static str> {
    if c.replay_by_time {
        Ok(())
    } else {
        Err("the backend cannot replay by time")
    }
}

/// Events older than the retention are trimmed.
pub(crate) fn retention(c: &Capabilities) -> Result<(), &'static str> {
    if c.retention {
        Ok(())
    } else {
        Err("the backend does not trim by retention")
    }
}

/// Aggregate append and load.
pub(crate) fn event_sourcing(c: &Capabilities) -> Result<(), &'static str> {
    if c.event_sourcing {
        Ok(())
    } else {
        Err("the backend does not support event sourcing")
    }
}

/// Events survive a restart of the application.
pub(crate) fn persistent(c: &Capabilities) -> Result<(), &'static str> {
    if c.persistent {
        Ok(())
    } else {
        Err("the backend keeps nothing across a restart")
    }
}

/// Bus instances in several processes share a handler's group.
pub(crate) fn shared_groups(c: &Capabilities) -> Result<(), &'static str> {
    if c.shared_groups {
        Ok(())
    } else {
        Err("the backend's groups do not span bus instances")
    }
}
