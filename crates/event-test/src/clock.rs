//! The virtual clock: tokio's clock, paused. Retry backoff runs on tokio's timers and the
//! in-memory bus's retention on tokio's clock, so moving it moves both.

use std::time::Duration;

use crate::TestBusError;

/// Whether tokio's clock is paused in this runtime. Tokio does not say, but a paused clock
/// never moves between two readings in one poll (it moves only when the runtime is idle, or
/// by `advance`), while a running one moves by the microseconds waited in between.
pub(crate) fn is_paused() -> bool {
    let before = tokio::time::Instant::now();
    let waited = std::time::Instant::now();
    while waited.elapsed() < Duration::from_micros(5) {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == before
}

/// Moves the paused clock forward by `by`, firing the timers due on the way.
pub(crate) async fn advance(by: Duration) -> Result<(), TestBusError> {
    if tokio::runtime::Handle::try_current().is_err() || !is_paused() {
        return Err(TestBusError::ClockNotPaused);
    }
    tokio::time::advance(by).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_is_seen_paused() {
        assert!(is_paused());
        let before = tokio::time::Instant::now();
        advance(Duration::from_secs(3600)).await.unwrap();
        assert!(tokio::time::Instant::now() - before >= Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_running_clock_is_refused_with_a_clear_error() {
        assert!(!is_paused());
        let error = advance(Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, TestBusError::ClockNotPaused), "{error}");
        assert!(error.to_string().contains("start_paused = true"));
    }
}
