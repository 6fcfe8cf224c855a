//! Faults a test can switch on inside a running bus, to prove that the bus survives them and
//! that the checks around it notice what they should. Not part of the API: nothing is armed
//! unless a test arms it, and an unarmed check costs one atomic load.
//!
//! Handlers are named process-wide, so tests use unique handler names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Whether any fault is armed: the fast path of every check.
static ANY: AtomicBool = AtomicBool::new(false);
static FAULTS: Mutex<Option<HashMap<String, Armed>>> = Mutex::new(None);

#[derive(Default)]
struct Armed {
    /// Acknowledge every n-th delivery without handling it (0 = off).
    lose_every: u64,
    /// Deliveries seen while `lose_every` is set.
    seen: u64,
    /// The next consumer-loop checkpoint panics.
    panic_loop: bool,
}

fn faults() -> MutexGuard<'static, Option<HashMap<String, Armed>>> {
    FAULTS.lock().unwrap_or_else(|p| p.into_inner())
}

fn arm(handler: &str, set: impl FnOnce(&mut Armed)) {
    let mut faults = faults();
    set(faults
        .get_or_insert_with(HashMap::new)
        .entry(handler.to_string())
        .or_default());
    ANY.store(true, Ordering::Release);
}

/// A deliberately broken acknowledgement: every `n`-th delivery of `handler` is acknowledged
/// without the handler being called, so the event is lost. For checking the checkers.
pub fn lose_every(handler: &str, n: u64) {
    arm(handler, |a| {
        a.lose_every = n;
        a.seen = 0;
    });
}

/// The next iteration of `handler`'s consumer loop panics, once: the bus must restart the
/// loop and say so in its health.
pub fn panic_loop_once(handler: &str) {
    arm(handler, |a| a.panic_loop = true);
}

/// Disarms every fault of `handler`.
pub fn clear(handler: &str) {
    if let Some(map) = faults().as_mut() {
        map.remove(handler);
    }
}

/// Called by consumer loops at each iteration: panics when [`panic_loop_once`] armed it.
///
/// # Panics
/// When armed, on purpose.
pub fn checkpoint(handler: &str) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let fire = faults()
        .as_mut()
        .and_then(|m| m.get_mut(handler))
        .is_some_and(|a| std::mem::take(&mut a.panic_loop));
    if fire {
        panic!("fault injected: consumer loop of {handler} panics");
    }
}

/// Whether this delivery of `handler` is to be acknowledged without handling it.
pub(crate) fn lose_this(handler: &str) -> bool {
    if !ANY.load(Ordering::Acquire) {
        return false;
    }
    faults()
        .as_mut()
        .and_then(|m| m.get_mut(handler))
        .is_some_and(|a| {
            if a.lose_every == 0 {
                return false;
            }
            a.seen += 1;
            a.seen.is_multiple_of(a.lose_every)
        })
}
