//! [`BusFactory`] and [`Fixture`]: how the suite makes the buses of the backend under test.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Capabilities, Config, EventBus};

/// Makes buses of one backend from a configuration. Each trial builds its own bus (or
/// several, with different settings), so a factory is called many times.
#[async_trait]
pub trait BusFactory: Send + Sync + 'static {
    /// A new bus with this configuration.
    ///
    /// # Errors
    /// Whatever stops the backend from starting (a bad configuration, an unreachable server).
    async fn create(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>>;
}

/// A [`BusFactory`] made from an async closure by [`factory_fn`].
pub struct FnFactory<F>(F);

/// Makes a [`BusFactory`] from an async closure.
///
/// ```
/// use std::sync::Arc;
/// use event_core::{EventBus, MemoryBus};
///
/// let factory = event_testkit::factory_fn(|config| async move {
///     Ok(Arc::new(MemoryBus::new(config)?) as Arc<dyn EventBus>)
/// });
/// # let _ = factory;
/// ```
pub fn factory_fn<F, Fut>(f: F) -> FnFactory<F>
where
    F: Fn(Config) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Arc<dyn EventBus>>> + Send + 'static,
{
    FnFactory(f)
}

#[async_trait]
impl<F, Fut> BusFactory for FnFactory<F>
where
    F: Fn(Config) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Arc<dyn EventBus>>> + Send + 'static,
{
    async fn create(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>> {
        (self.0)(config).await
    }
}

/// The backend under test: its name, how to make buses, the configuration they start from,
/// and what it supports (trials that need more are reported as not applicable).
pub struct Fixture {
    /// The backend's name (`memory`, `redis`, `kafka`), for messages.
    pub name: &'static str,
    /// Makes the buses.
    pub factory: Arc<dyn BusFactory>,
    /// The configuration every bus starts from (server addresses, prefixes); each trial then
    /// shortens the retry delays and changes what it tests.
    pub base_config: Config,
    /// What the backend supports.
    pub capabilities: Capabilities,
    /// Every bus made for the current trial, shut down when it ends, pass or fail.
    made: Mutex<Vec<Arc<dyn EventBus>>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("name", &self.name)
            .field("base_config", &self.base_config)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture from its parts.
    pub fn new(
        name: &'static str,
        factory: impl BusFactory,
        base_config: Config,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            name,
            factory: Arc::new(factory),
            base_config,
            capabilities,
            made: Mutex::new(Vec::new()),
        }
    }

    /// A fixture whose name and capabilities are read from a bus the factory makes (and shuts
    /// down again).
    ///
    /// # Errors
    /// The factory's error.
    pub async fn probe(factory: impl BusFactory, base_config: Config) -> anyhow::Result<Self> {
        let bus = factory.create(base_config.clone()).await?;
        let capabilities = bus.capabilities();
        bus.shutdown().await?;
        Ok(Self::new(
            capabilities.backend,
            factory,
            base_config,
            capabilities,
        ))
    }

    /// A bus with the base configuration and the suite's quick retries.
    ///
    /// # Errors
    /// The factory's error.
    pub async fn bus(&self) -> anyhow::Result<Arc<dyn EventBus>> {
        self.bus_with(|_| {}).await
    }

    /// A bus with the base configuration, the suite's quick retries, and then `change`.
    ///
    /// # Errors
    /// The factory's error.
    pub async fn bus_with(
        &self,
        change: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Arc<dyn EventBus>> {
        let bus = self.factory.create(self.config_with(change)).await?;
        self.made_buses().push(bus.clone());
        Ok(bus)
    }

    /// The configuration [`bus_with`](Self::bus_with) would use, for trials that compare a
    /// bus's settings with what it does.
    pub fn config_with(&self, change: impl FnOnce(&mut Config)) -> Config {
        let mut config = self.base_config.clone();
        config.max_retries = 3;
        config.retry_base = Duration::from_millis(10);
        config.retry_max = Duration::from_millis(100);
        config.shutdown_timeout = Duration::from_secs(20);
        change(&mut config);
        config
    }

    /// Shuts down every bus made since the last call (a second shutdown is harmless).
    pub(crate) async fn shut_down_all(&self) {
        let buses = std::mem::take(&mut *self.made_buses());
        for bus in buses {
            if let Err(e) = bus.shutdown().await {
                eprintln!("shutting down a {} bus after a trial: {e}", self.name);
            }
        }
    }

    fn made_buses(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn EventBus>>> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a fixture constructor of [`run_conformance`](crate::run_conformance) returns:
/// a [`Fixture`], or `Option<Fixture>` for a backend whose server may be absent outside an
/// integration run (the constructor then reports the skip itself, loudly, and returns `None`).
pub trait MaybeFixture {
    /// The fixture, if there is one.
    fn into_fixture(self) -> Option<Fixture>;
}

impl MaybeFixture for Fixture {
    fn into_fixture(self) -> Option<Fixture> {
        Some(self)
    }
}

impl MaybeFixture for Option<Fixture> {
    fn into_fixture(self) -> Option<Fixture> {
        self
    }
}
