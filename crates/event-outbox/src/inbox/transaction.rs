//! [`InboxTransaction`]: the transaction an inbox handler writes in, and publishes through.

use event_core::{Event, EventId};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::{Outbox, OutboxError};

/// The transaction an [`InboxHandler`](crate::InboxHandler) gives its handler. It already
/// holds the record "this handler handled this event"; the handler's writes and the events it
/// publishes commit with it, or not at all.
#[derive(Debug)]
pub struct InboxTransaction {
    pub(super) tx: Transaction<'static, Postgres>,
    pub(super) outbox: Outbox,
    pub(super) published: usize,
}

impl InboxTransaction {
    /// The connection to run the handler's statements on:
    /// `sqlx::query(...).execute(tx.connection())`.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Adds `events` to the outbox in this transaction: they are published after it commits,
    /// and never if the handler fails.
    ///
    /// # Errors
    /// As [`Outbox::add`].
    pub async fn publish(
        &mut self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<Vec<EventId>, OutboxError> {
        let ids = self.outbox.add(&mut self.tx, events).await?;
        self.published += ids.len();
        Ok(ids)
    }

    /// How many events the handler published so far in this transaction.
    pub fn published(&self) -> usize {
        self.published
    }
}
