//! The seed's module-level entry points over the one process-wide manager.
//!
//! The application builds a manager and [`install`]s it once; the functions here use it.
//! Before that they fail with [`ManagerError::NotInstalled`]: nothing is ever created behind
//! the application's back (the original had two competing singletons, one ignoring the
//! configuration).

use std::future::Future;
use std::sync::{Arc, RwLock};

use event_core::{Event, EventBus, EventHandler, EventId, EventType, SubscriptionSpec};
use serde::Serialize;

use crate::{EventBusManager, ManagerError};

static INSTALLED: RwLock<Option<Arc<EventBusManager>>> = RwLock::new(None);

/// Makes `manager` the process-wide manager that the functions of this module use.
///
/// # Errors
/// [`ManagerError::AlreadyInstalled`] when one is installed: there is only ever one.
pub fn install(manager: Arc<EventBusManager>) -> Result<(), ManagerError> {
    let mut slot = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(ManagerError::AlreadyInstalled);
    }
    *slot = Some(manager);
    Ok(())
}

/// Removes the process-wide manager and returns it (it is not stopped).
pub fn uninstall() -> Option<Arc<EventBusManager>> {
    INSTALLED.write().unwrap_or_else(|e| e.into_inner()).take()
}

/// The process-wide manager.
///
/// # Errors
/// [`ManagerError::NotInstalled`].
pub fn get_event_bus_manager() -> Result<Arc<EventBusManager>, ManagerError> {
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(ManagerError::NotInstalled)
}

/// The process-wide manager's running bus.
///
/// # Errors
/// [`ManagerError::NotInstalled`], or [`ManagerError::NotRunning`].
pub fn get_event_bus() -> Result<Arc<dyn EventBus>, ManagerError> {
    get_event_bus_manager()?.bus()
}

/// Publishes one event on the process-wide bus (the seed's `publish_event`).
///
/// # Errors
/// [`ManagerError::NotInstalled`], [`ManagerError::NotRunning`], or the bus's error (an
/// invalid payload, an event too large, the backend unreachable).
pub async fn publish_event(
    event_type: EventType,
    payload: impl Serialize,
    source: &str,
    correlation_id: Option<&str>,
) -> Result<EventId, ManagerError> {
    let bus = get_event_bus()?;
    let mut builder = Event::builder(event_type, source).payload(payload);
    if let Some(id) = correlation_id {
        builder = builder.correlation_id(id);
    }
    Ok(bus.publish(builder.build()?).await?)
}

/// Registers `handler` for `event_types` with the process-wide manager (the seed's
/// `subscribe_to_events`); the handler's name names its consumer group.
///
/// # Errors
/// [`ManagerError::NotInstalled`], [`ManagerError::DuplicateHandler`], or a failed
/// subscription.
pub async fn subscribe_to_events(
    event_types: impl IntoIterator<Item = EventType>,
    handler: Arc<dyn EventHandler>,
) -> Result<(), ManagerError> {
    let spec = SubscriptionSpec::new(handler.name().to_string(), event_types);
    get_event_bus_manager()?
        .register_handler(spec, handler)
        .await
}

/// Installs `manager`, starts it, runs `body`, stops it and uninstalls it (the seed's
/// `event_bus_lifespan`): inside the body the module-level functions work.
///
/// # Errors
/// [`ManagerError::AlreadyInstalled`], a failed start, the body's error or a failed stop.
pub async fn event_bus_lifespan<T, E, F, Fut>(manager: EventBusManager, body: F) -> Result<T, E>
where
    F: FnOnce(Arc<EventBusManager>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<ManagerError>,
{
    let manager = Arc::new(manager);
    install(manager.clone())?;
    let result = manager.scoped(body).await;
    // Only ours: another may not have been installed meanwhile, since install refuses.
    uninstall();
    result
}
