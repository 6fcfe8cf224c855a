//! TEMPORARY stand-in for `event_publishers::BatchPublisher` until it lands in main.

use std::sync::Mutex;

use event_core::{Config, Event};
use event_publishers::{DomainEvent, EventPublisher};

pub(crate) struct BatchSettings(usize);

impl BatchSettings {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self(config.batch_size)
    }
}

pub(crate) struct FailedEvent {
    pub(crate) error: event_core::Error,
}

pub(crate) struct FlushReport {
    pub(crate) failed: Vec<FailedEvent>,
}

pub(crate) struct BatchPublisher {
    publisher: EventPublisher,
    size: usize,
    buffer: Mutex<Vec<Event>>,
    failed: Mutex<Vec<FailedEvent>>,
}

impl BatchPublisher {
    pub(crate) fn new(publisher: EventPublisher, settings: BatchSettings) -> Self {
        Self {
            publisher,
            size: settings.0,
            buffer: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    pub(crate) async fn add<P: DomainEvent>(
        &self,
        payload: P,
    ) -> Result<(), event_publishers::Error> {
        let event = self.publisher.event(payload)?;
        let full = {
            let mut b = self.buffer.lock().unwrap();
            b.push(event);
            (b.len() >= self.size).then(|| std::mem::take(&mut *b))
        };
        if let Some(events) = full {
            self.send(events).await;
        }
        Ok(())
    }

    async fn send(&self, events: Vec<Event>) {
        for r in self.publisher.bus().publish_batch(events).await {
            if let Err(error) = r {
                self.failed.lock().unwrap().push(FailedEvent { error });
            }
        }
    }

    pub(crate) async fn close(self) -> FlushReport {
        let events = std::mem::take(&mut *self.buffer.lock().unwrap());
        self.send(events).await;
        FlushReport {
            failed: std::mem::take(&mut *self.failed.lock().unwrap()),
        }
    }
}
