//! The seed's module-level entry points over the one process-wide manager.
//!
//! The application builds a manager and [`install`]s it once; the functions here use it.
//! Before that they fail with [`Error::NotInstalled`]: nothing is ever created behind
//! the application's back (the original had two competing singletons, one ignoring the
//! configuration).

use std::future::Future;
use std::sync::{Arc, RwLock};

use event_core::{EventBus, EventHandler, EventId, EventType, SubscriptionSpec};
use event_publishers::EventPublisher;
use serde::Serialize;

use crate::{Error, EventBusManager};

static INSTALLED: RwLock<Option<Arc<EventBusManager>>> = RwLock::new(None);

/// Makes `manager` the process-wide manager that the functions of this module use.
///
/// # Errors
/// [`Error::AlreadyInstalled`] when one is installed: there is only ever one.
pub fn install(manager: Arc<EventBusManager>) -> Result<(), Error> {
    let mut slot = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(Error::AlreadyInstalled);
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
/// [`Error::NotInstalled`].
pub fn get_event_bus_manager() -> Result<Arc<EventBusManager>, Error> {
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(Error::NotInstalled)
}

/// The process-wide manager's running bus.
///
/// # Errors
/// [`Error::NotInstalled`], or [`Error::NotRunning`].
pub fn get_event_bus() -> Result<Arc<dyn EventBus>, Error> {
    get_event_bus_manager()?.bus()
}

/// Publishes one event on the process-wide bus (the seed's `publish_event`), through
/// `event_publishers::EventPublisher`: a payload of a typed event is validated (nothing is
/// published when a field is wrong), and the metadata `publisher_source` and `published_at`
/// are added. Without a correlation id the event gets a new one.
///
/// # Errors
/// [`Error::NotInstalled`], [`Error::NotRunning`], [`Error::Publish`]
/// for an invalid payload (naming the field), or the bus's error.
pub async fn publish_event(
    event_type: EventType,
    payload: impl Serialize,
    source: &str,
    correlation_id: Option<&str>,
) -> Result<EventId, Error> {
    let bus = get_event_bus()?;
    let payload = match serde_json::to_value(payload) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return Err(event_core::Error::InvalidEvent {
                reason: "payload must be a JSON object".into(),
            }
            .into());
        }
        Err(e) => {
            return Err(event_core::Error::InvalidEvent {
                reason: format!("payload cannot be serialized to JSON: {e}"),
            }
            .into());
        }
    };
    let mut publisher = EventPublisher::new(bus, source);
    if let Some(id) = correlation_id {
        publisher = publisher.for_request(id);
    }
    publisher
        .publish_json(event_type, payload, None)
        .await
        .map_err(|e| match e {
            event_publishers::Error::Bus(e) => Error::Bus(e),
            other => Error::Publish(other),
        })
}

/// Registers `handler` for `event_types` with the process-wide manager (the seed's
/// `subscribe_to_events`); the handler's name names its consumer group.
///
/// # Errors
/// [`Error::NotInstalled`], [`Error::DuplicateHandler`], or a failed
/// subscription.
pub async fn subscribe_to_events(
    event_types: impl IntoIterator<Item = EventType>,
    handler: Arc<dyn EventHandler>,
) -> Result<(), Error> {
    let spec = SubscriptionSpec::new(handler.name().to_string(), event_types);
    get_event_bus_manager()?
        .register_handler(spec, handler)
        .await
}

/// Installs `manager`, starts it, runs `body`, stops it and uninstalls it (the seed's
/// `event_bus_lifespan`): inside the body the module-level functions work.
///
/// # Errors
/// [`Error::AlreadyInstalled`], a failed start, the body's error or a failed stop.
pub async fn event_bus_lifespan<T, E, F, Fut>(manager: EventBusManager, body: F) -> Result<T, E>
where
    F: FnOnce(Arc<EventBusManager>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    let manager = Arc::new(manager);
    install(manager.clone())?;
    let result = manager.scoped(body).await;
    // Only ours: another may not have been installed meanwhile, since install refuses.
    uninstall();
    result
}
