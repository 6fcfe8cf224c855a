//! Reading a subscription's streams on a Redis Cluster, where they lie in several hash slots
//! (on several masters) and one `XREADGROUP` reads the streams of one slot.
//!
//! - Each slot's streams are read side by side, without blocking; when none had anything, the
//!   slots take turns at a short blocking read: blocking reads of two slots cannot run side
//!   by side (they would queue on the connection to a master holding both), so a new entry in
//!   another slot waits for that read to end. The block starts at 1 ms and doubles with each
//!   pass that finds nothing, up to [`CLUSTER_BLOCK_MS`]: under load an entry waits a few
//!   milliseconds at most, and an idle subscription sends a few reads a second.
//! - A slot whose read fails (its master down until its replica takes over, a network fault)
//!   does not hold up the others: it is skipped for a while (100 ms, doubling up to 5 s) and
//!   the others go on. Its read's reply may be lost with entries Redis already registered to
//!   this consumer, so before its next read its own pending entries are taken back first, in
//!   order, as the loop does after a failed read on one server.
//! - The read fails as a whole only when every slot's read failed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use event_core::Error;
use fred::prelude::Client;
use tokio::time::Instant;

use super::Subscriber;
use super::take::{self, Taken};

/// The longest blocking read of one slot's streams (see the module's documentation).
const CLUSTER_BLOCK_MS: u64 = 50;
/// The longest a failing slot is skipped.
const MAX_SKIP: Duration = Duration::from_secs(5);

/// The reading state of one subscription attempt's slots.
#[derive(Default)]
pub(super) struct SlotReads {
    states: Mutex<Vec<SlotState>>,
    /// Which slot the next idle blocking read is on.
    block_turn: AtomicUsize,
    /// Passes in a row that found nothing: the blocking read lasts longer with each.
    idle_passes: AtomicU32,
}

#[derive(Clone, Default)]
struct SlotState {
    /// The last read failed: take back this consumer's pending entries of the slot first.
    take_back: bool,
    /// Failures in a row.
    failures: u32,
    /// Skipped until then.
    skip_until: Option<Instant>,
}

impl SlotReads {
    fn states(&self) -> std::sync::MutexGuard<'_, Vec<SlotState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self, slot: usize) -> SlotState {
        self.states().get(slot).cloned().unwrap_or_default()
    }

    fn set(&self, slot: usize, state: SlotState) {
        let mut states = self.states();
        if states.len() <= slot {
            states.resize(slot + 1, SlotState::default());
        }
        states[slot] = state;
    }
}

/// Reads up to `count` new entries per stream, one read per slot (see the module).
pub(super) async fn read(
    sub: &Subscriber,
    reader: &Client,
    count: usize,
    taken: &mut Taken,
) -> Result<(), Error> {
    let now = Instant::now();
    let ready: Vec<usize> = (0..sub.slots.len())
        .filter(|&slot| {
            sub.slot_reads
                .state(slot)
                .skip_until
                .is_none_or(|until| until <= now)
        })
        .collect();
    if ready.is_empty() {
        return Err(Error::backend(
            "redis",
            "the reads of every hash slot of this subscription's streams are failing",
            true,
        ));
    }
    let reads = ready
        .iter()
        .map(|&slot| read_slot(sub, reader, slot, count, None));
    let outcomes = futures::future::join_all(reads).await;
    let (mut entries, mut first_error, mut failures) = (0, None, 0);
    for outcome in outcomes {
        match outcome {
            Ok((slot_taken, n)) => {
                entries += n;
                taken.append(slot_taken);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if failures == ready.len()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    if entries > 0 || failures > 0 {
        sub.slot_reads.idle_passes.store(0, Ordering::Relaxed);
        return Ok(());
    }
    let idle = sub.slot_reads.idle_passes.fetch_add(1, Ordering::Relaxed);
    let block = (1u64 << idle.min(6)).min(CLUSTER_BLOCK_MS);
    let turn = sub.slot_reads.block_turn.fetch_add(1, Ordering::Relaxed) % ready.len();
    let (slot_taken, n) = read_slot(sub, reader, ready[turn], count, Some(block)).await?;
    if n > 0 {
        sub.slot_reads.idle_passes.store(0, Ordering::Relaxed);
    }
    taken.append(slot_taken);
    Ok(())
}

/// One read of the streams of slot `slot`, its own pending entries taken back first when its
/// last read failed; records the outcome in the slot's state.
async fn read_slot(
    sub: &Subscriber,
    reader: &Client,
    slot: usize,
    count: usize,
    block: Option<u64>,
) -> Result<(Taken, usize), Error> {
    let streams = &sub.slots[slot];
    let mut state = sub.slot_reads.state(slot);
    let mut taken = Taken::default();
    let outcome = async {
        if state.take_back {
            take::read_own_pending_of(sub, reader, streams, &mut taken).await?;
        }
        let at = take::new_at(streams);
        take::read_at(sub, reader, count, at, block, None, &mut taken).await
    }
    .await;
    match outcome {
        Ok(read) => {
            sub.slot_reads.set(slot, SlotState::default());
            Ok((taken, read.entries))
        }
        Err(e) => {
            state.take_back = true;
            state.failures += 1;
            let skip = Duration::from_millis(100 << state.failures.min(6)).min(MAX_SKIP);
            state.skip_until = Some(Instant::now() + skip);
            if state.failures == 1 || state.failures.is_multiple_of(20) {
                tracing::warn!(
                    handler = %sub.handler,
                    streams = ?streams.iter().map(|&s| &sub.streams[s]).collect::<Vec<_>>(),
                    failures = state.failures,
                    "reading the streams of one hash slot failed; the other slots go on, this one is retried in {skip:?}: {e}"
                );
            }
            sub.slot_reads.set(slot, state);
            Err(e)
        }
    }
}
