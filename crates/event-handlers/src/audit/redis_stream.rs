//! The Redis stream sink: each event one `XADD {stream} MAXLEN ~ {max_len} *` entry with the
//! fields `id`, `type`, `audited_at` and `event` (the envelope JSON). The stream's own entry
//! ids order the trail; `MAXLEN ~` bounds it.

use event_core::{Error, Event, redact_url};
use fred::prelude::{Client, StreamsInterface};

use crate::redis_client;

const WHAT: &str = "audit stream";

pub(super) struct RedisStreamWriter {
    client: Client,
    url: String,
    stream: String,
    max_len: u64,
    /// Connected on the first append: `build` is synchronous.
    connected: tokio::sync::OnceCell<()>,
}

impl RedisStreamWriter {
    /// A writer for `stream` at `url`; the URL is checked now, the connection made by the
    /// first append.
    pub(super) fn open(url: &str, stream: &str, max_len: u64) -> Result<Self, crate::Error> {
        let client = redis_client::build(url, WHAT).map_err(|e| crate::Error::Audit {
            location: redact_url(url),
            message: format!("{e}; check EVENT_AUDIT_REDIS_URL"),
            source: Some(Box::new(e)),
        })?;
        Ok(Self {
            client,
            url: url.to_owned(),
            stream: stream.to_owned(),
            max_len: max_len.max(1),
            connected: tokio::sync::OnceCell::new(),
        })
    }

    /// Where entries go, without the password.
    pub(super) fn location(&self) -> String {
        format!("stream {} at {}", self.stream, redact_url(&self.url))
    }

    pub(super) fn max_len(&self) -> u64 {
        self.max_len
    }

    /// Appends one event.
    pub(super) async fn append(
        &self,
        event: &Event,
        audited_at: &str,
        json: &str,
    ) -> Result<(), Error> {
        self.connected
            .get_or_try_init(|| redis_client::connect(&self.client, &self.url, WHAT))
            .await?;
        let max_len = i64::try_from(self.max_len).unwrap_or(i64::MAX);
        let _: String = self
            .client
            .xadd(
                self.stream.as_str(),
                false,
                ("MAXLEN", "~", max_len),
                "*",
                vec![
                    ("id", event.id.to_string()),
                    ("type", event.event_type.as_str().to_owned()),
                    ("audited_at", audited_at.to_owned()),
                    ("event", json.to_owned()),
                ],
            )
            .await
            .map_err(|e| redis_client::backend(&self.url, WHAT, "XADD", &e))?;
        Ok(())
    }
}
