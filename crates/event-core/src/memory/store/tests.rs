//! Tests of the store's cursor: contiguous acknowledgements in any order.

use super::Cursor;

#[test]
fn cursor_commits_contiguous_acks_in_any_order() {
    let mut c = Cursor::at(10);
    for offset in [12, 14, 11] {
        c.ack(offset);
    }
    assert_eq!(c.committed, 10);
    assert!(c.is_acked(11) && c.is_acked(12) && !c.is_acked(13) && c.is_acked(14));
    c.ack(10);
    assert_eq!(c.committed, 13);
    c.ack(13);
    assert_eq!(c.committed, 15);
    assert!(c.acked.is_empty());
    c.ack(3);
    assert_eq!(c.committed, 15);
}

#[test]
fn clamp_counts_the_trimmed_offsets_never_read() {
    let mut c = Cursor::at(0);
    c.read = 4;
    assert_eq!(c.clamp(10), 6, "offsets 4 to 9 were never handed out");
    assert_eq!(c.clamp(10), 0, "counted once");
}

#[test]
fn clamp_skips_trimmed_offsets_and_keeps_later_acks() {
    let mut c = Cursor::at(0);
    c.ack(2);
    c.ack(5);
    c.clamp(2);
    assert_eq!(c.committed, 3);
    assert!(c.is_acked(5) && !c.is_acked(4));
    c.clamp(100);
    assert_eq!((c.committed, c.read), (100, 100));
    assert!(c.acked.is_empty());
}
