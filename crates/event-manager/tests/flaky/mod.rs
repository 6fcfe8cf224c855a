//! A handler that fails every event permanently while its flag is set: how the API tests make
//! dead letters, and then redrive them once the flag is cleared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use event_core::{EventHandler, HandlerError, handler_fn};

/// A handler named `name` that fails with `message` while `fails` is set.
pub(crate) fn failing_while(
    name: &str,
    fails: &Arc<AtomicBool>,
    message: &'static str,
) -> Arc<dyn EventHandler> {
    let fails = fails.clone();
    handler_fn(name.to_string(), move |_event| {
        let failing = fails.load(Ordering::SeqCst);
        async move {
            if failing {
                Err(HandlerError::permanent(std::io::Error::other(message)))
            } else {
                Ok(())
            }
        }
    })
}
