//! [`LocalHandlers`]: the handlers subscribed through one bus instance, for stats, health and
//! the consumer loops of persistent backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::ConsumerHealth;
use crate::dispatch::{ConsumerSet, HandlerCounters};

/// A handler subscribed through this bus instance: its group, what it reads, its counters
/// and its running members, plus what the backend keeps beside them (`extra`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LocalHandler<E = ()> {
    /// Its consumer group (`{EVENT_CONSUMER_GROUP}.{handler}`).
    pub group: String,
    /// What its newest subscription reads, in the backend's words (event types, stream keys).
    pub sources: Vec<String>,
    /// Its delivery counters, shared by all its subscriptions here.
    pub counters: Arc<HandlerCounters>,
    /// The [`ConsumerSet`] ids of its subscriptions here that have not ended.
    pub members: Vec<u64>,
    /// The backend's own bookkeeping for the handler.
    pub extra: E,
}

impl<E> LocalHandler<E> {
    /// Whether one of its members' consumer loops is running.
    pub fn is_running(&self, consumers: &ConsumerSet) -> bool {
        self.members.iter().any(|m| consumers.is_running(*m))
    }

    /// Its health: stalled when it has a `backlog` and has made no progress for
    /// `stall_timeout` (`EVENT_STALL_TIMEOUT_MS`), with its consumer loops' failures.
    pub fn health(
        &self,
        handler: String,
        alive: bool,
        backlog: u64,
        dead_letter_depth: u64,
        stall_timeout: Duration,
    ) -> ConsumerHealth {
        let stalled = backlog > 0 && self.counters.idle_for(stall_timeout);
        ConsumerHealth::new(handler, alive, stalled, backlog, dead_letter_depth)
            .with_loop_failures(&self.counters)
    }
}

/// The handlers subscribed through one bus instance, by name.
#[derive(Debug)]
pub struct LocalHandlers<E = ()> {
    /// The backend's name, the `backend` label of the handlers' metrics.
    backend: &'static str,
    handlers: Mutex<HashMap<String, LocalHandler<E>>>,
}

impl<E> LocalHandlers<E> {
    /// No handlers yet, on `backend` (`redis`, `kafka`: the `backend` label of their
    /// metrics, see [`telemetry`](crate::telemetry)).
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            handlers: Mutex::new(HashMap::new()),
        }
    }
}

impl<E: Clone + Default> LocalHandlers<E> {
    /// Locks the handlers. A panic while holding the lock leaves the map consistent, so a
    /// poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, LocalHandler<E>>> {
        self.handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `handler` was ever subscribed here.
    pub fn contains(&self, handler: &str) -> bool {
        self.lock().contains_key(handler)
    }

    /// Registers `member`, a new subscription of `handler` in `group` reading `sources`; the
    /// handler as it is now. Its stall clock starts again: a new member has made no progress
    /// yet, and its wait is not the handler's stall.
    pub fn add_member(
        &self,
        handler: &str,
        group: &str,
        sources: &[String],
        member: u64,
    ) -> LocalHandler<E> {
        let mut handlers = self.lock();
        let local = handlers.entry(handler.to_string()).or_insert_with(|| {
            let counters = Arc::new(HandlerCounters::default());
            crate::telemetry::register(self.backend, handler, &counters);
            LocalHandler {
                group: group.to_string(),
                sources: sources.to_vec(),
                counters,
                members: Vec::new(),
                extra: E::default(),
            }
        });
        local.sources = sources.to_vec();
        local.members.push(member);
        local.counters.reset_stall_clock();
        local.clone()
    }

    /// Forgets `member` of `handler` once it has stopped; `then` updates the rest of the
    /// handler's bookkeeping under the same lock.
    pub fn remove_member(
        &self,
        handler: &str,
        member: u64,
        then: impl FnOnce(&mut LocalHandler<E>),
    ) {
        if let Some(local) = self.lock().get_mut(handler) {
            local.members.retain(|m| *m != member);
            then(local);
        }
    }

    /// The handlers with a member here, each as it is now.
    pub fn active(&self) -> Vec<(String, LocalHandler<E>)> {
        self.lock()
            .iter()
            .filter(|(_, h)| !h.members.is_empty())
            .map(|(name, h)| (name.clone(), h.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_and_go() {
        let handlers: LocalHandlers<Vec<String>> = LocalHandlers::new("test");
        let first = handlers.add_member("audit", "g.audit", &["a".into()], 1);
        let second = handlers.add_member("audit", "g.audit", &["a".into(), "b".into()], 2);
        assert!(Arc::ptr_eq(&first.counters, &second.counters));
        assert_eq!(second.members, vec![1, 2]);
        assert_eq!(second.sources, vec!["a".to_string(), "b".to_string()]);
        handlers.remove_member("audit", 1, |h| h.extra.push("consumer-1".into()));
        handlers.remove_member("audit", 2, |_| {});
        handlers.remove_member("unknown", 3, |_| panic!("no such handler"));
        assert!(handlers.active().is_empty());
        assert!(handlers.contains("audit"));
        assert_eq!(
            handlers.lock()["audit"].extra,
            vec!["consumer-1".to_string()]
        );
    }

    #[test]
    fn health_is_not_stalled_without_a_backlog_or_before_the_timeout() {
        let handlers: LocalHandlers = LocalHandlers::new("test");
        let local = handlers.add_member("audit", "g.audit", &[], 1);
        let idle = local.health("audit".into(), true, 0, 0, Duration::ZERO);
        assert!(!idle.stalled);
        let behind = local.health("audit".into(), true, 5, 1, Duration::from_secs(3600));
        assert!(!behind.stalled && behind.lag == 5 && behind.dead_letter_depth == 1);
    }
}
