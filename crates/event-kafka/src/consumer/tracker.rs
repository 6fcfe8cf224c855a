//! [`Tracker`]: a group's position in one partition: what was handed out, what is still
//! unfinished, and the offset to commit.
//!
//! Offsets in a partition are not dense: transaction markers, records of aborted transactions
//! and records compaction removed are never delivered. So the tracker does not count offsets
//! from the committed position; it keeps the set of offsets handed out and not finished, and
//! the offset the fetch loop reads next (which the fetch moves past every gap). The offset to
//! commit is the smallest unfinished one, or, with none, the next to read.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells the trackers of one partition apart: a partition taken again (a new generation, or a
/// fetch loop restarted after a failure) gets a new tracker, and acknowledgements meant for
/// the one before are ignored (their events are delivered again from the committed offset).
static INCARNATIONS: AtomicU64 = AtomicU64::new(1);

/// Where a record is: the index of its topic in the group's list, its partition and offset,
/// and the tracker that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token {
    pub(crate) topic: usize,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) incarnation: u64,
}

/// A group's position in one partition.
#[derive(Debug)]
pub(crate) struct Tracker {
    incarnation: u64,
    /// Handed out (to the handler, or to be dead-lettered) and not finished.
    unfinished: BTreeSet<i64>,
    /// The next offset to hand out: every offset below it is handed out or holds nothing for
    /// this group.
    read: i64,
    /// The last position committed to Kafka.
    pub(crate) sent: i64,
    /// The partition's high watermark, from the last fetch.
    high_watermark: i64,
}

impl Tracker {
    /// A tracker that starts reading at `position`, which is also the committed one.
    pub(crate) fn at(position: i64) -> Self {
        Self {
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            unfinished: BTreeSet::new(),
            read: position,
            sent: position,
            high_watermark: position,
        }
    }

    /// A new tracker for a fetch loop that starts again from this one's committed offset
    /// (what this one handed out and was not finished is handed out again).
    pub(crate) fn restart(&self) -> Self {
        let mut fresh = Self::at(self.committed());
        fresh.sent = self.sent;
        fresh.high_watermark = self.high_watermark;
        fresh
    }

    /// Which tracker this is, for [`Token::incarnation`].
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The offset to commit: every offset below it is finished or holds nothing for us.
    pub(crate) fn committed(&self) -> i64 {
        self.unfinished.first().copied().unwrap_or(self.read)
    }

    /// `offset` is handed out.
    pub(crate) fn handed_out(&mut self, offset: i64) {
        if offset >= self.read {
            self.unfinished.insert(offset);
        }
    }

    /// Everything below `next` is handed out (or holds nothing): reading goes on from there.
    pub(crate) fn read_up_to(&mut self, next: i64) {
        self.read = self.read.max(next);
        self.high_watermark = self.high_watermark.max(self.read);
    }

    /// The partition's high watermark, from a fetch.
    pub(crate) fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark.max(self.read);
    }

    /// The delivery at `offset` is finished (handled, or dead-lettered and stored).
    pub(crate) fn finish(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// Whether the committed position moved since it was last committed.
    pub(crate) fn changed(&self) -> bool {
        self.committed() != self.sent
    }

    /// Handed out and not finished.
    pub(crate) fn pending(&self) -> u64 {
        self.unfinished.len() as u64
    }

    /// How far reading is past the commit point, in offsets: what a new owner of the
    /// partition would be handed again if this one stopped now.
    pub(crate) fn ahead(&self) -> u64 {
        u64::try_from(self.read - self.committed()).unwrap_or(0)
    }

    /// Not handed out yet.
    pub(crate) fn lag(&self) -> u64 {
        u64::try_from(self.high_watermark - self.read).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_waits_for_the_first_unfinished_offset() {
        let mut t = Tracker::at(10);
        for offset in 10..15 {
            t.handed_out(offset);
        }
        t.read_up_to(15);
        t.finish(11);
        t.finish(12);
        assert_eq!(t.committed(), 10);
        assert_eq!(t.pending(), 3);
        assert_eq!(t.ahead(), 5);
        t.finish(10);
        assert_eq!(t.committed(), 13);
        assert_eq!(t.ahead(), 2);
        t.finish(13);
        t.finish(14);
        assert_eq!(t.committed(), 15);
        assert_eq!(t.pending(), 0);
    }

    /// Offsets that are never delivered (markers, aborted records, compaction) do not hold
    /// the commit back.
    #[test]
    fn gaps_are_committed_across() {
        let mut t = Tracker::at(0);
        // Records at 0 and 1, a commit marker at 2, records at 5 (3 and 4 compacted away),
        // then an abort marker and aborted records up to 9: the fetch says to go on at 10.
        for offset in [0, 1, 5] {
            t.handed_out(offset);
        }
        t.read_up_to(10);
        t.set_high_watermark(10);
        t.finish(0);
        t.finish(1);
        assert_eq!(t.committed(), 5);
        t.finish(5);
        assert_eq!(t.committed(), 10);
        assert_eq!(t.lag(), 0);
        assert!(t.changed());
    }

    #[test]
    fn a_restart_hands_out_again_from_the_committed_offset() {
        let mut t = Tracker::at(0);
        for offset in 0..4 {
            t.handed_out(offset);
        }
        t.read_up_to(4);
        t.finish(0);
        t.finish(2);
        let fresh = t.restart();
        assert_eq!(fresh.committed(), 1);
        assert_eq!(fresh.pending(), 0);
        assert_ne!(fresh.incarnation(), t.incarnation());
        assert_eq!(fresh.lag(), 3);
    }
}
