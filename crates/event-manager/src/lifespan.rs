//! The lifespan API: run until a shutdown signal, or around a scoped body.

use std::future::Future;
use std::sync::Arc;

use crate::{Error, EventBusManager};

/// Resolves at the first SIGTERM or Ctrl-C (SIGINT); on other platforms at Ctrl-C. The
/// handlers are installed when the future is first polled: a signal that arrives before then
/// still has its default effect. Use [`listen_for_shutdown`] to install them at once.
///
/// # Errors
/// [`Error::Signal`] when the signal handlers cannot be installed.
pub async fn shutdown_signal() -> Result<(), Error> {
    listen_for_shutdown()?.await
}

/// Installs the SIGTERM and Ctrl-C handlers now and returns a future that resolves at the
/// first of them: from this call on, those signals no longer end the process by default.
/// Call it before announcing that a service is ready. Needs a Tokio runtime.
///
/// # Errors
/// [`Error::Signal`] when the signal handlers cannot be installed.
pub fn listen_for_shutdown()
-> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            Ok(())
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async { tokio::signal::ctrl_c().await.map_err(Error::Signal) })
    }
}

impl EventBusManager {
    /// Starts (if not running), runs until SIGTERM or Ctrl-C, then drains and stops: the
    /// whole life of a service's bus in one call.
    ///
    /// # Errors
    /// A failed start, a failed signal listener, or a failed stop.
    pub async fn run_until_shutdown_signal(&self) -> Result<(), Error> {
        let signal = listen_for_shutdown()?;
        self.run_until(signal).await
    }

    /// Starts (if not running), runs until `shutdown` resolves, then drains and stops. Stops
    /// also when `shutdown` fails, and reports that failure.
    ///
    /// # Errors
    /// A failed start, the error of `shutdown`, or a failed stop.
    pub async fn run_until<F>(&self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = Result<(), Error>>,
    {
        self.start().await?;
        let waited = shutdown.await;
        tracing::info!("shutdown requested: draining the event bus");
        let stopped = self.stop().await;
        waited.and(stopped)
    }

    /// Starts the manager, runs `body` with it, and stops it afterwards whatever the body
    /// returned: the scoped form for tests and scripts (the original's `event_bus_lifespan`
    /// context manager). The body's error wins over a stop error, which is then logged.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use event_core::{Config, Event, EventType};
    /// use event_manager::EventBusManager;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let manager = Arc::new(EventBusManager::builder(Config::default()).build()?);
    /// let id = manager
    ///     .scoped(|manager| async move {
    ///         let event = Event::builder(EventType::SYSTEM_HEALTH_CHECK, "docs")
    ///             .field("component", "api")
    ///             .build()?;
    ///         Ok::<_, event_manager::Error>(manager.bus()?.publish(event).await?)
    ///     })
    ///     .await?;
    /// assert!(!manager.bus().is_ok(), "stopped after the scope");
    /// # let _ = id;
    /// # Ok::<(), event_manager::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// A failed start (the body does not run), the body's error, or a failed stop.
    pub async fn scoped<T, E, F, Fut>(self: &Arc<Self>, body: F) -> Result<T, E>
    where
        F: FnOnce(Arc<EventBusManager>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.start().await?;
        let result = body(self.clone()).await;
        let stopped = self.stop().await;
        match (result, stopped) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(stop)) => Err(stop.into()),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(stop)) => {
                tracing::error!("stopping the event bus after a failed scope also failed: {stop}");
                Err(e)
            }
        }
    }
}
