//! [`RecentIds`]: the ids of the events a view already applied, so a redelivery (at least
//! once) does not count twice.

use std::collections::{HashSet, VecDeque};

use event_core::EventId;

/// The last `capacity` event ids applied, oldest dropped first.
#[derive(Debug)]
pub(crate) struct RecentIds {
    capacity: usize,
    order: VecDeque<EventId>,
    set: HashSet<EventId>,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Whether `id` was applied.
    pub(crate) fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }

    /// Records `id`; `false` when it was already there.
    pub(crate) fn insert(&mut self, id: EventId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_ids_only() {
        let mut recent = RecentIds::new(2);
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        assert!(recent.insert(a));
        assert!(!recent.insert(a));
        assert!(recent.insert(b));
        assert!(recent.insert(c));
        assert!(recent.insert(a), "a was pushed out by c");
        assert!(!recent.insert(c));
    }
}
