//! [`EventBusManager`]: the bus from configuration, the handler registry and the lifecycle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_core::{Config, EnvSettings, EventBus, EventHandler, SubscriptionSpec};

use event_handlers::{AuditSettings, DomainContext};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::Error;
use crate::backend::{check_capabilities, connect_bus};
use crate::component::{Component, ComponentReport, Supervised};
use crate::domain_handlers::{self, View, ViewsPool};
use crate::registry::{Entry, HandlerOrigin, Registry};
use crate::settings::Settings;

/// Where the manager is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ManagerState {
    /// Not started, or stopped; [`EventBusManager::start`] can (re)start it.
    Stopped,
    /// Connecting and subscribing.
    Starting,
    /// Running: the bus is connected and every handler subscribed.
    Running,
    /// Draining and disconnecting.
    Stopping,
}

/// Builds an [`EventBusManager`]: the configuration, which variables the user set, and the
/// application's own handlers.
///
/// ```
/// use event_core::{Config, EventType, HandlerError, SubscriptionSpec, handler_fn};
/// use event_manager::EventBusManager;
///
/// let manager = EventBusManager::builder(Config::default())
///     .handler(
///         SubscriptionSpec::new("welcome", [EventType::USER_REGISTERED]),
///         handler_fn("welcome", |_event| async { Ok::<(), HandlerError>(()) }),
///     )
///     .build()?;
/// assert_eq!(manager.handler_names(), ["welcome"]);
/// # Ok::<(), event_manager::Error>(())
/// ```
pub struct ManagerBuilder {
    settings: Settings,
    explicit: BTreeSet<String>,
    handlers: Vec<(SubscriptionSpec, Arc<dyn EventHandler>)>,
    domain_context: Arc<ContextFactory>,
    components: Vec<Arc<dyn Component>>,
}

/// Makes the domain handlers' context for the bus of a start.
type ContextFactory = dyn Fn(Arc<dyn EventBus>) -> Result<DomainContext, Error> + Send + Sync;

/// The default context: audit settings from the environment (`EVENT_AUDIT_*`), its entries
/// sealed as the bus seals events when `config` encrypts; default thresholds.
fn default_context(bus: Arc<dyn EventBus>, config: &Config) -> Result<DomainContext, Error> {
    let keys = config
        .encryption_keys
        .clone()
        .filter(|_| config.encrypt_payloads);
    let audit = AuditSettings::from_env()?.sealed_with(keys);
    Ok(DomainContext::new(bus).with_audit(audit))
}

impl ManagerBuilder {
    /// Reads the configuration from the environment and notes which variables are set, so
    /// that an explicit request the backend cannot honour is an error (see
    /// [`check_capabilities`](crate::check_capabilities)).
    ///
    /// # Errors
    /// [`Error::Config`] listing every bad variable.
    pub fn from_env() -> Result<Self, Error> {
        let settings = Settings::from_env()?;
        Ok(EventBusManager::builder(settings).explicit_variables(Settings::set_in_env()))
    }

