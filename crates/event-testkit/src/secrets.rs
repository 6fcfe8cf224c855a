//! Helpers for the backends' security tests: prove that a secret shows nowhere (errors, their
//! sources, `Debug`, logs) and that a bus still works end to end over a secured connection.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{Error, Event, EventBus, EventType, HandlerError, SubscriptionSpec, handler_fn};

/// Subscribes a probe handler, publishes one event and waits (up to 15 s) until the handler
/// has it: the bus works over whatever connection it was given.
///
/// # Errors
/// When subscribing or publishing fails, or the event does not arrive.
pub async fn round_trip(bus: &dyn EventBus) -> anyhow::Result<()> {
    let (delivered, mut received) = tokio::sync::mpsc::unbounded_channel();
    let handler = handler_fn("security_probe", move |event| {
        let delivered = delivered.clone();
        async move {
            let _ = delivered.send(event.id);
            Ok::<(), HandlerError>(())
        }
    });
    bus.subscribe(
        SubscriptionSpec::new("security_probe", [EventType::USER_REGISTERED]),
        handler,
    )
    .await?;
    let id = bus
        .publish(Event::builder(EventType::USER_REGISTERED, "security_test").build()?)
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(15), received.recv())
        .await
        .context("the published event was not delivered within 15 s")?;
    ensure!(got == Some(id), "delivered {got:?}, published {id:?}");
    Ok(())
}

/// An error's `Display`, `Debug`, and every source's `Display` and `Debug`: all a user could
/// ever be shown of it.
pub fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err}\n{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        shown.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    shown
}

/// Fails when `text` contains any of `secrets` (the message shows the text with them masked).
///
/// # Errors
/// When a secret is found.
pub fn hidden(text: &str, secrets: &[&str]) -> anyhow::Result<()> {
    for secret in secrets {
        ensure!(
            !text.contains(secret),
            "a password was shown: {}",
            text.replace(secret, "<PASSWORD>")
        );
    }
    Ok(())
}

/// Everything logged by this test binary at any level, through `tracing` (and the `log`
/// records it forwards). The first call installs the process-wide subscriber.
///
/// # Panics
/// When the test binary already installed another global subscriber.
pub fn captured_logs() -> &'static SharedBuffer {
    static LOGS: OnceLock<SharedBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = SharedBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test binary installs no other subscriber");
        buffer
    })
}

/// The text logged so far, shared with the subscriber that writes it.
#[derive(Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
