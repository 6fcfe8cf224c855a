//! Payload encryption as a foreign reader of the Redis server sees it: with
//! `ENABLE_EVENT_ENCRYPTION=true`, no key under the bus's prefix (event streams, dead letters,
//! aggregate streams, redrive streams) holds a payload's plaintext, while the routing fields
//! (`id`, `type`, `key`) stay readable and every event reaches its handler, replay, the dead
//! letters and the aggregate's history unchanged.

mod common;

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use common::{Scenario, Seen, recording, secs};
use event_core::encryption::{EncryptionKeys, KEY_ID_FIELD};
use event_core::{
    AggregateAppend, Event, EventBus, EventType, ExpectedVersion, HandlerError, ReplayQuery,
    StartFrom, SubscriptionSpec,
};
use fred::prelude::{ClientLike, StreamsInterface};
use fred::types::Value;
use futures::TryStreamExt as _;
use serde_json::json;

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// What every payload holds and nothing at rest may show.
const SECRET: &str = "s3cret-payload";
const EVENTS: u64 = 400;

fn event(event_type: &EventType, n: u64) -> Event {
    Event::builder(event_type.clone(), common::SOURCE)
        .payload(json!({"n": n, "card": format!("{SECRET}-{n}"), "fail": n == 7}))
        .partition_key(format!("k{}", n % 8))
        .build()
        .expect("a valid event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_at_rest_shows_a_payload() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-encrypt").await? else {
        return Ok(());
    };
    scenario.run(at_rest).await
}

async fn at_rest(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.encryption_keys = Some(EncryptionKeys::parse(KEYS).map_err(anyhow::Error::msg)?);
    config.bus.encrypt_payloads = true;
    config.bus.max_retries = 0;
    let bus = config.connect().await?;
    let types = [sc.event_type("paid"), sc.event_type("refunded")];
    let events: Vec<Event> = (0..EVENTS)
        .flat_map(|n| types.iter().map(move |t| event(t, n)))
        .collect();
    for chunk in events.chunks(150) {
        for id in bus.publish_batch(chunk.to_vec()).await {
            id?;
        }
    }
    let history = (0..3)
        .map(|n| event(&types[0], 1000 + n))
        .collect::<Vec<_>>();
    let append = AggregateAppend::new("card", "c-1", ExpectedVersion::Exact(0), history.clone());
    bus.append_to_aggregate(append).await?;

    let seen = Arc::new(Seen::default());
    let handler = recording("settle", seen.clone(), |e: Arc<Event>| async move {
        if e.payload["fail"] == json!(true) {
            Err(HandlerError::permanent("refused"))
        } else {
            Ok(())
        }
    });
    let spec = SubscriptionSpec::new("settle", types.clone()).start_from(StartFrom::Earliest);
    let _subscription = bus.subscribe(spec, handler).await?;
    // Every event of the backlog, the history's three, and the two failing ones (n = 7).
    let total = events.len() + history.len();
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    let group = sc.group(&config, "settle");
    sc.wait_all_handled(&seen, total, &streams, &group, secs(60))
        .await?;
    for got in seen.all() {
        ensure!(
            got.payload["card"]
                .as_str()
                .is_some_and(|c| c.starts_with(SECRET)),
            "a handler got a payload it cannot read: {got:?}"
        );
    }
    let letters = bus.dead_letters("settle", 10).await?;
    ensure!(
        letters.len() == 2
            && letters
                .iter()
                .all(|l| l.event.as_ref().is_some_and(|e| e.payload["n"] == json!(7))),
        "the dead letters do not hold the plaintext events: {letters:?}"
    );
    let replayed: Vec<Event> = bus
        .replay(ReplayQuery::new(types.clone(), events[0].timestamp))
        .await?
        .try_collect()
        .await?;
    ensure!(
        replayed.len() == total,
        "replay returned {} events",
        replayed.len()
    );
    let loaded = bus.load_aggregate("card", "c-1").await?;
    ensure!(
        loaded
            .iter()
            .map(|e| &e.payload)
            .eq(history.iter().map(|e| &e.payload)),
        "the aggregate's history does not load as appended"
    );

    // As a foreign reader: the routing fields of an entry, and nowhere the plaintext.
    let first: Value = sc.admin.xrange(&streams[0], "-", "+", Some(1)).await?;
    let text = format!("{first:?}");
    ensure!(
        text.contains(&events[0].id.to_string()) && text.contains(types[0].as_str()),
        "the entry's routing fields are not readable: {text}"
    );
    let checked = every_value(sc).await?;
    ensure!(
        checked.len() >= 5,
        "only {} keys under the prefix",
        checked.len()
    );
    for (key, value) in &checked {
        ensure!(!value.contains(SECRET), "{key} holds a plaintext payload");
    }
    let stored = checked
        .iter()
        .find(|(key, _)| key == &streams[0])
        .context("the stream was not scanned")?;
    ensure!(
        stored.1.contains("ciphertext") && stored.1.contains(KEY_ID_FIELD),
        "the stream holds no sealed payload"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Every key under the scenario's prefix with its content as text (streams with `XRANGE`,
/// other types with `DUMP`, whose serialization holds the bytes as stored).
async fn every_value(sc: &Scenario) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let reply: Value = sc
            .admin
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor,
                    "MATCH".into(),
                    format!("{}:*", sc.prefix),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        cursor = parts
            .next()
            .and_then(|c| c.as_string())
            .context("SCAN cursor")?;
        for key in parts.next().map(Value::into_array).unwrap_or_default() {
            let key = key.as_string().context("a key")?;
            let kind: String = sc
                .admin
                .custom(fred::cmd!("TYPE"), vec![key.clone()])
                .await?;
            let value: Value = if kind == "stream" {
                sc.admin.xrange(&key, "-", "+", None::<u64>).await?
            } else {
                sc.admin
                    .custom(fred::cmd!("DUMP"), vec![key.clone()])
                    .await?
            };
            out.push((key, lossy(&value)));
        }
        if cursor == "0" {
            return Ok(out);
        }
    }
}

fn lossy(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::String(s) => s.to_string(),
        Value::Array(items) => items.iter().map(lossy).collect::<Vec<_>>().join(" "),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| format!("{k:?}={}", lossy(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}
