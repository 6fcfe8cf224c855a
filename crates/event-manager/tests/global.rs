//! The module-level entry points over the one process-wide manager. One test: the installed
//! manager is process-wide state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use event_core::{EventType, HandlerError, handler_fn};
use event_manager::{
    EventBusManager, Settings, event_bus_lifespan, get_event_bus, get_event_bus_manager, install,
    publish_event, subscribe_to_events, uninstall,
};
use serde_json::json;

fn manager() -> EventBusManager {
    let mut config = Settings::default();
    config.enable_event_handlers = false;
    EventBusManager::builder(config).build().unwrap()
}

#[tokio::test]
async fn module_functions_use_the_installed_manager_and_nothing_else() -> anyhow::Result<()> {
    // Before install: a clear error, and no hidden instance is created.
    assert!(matches!(
        get_event_bus_manager(),
        Err(event_manager::Error::NotInstalled)
    ));
    assert!(matches!(
        get_event_bus(),
        Err(event_manager::Error::NotInstalled)
    ));
    let err = publish_event(EventType::USER_REGISTERED, json!({}), "test", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("install"), "{err}");
    assert!(matches!(
        get_event_bus_manager(),
        Err(event_manager::Error::NotInstalled)
    ));

    // Installed but not started.
    let first = Arc::new(manager());
    install(first.clone())?;
    assert!(matches!(
        install(Arc::new(manager())),
        Err(event_manager::Error::AlreadyInstalled)
    ));
    assert!(Arc::ptr_eq(&get_event_bus_manager()?, &first));
    assert!(matches!(
        get_event_bus(),
        Err(event_manager::Error::NotRunning)
    ));

    first.start().await?;
    let seen = Arc::new(AtomicU64::new(0));
    subscribe_to_events(
        [EventType::OPPORTUNITY_CREATED],
        handler_fn("catalogue", {
            let seen = seen.clone();
            move |event| {
                let seen = seen.clone();
                async move {
                    assert_eq!(event.correlation_id.as_deref(), Some("req-456"));
                    seen.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                }
            }
        }),
    )
    .await?;
    publish_event(
        EventType::OPPORTUNITY_CREATED,
        json!({"opportunity_id": "opp-123", "title": "AI-Powered Customer Service",
               "description": "Automated customer support using NLP", "ai_solution_type": "nlp"}),
        "opportunity_service",
        Some("req-456"),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) == 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("the subscribed handler never saw the event");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first.handler_names(), ["catalogue"]);
    // Typed payloads are validated as the publishers validate them: nothing is published.
    let err = publish_event(
        EventType::OPPORTUNITY_CREATED,
        json!({"opportunity_id": "opp-124"}),
        "opportunity_service",
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, event_manager::Error::Publish(_)), "{err}");
    assert!(err.to_string().contains("`title`"), "{err}");
    assert_eq!(first.stats().await?.total_events, 1);
    first.stop().await?;
    assert!(Arc::ptr_eq(&uninstall().unwrap(), &first));
    assert!(matches!(
        get_event_bus(),
        Err(event_manager::Error::NotInstalled)
    ));

    // The lifespan form installs, starts, stops and uninstalls.
    let id = event_bus_lifespan(manager(), |m| async move {
        assert!(Arc::ptr_eq(&get_event_bus_manager()?, &m));
        publish_event(
            EventType::SYSTEM_HEALTH_CHECK,
            json!({"component": "api", "status": "healthy"}),
            "t",
            None,
        )
        .await
    })
    .await?;
    let _ = id;
    assert!(matches!(
        get_event_bus_manager(),
        Err(event_manager::Error::NotInstalled)
    ));
    Ok(())
}