    /// Names the variables the user set explicitly (the others are taken as defaults).
    pub fn explicit_variables(
        mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.explicit.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds an application handler (wrap it in the `event-handlers` middleware first if it
    /// needs timeouts, idempotency, metrics or a circuit breaker).
    pub fn handler(mut self, spec: SubscriptionSpec, handler: Arc<dyn EventHandler>) -> Self {
        self.handlers.push((spec, handler));
        self
    }

    /// Adds a component the manager runs beside the bus while it runs: started after the bus,
    /// restarted whenever it fails, stopped before the bus, and reported in health (an outbox
    /// relay, say).
    pub fn component(mut self, component: Arc<dyn Component>) -> Self {
        self.components.push(component);
        self
    }

    /// How the domain handlers' context is made at each start (where the audit trail goes,
    /// alert thresholds); by default the audit settings come from the environment
    /// (`EVENT_AUDIT_DIR`, ...), the audit entries are sealed when the configuration encrypts
    /// payloads, and the thresholds are the defaults. A factory of your own that audits
    /// encrypted events should seal them too ([`AuditSettings::sealed_with`]).
    pub fn domain_context(
        mut self,
        factory: impl Fn(Arc<dyn EventBus>) -> Result<DomainContext, Error> + Send + Sync + 'static,
    ) -> Self {
        self.domain_context = Arc::new(factory);
        self
    }

    /// Checks the configuration and the handlers and builds the manager, not yet started.
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::UnknownDomainHandler`] for a name in
    /// `ENABLED_EVENT_HANDLERS` that does not exist, [`Error::DuplicateHandler`], or
    /// [`Error::Bus`] for an invalid subscription.
    pub fn build(self) -> Result<EventBusManager, Error> {
        self.settings.validate()?;
        domain_handlers::check_selection(&self.settings)?;
        let mut registry = Registry::new();
        for (spec, handler) in self.handlers {
            insert_custom(&mut registry, spec, handler)?;
        }
        let views = ViewsPool::new(&self.settings)?;
        // Views in PostgreSQL publish their follow-up events through the outbox: its relay.
        let components = self.components.into_iter().chain(views.relay()).collect();
        Ok(EventBusManager {
            settings: self.settings,
            explicit: self.explicit,
            domain_context: self.domain_context,
            views,
            components,
            lifecycle: tokio::sync::Mutex::new(()),
            shared: Mutex::new(Shared {
                state: ManagerState::Stopped,
                bus: None,
                started_at: None,
                registry,
                warnings: Vec::new(),
                running: None,
            }),
        })
    }
}

fn insert_custom(
    registry: &mut Registry,
    spec: SubscriptionSpec,
    handler: Arc<dyn EventHandler>,
) -> Result<(), Error> {
    spec.validate()?;
    if registry.contains_key(&spec.handler) {
        return Err(Error::DuplicateHandler(spec.handler));
    }
    let name = spec.handler.clone();
    registry.insert(name, Entry::new(spec, handler, HandlerOrigin::Custom, None));
    Ok(())
}

/// What readers see at once, behind a short lock never held across an `await`.
struct Shared {
    state: ManagerState,
    bus: Option<Arc<dyn EventBus>>,
    started_at: Option<OffsetDateTime>,
    registry: Registry,
    warnings: Vec<String>,
    /// The supervised components while running, and the switch that stops them.
    running: Option<(watch::Sender<bool>, Vec<Supervised>)>,
}

/// The event bus of an application: builds the bus that `EVENT_BUS_TYPE` names, checks the
/// configuration against what it can do, runs the domain handlers and the application's own,
/// and reports stats and health.
///
/// The lifecycle is explicit: [`start`](Self::start) connects and subscribes (a failed start
/// leaves nothing behind and can simply be called again), [`stop`](Self::stop) drains and
/// disconnects, [`run_until_shutdown_signal`](Self::run_until_shutdown_signal) does both around
/// SIGTERM or Ctrl-C, and [`scoped`](Self::scoped) runs a body between them.
pub struct EventBusManager {
    settings: Settings,
    explicit: BTreeSet<String>,
    domain_context: Arc<ContextFactory>,
    /// Where the domain handlers keep their views.
    views: ViewsPool,
    components: Vec<Arc<dyn Component>>,
    /// Serialises start, stop and registry changes that subscribe or unsubscribe.
    lifecycle: tokio::sync::Mutex<()>,
    shared: Mutex<Shared>,
}

impl std::fmt::Debug for EventBusManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusManager")
            .field("backend", &self.settings.bus_type)
            .field("state", &self.state())
            .field("handlers", &self.handler_names())
            .finish()
    }
}

impl EventBusManager {
    /// A builder over `settings` (or a [`Config`] alone, for the memory bus), with no variable
    /// taken as set explicitly.
    pub fn builder(settings: impl Into<Settings>) -> ManagerBuilder {
        let settings: Settings = settings.into();
        let config = settings.bus.clone();
        ManagerBuilder {
            settings,
            explicit: BTreeSet::new(),
            handlers: Vec::new(),
            domain_context: Arc::new(move |bus| default_context(bus, &config)),
            components: Vec::new(),
        }
    }

    /// A manager from the environment, with no application handlers.
    ///
    /// # Errors
    /// As [`ManagerBuilder::from_env`] and [`ManagerBuilder::build`].
    pub fn from_env() -> Result<Self, Error> {
        ManagerBuilder::from_env()?.build()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings every backend shares.
    pub fn config(&self) -> &Config {
        &self.settings.bus
    }

    /// Every setting: the backend, the shared ones, each backend's own, the domain handlers.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where the manager is in its lifecycle.
    pub fn state(&self) -> ManagerState {
        self.shared().state
    }

    /// When the running bus was started.
    pub fn started_at(&self) -> Option<OffsetDateTime> {
        self.shared().started_at
    }

    /// Capability warnings of the last start (settings with no effect on this backend).
    pub fn warnings(&self) -> Vec<String> {
        self.shared().warnings.clone()
    }

    /// The running bus.
    ///
    /// # Errors
    /// [`Error::NotRunning`] before [`start`](Self::start) or after
    /// [`stop`](Self::stop).
    pub fn bus(&self) -> Result<Arc<dyn EventBus>, Error> {
        let shared = self.shared();
        match (&shared.state, &shared.bus) {
            (ManagerState::Running, Some(bus)) => Ok(bus.clone()),
            _ => Err(Error::NotRunning),
        }
    }

    /// The registered handlers' names, sorted.
    pub fn handler_names(&self) -> Vec<String> {
        self.shared().registry.keys().cloned().collect()
    }

    /// The view kept by a handler, if it keeps one.
    pub fn view(&self, handler: &str) -> Option<Arc<dyn View>> {
        self.shared()
            .registry
            .get(handler)
            .and_then(|e| e.view.clone())
    }

    /// Each supervised component with its report, while running.
    pub(crate) fn component_reports(&self) -> Vec<(Arc<dyn Component>, ComponentReport)> {
        self.shared()
            .running
            .as_ref()
            .map(|(_, supervised)| {
                supervised
                    .iter()
                    .map(|s| (s.component.clone(), s.report()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The names of the handlers that keep a view.
    pub fn view_names(&self) -> Vec<String> {
        self.shared()
            .registry
            .iter()
            .filter(|(_, e)| e.view.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Connects the bus, checks the configuration against its capabilities, builds the domain
    /// handlers and subscribes every handler. Does nothing when already running.
    ///
    /// A failure leaves the manager stopped with nothing connected or subscribed, so `start`
    /// can be called again (the original cached a failed start forever);
    /// [`start_with_retries`](Self::start_with_retries) does that for transient failures.
    ///
    /// # Errors
    /// [`Error::Capability`] listing what to change, [`Error::Bus`] when the
    /// backend cannot be reached or a subscription fails.
    pub async fn start(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        if self.state() == ManagerState::Running {
            return Ok(());
        }
        self.shared().state = ManagerState::Starting;
        match self.start_locked().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared().state = ManagerState::Stopped;
                Err(e)
            }
        }
    }

    async fn start_locked(&self) -> Result<(), Error> {
        let bus = connect_bus(&self.settings).await?;
        let capabilities = bus.capabilities();
        let report = check_capabilities(&self.settings.bus, &capabilities, &self.explicit);
        if !report.errors.is_empty() {
            let _ = bus.shutdown().await;
            return Err(Error::Capability {
                backend: capabilities.backend,
                problems: report.errors,
            });
        }
        for warning in &report.warnings {
            tracing::info!(backend = capabilities.backend, "{warning}");
        }
        let domain_entries = match self.views.check().await.and_then(|()| {
            domain_handlers::build(&self.settings, &bus, &*self.domain_context, &self.views)
        }) {
            Ok(entries) => entries,
            Err(e) => {
                let _ = bus.shutdown().await;
                return Err(e);
            }
        };
        let to_subscribe = {
            let mut shared = self.shared();
            shared
                .registry
                .retain(|_, e| e.origin != HandlerOrigin::Domain);
            for (name, entry) in domain_entries {
                if shared.registry.contains_key(&name) {
                    tracing::warn!(
                        handler = %name,
                        "an application handler has the name of a domain handler; the domain handler is not started"
                    );
                    continue;
                }
                shared.registry.insert(name, entry);
            }
            shared
                .registry
                .values()
                .map(|e| (e.spec.clone(), e.handler.clone()))
                .collect::<Vec<_>>()
        };
        let mut subscriptions = Vec::with_capacity(to_subscribe.len());
        for (spec, handler) in to_subscribe {
            let name = spec.handler.clone();
            match bus.subscribe(spec, handler).await {
                Ok(subscription) => subscriptions.push((name, subscription)),
                Err(e) => {
                    tracing::error!(handler = %name, "subscription failed, start abandoned: {e}");
                    // Shutting the bus down stops the subscriptions made so far.
                    let _ = bus.shutdown().await;
                    return Err(e.into());
                }
            }
        }
        let mut shared = self.shared();
        for (name, subscription) in subscriptions {
            if let Some(entry) = shared.registry.get_mut(&name) {
                entry.subscription = Some(subscription);
            }
        }
        if !self.components.is_empty() {
            let (stop, stopped) = watch::channel(false);
            let supervised = self
                .components
                .iter()
                .map(|c| Supervised::start(c.clone(), bus.clone(), stopped.clone()))
                .collect();
            shared.running = Some((stop, supervised));
        }
        shared.bus = Some(bus);
        shared.started_at = Some(OffsetDateTime::now_utc());
        shared.warnings = report.warnings;
        shared.state = ManagerState::Running;
        tracing::info!(
            backend = capabilities.backend,
            handlers = shared.registry.len(),
            "event bus manager started"
        );
        Ok(())
    }

    /// [`start`](Self::start), trying again after transient failures (a backend not up yet)
    /// up to `attempts` times in all, waiting by the configuration's retry policy
    /// (`EVENT_RETRY_BASE_MS`, `EVENT_RETRY_MAX_MS`) between tries.
    ///
    /// # Errors
    /// The last failure, or the first that is not transient.
    pub async fn start_with_retries(&self, attempts: u32) -> Result<(), Error> {
        let policy = self.settings.bus.retry_policy();
        let mut attempt = 1;
        loop {
            match self.start().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < attempts.max(1) => {
                    let delay = policy.delay(attempt);
                    tracing::warn!(attempt, ?delay, "event bus start failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops delivery, lets in-flight handlers finish (bounded by
    /// `EVENT_SHUTDOWN_TIMEOUT_MS`), acknowledges what finished and disconnects. The
    /// application's handlers stay registered for the next [`start`](Self::start). Does
    /// nothing when not running.
    ///
    /// # Errors
    /// [`Error::Bus`] when the backend failed to release its resources; the manager is
    /// stopped anyway.
    pub async fn stop(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let (bus, running) = {
            let mut shared = self.shared();
            if shared.state != ManagerState::Running {
                return Ok(());
            }
            shared.state = ManagerState::Stopping;
            (shared.bus.clone(), shared.running.take())
        };
        // The components first: they use the bus.
        if let Some((stop, supervised)) = running {
            let _ = stop.send(true);
            for s in supervised {
                s.join(self.settings.bus.shutdown_timeout).await;
            }
        }
        let result = match bus {
            Some(bus) => bus.shutdown().await,
            None => Ok(()),
        };
        let mut shared = self.shared();
        for entry in shared.registry.values_mut() {
            entry.subscription = None;
        }
        shared.bus = None;
        shared.started_at = None;
        shared.state = ManagerState::Stopped;
        tracing::info!("event bus manager stopped");
        result.map_err(Into::into)
    }

    /// Registers an application handler; while running it is subscribed at once.
    ///
    /// # Errors
    /// [`Error::DuplicateHandler`], or [`Error::Bus`] for an invalid spec or a
    /// failed subscription (then nothing is registered).
    pub async fn register_handler(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let name = spec.handler.clone();
        let (bus, spec, handler) = {
            let mut shared = self.shared();
            insert_custom(&mut shared.registry, spec, handler)?;
            let entry = &shared.registry[&name];
            (
                shared.bus.clone(),
                entry.spec.clone(),
                entry.handler.clone(),
            )
        };
        let Some(bus) = bus else {
            return Ok(());
        };
        match bus.subscribe(spec, handler).await {
            Ok(subscription) => {
                if let Some(entry) = self.shared().registry.get_mut(&name) {
                    entry.subscription = Some(subscription);
                }
                Ok(())
            }
            Err(e) => {
                self.shared().registry.remove(&name);
                Err(e.into())
            }
        }
    }

    /// Removes a handler: unsubscribes it for real (in-flight events finish first; what it has
    /// not acknowledged stays with its consumer group) and forgets it. A domain handler comes
    /// back at the next start if the configuration still selects it.
    ///
    /// # Errors
    /// [`Error::UnknownHandler`], or [`Error::Bus`] if unsubscribing failed (the
    /// handler is forgotten anyway).
    pub async fn remove_handler(&self, name: &str) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let entry = self
            .shared()
            .registry
            .remove(name)
            .ok_or_else(|| Error::UnknownHandler(name.to_string()))?;
        if let Some(subscription) = entry.subscription {
            subscription.unsubscribe().await?;
        }
        tracing::info!(handler = name, "handler removed");
        Ok(())
    }

    /// Whether a handler is registered and, while running, subscribed.
    pub fn is_subscribed(&self, name: &str) -> bool {
        self.shared()
            .registry
            .get(name)
            .and_then(|e| e.subscription.as_ref())
            .is_some_and(|s| s.is_active())
    }

    /// Snapshot of each handler's registration: spec, origin, rate, for stats.
    pub(crate) fn registrations(&self) -> Vec<Registration> {
        self.shared()
            .registry
            .iter()
            .map(|(name, e)| Registration {
                name: name.clone(),
                event_types: e.spec.event_types.iter().map(|t| t.to_string()).collect(),
                origin: e.origin,
                events_per_second: e.meter.per_second(),
                subscribed: e.subscription.as_ref().is_some_and(|s| s.is_active()),
                has_view: e.view.is_some(),
            })
            .collect()
    }

    /// The uptime of the running bus.
    pub(crate) fn uptime(&self) -> Option<Duration> {
        self.started_at().map(|at| {
            (OffsetDateTime::now_utc() - at)
                .try_into()
                .unwrap_or_default()
        })
    }
}

/// A handler's registration, as stats show it.
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    pub(crate) name: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) origin: HandlerOrigin,
    pub(crate) events_per_second: f64,
    pub(crate) subscribed: bool,
    pub(crate) has_view: bool,
}
