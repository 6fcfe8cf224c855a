//! Entries written by other producers into the event streams: non-UTF-8 field names and values,
//! a missing, empty or binary `event` field, extra fields. Mixed among thousands of events of
//! two types, some of them first read by a consumer that then "crashed" (so they are taken
//! over with `XCLAIM`): every valid event is handled once, every foreign entry is
//! dead-lettered once with its raw fields, nothing stays pending, and replay still works.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use common::{Scenario, Seen, exactly_once, numbered, publish_all, recording, secs, wait_until};
use event_core::{
    DeadLetterReason, EventBus, EventId, EventType, HandlerError, ReplayQuery, StartFrom,
    SubscriptionSpec,
};
use fred::prelude::{ClientLike, StreamsInterface};
use fred::types::Value;
use futures::TryStreamExt as _;
use time::OffsetDateTime;

/// Valid events published per type (in batches of 150, with foreign entries in between).
const VALID_PER_TYPE: u64 = 1500;
/// Entries the "crashed" consumer reads from each stream before the bus subscribes.
const CRASHED_READS: u64 = 250;

/// The kinds of foreign entry, by the fields they have (each also gets a `marker`).
fn foreign_fields(kind: usize) -> Vec<(&'static [u8], &'static [u8])> {
    match kind % 6 {
        // A field name that is not UTF-8: this failed the whole reply before.
        0 => vec![(b"\xff\xfename", b"x")],
        // No `event` field.
        1 => vec![(b"type", b"some.thing")],
        // A binary `event`.
        2 => vec![(b"event", b"\x00\x9f\x92\x96\xff")],
        // Text that is not JSON.
        3 => vec![(b"event", b"hello")],
        // An empty `event`.
        4 => vec![(b"event", b"")],
        // Name and value both binary.
        _ => vec![(b"\xc3\x28", b"\xa0\xa1")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_entries_are_dead_lettered_once_and_block_nothing() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-foreign").await? else {
        return Ok(());
    };
    scenario.run(foreign_entries_scenario).await
}

async fn foreign_entries_scenario(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.claim_idle = Duration::from_millis(500);
    let handler = format!("foreign{:08x}", fastrand::u32(..));
    let group = sc.group(&config, &handler);
    let types = [sc.event_type("one"), sc.event_type("two")];
    let streams: Vec<String> = types.iter().map(|t| sc.stream(t)).collect();
    for stream in &streams {
        let _: Value = sc
            .admin
            .custom(
                fred::cmd!("XGROUP"),
                vec!["CREATE", stream.as_str(), group.as_str(), "0", "MKSTREAM"],
            )
            .await?;
    }
    let bus = config.connect().await?;

    // The backlog: foreign entries first (so the crashed consumer reads some), then valid
    // events in batches with foreign entries and valid-but-unusual entries in between.
    let mut valid: Vec<EventId> = Vec::new();
    let mut markers: Vec<String> = Vec::new();
    // Each foreign entry's stream and id, by marker.
    let mut origins: HashMap<String, (String, String)> = HashMap::new();
    let mut kind = 0;
    for (t, event_type) in types.iter().enumerate() {
        let mut foreign = async |markers: &mut Vec<String>,
                                 origins: &mut HashMap<String, (String, String)>|
               -> anyhow::Result<()> {
            let marker = format!("foreign-{t}-{kind}");
            let mut fields = foreign_fields(kind);
            fields.push((b"marker", marker.as_bytes()));
            let id = sc.raw_xadd(&streams[t], "*", &fields).await?;
            origins.insert(marker.clone(), (streams[t].clone(), id));
            markers.push(marker);
            kind += 1;
            Ok(())
        };
        for _ in 0..6 {
            foreign(&mut markers, &mut origins).await?;
        }
        for chunk in 0..VALID_PER_TYPE / 150 {
            let events = (chunk * 150..(chunk + 1) * 150)
                .map(|n| numbered(event_type, n, Some(&format!("k{}", n % 13))))
                .collect();
            valid.extend(publish_all(&bus, events).await?);
            foreign(&mut markers, &mut origins).await?;
            foreign(&mut markers, &mut origins).await?;
            valid.push(valid_with_extra_binary_field(sc, event_type, chunk).await?);
        }
    }

    // A consumer of the group reads some of each stream and dies without acknowledging.
    let _: Value = sc
        .admin
        .custom(
            fred::cmd!("XREADGROUP"),
            vec![
                "GROUP".into(),
                group.clone(),
                "crashed-consumer".into(),
                "COUNT".into(),
                CRASHED_READS.to_string(),
                "STREAMS".into(),
                streams[0].clone(),
                streams[1].clone(),
                ">".into(),
                ">".into(),
            ],
        )
        .await?;

    let seen = Arc::new(Seen::default());
    let handler_fn = recording(&handler, seen.clone(), |_| async {
        Ok::<(), HandlerError>(())
    });
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), types.clone()).start_from(StartFrom::Earliest),
        handler_fn,
    )
    .await?;

    let dlq = sc.dead_letters(&group);
    wait_until(
        "every valid event handled and every foreign entry dead-lettered, nothing pending",
        secs(90),
        async || {
            let handled = seen.distinct();
            let dead = sc.xlen(&dlq).await?;
            let pending =
                sc.pending(&streams[0], &group).await? + sc.pending(&streams[1], &group).await?;
            Ok(
                (handled < valid.len() || dead < markers.len() as u64 || pending > 0).then(|| {
                    format!(
                        "{handled} of {} handled, {dead} of {} dead letters, {pending} pending",
                        valid.len(),
                        markers.len()
                    )
                }),
            )
        },
    )
    .await?;
    exactly_once(&seen, &valid)?;

    let letters = bus.dead_letters(&handler, 10_000).await?;
    ensure!(
        letters.len() == markers.len(),
        "{} dead letters for {} foreign entries",
        letters.len(),
        markers.len()
    );
    let mut by_marker: HashMap<&str, usize> = HashMap::new();
    for letter in &letters {
        ensure!(
            letter.reason == DeadLetterReason::InvalidEnvelope && letter.event.is_none(),
            "unexpected dead letter {letter:?}"
        );
        let raw = letter.raw.as_deref().unwrap_or_default();
        let marker = markers
            .iter()
            .find(|m| {
                raw.split(' ')
                    .any(|pair| pair.strip_prefix("marker=") == Some(m.as_str()))
            })
            .ok_or_else(|| anyhow::anyhow!("a dead letter without its raw fields: {raw:?}"))?;
        *by_marker.entry(marker.as_str()).or_default() += 1;
        // The error says which entry of which stream it was.
        let (stream, id) = &origins[marker];
        ensure!(
            letter
                .last_error
                .ends_with(&format!("(entry {id} of {stream})")),
            "the dead letter of {marker} does not name its entry {id} of {stream}: {}",
            letter.last_error
        );
    }
    // And so does the dead-letter entry, in fields of its own.
    let entries: Vec<(String, HashMap<String, String>)> =
        sc.admin.xrange(dlq.as_str(), "-", "+", None).await?;
    let mut found: Vec<(String, String)> = entries
        .iter()
        .map(|(_, fields)| {
            let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
            (field("original_stream"), field("original_id"))
        })
        .collect();
    let mut expected_origins: Vec<(String, String)> = origins.values().cloned().collect();
    found.sort_unstable();
    expected_origins.sort_unstable();
    ensure!(
        found == expected_origins,
        "the dead-letter entries' original_stream and original_id are not the foreign entries' \
         streams and ids: {found:?}"
    );
    ensure!(
        by_marker.len() == markers.len() && by_marker.values().all(|n| *n == 1),
        "each foreign entry must be dead-lettered exactly once: {by_marker:?}"
    );
    // The non-UTF-8 name `\xff\xfe` + `name` keeps its bytes (base64 `//5uYW1l`).
    ensure!(
        letters
            .iter()
            .any(|l| l.raw.as_deref().unwrap_or_default().contains("//5uYW1l")),
        "the non-UTF-8 field name is not preserved in any dead letter"
    );

    // Replay reads both streams past the foreign entries.
    let replayed: Vec<_> = bus
        .replay(ReplayQuery::new(types.clone(), OffsetDateTime::UNIX_EPOCH))
        .await?
        .try_collect()
        .await?;
    let mut replayed_ids: Vec<EventId> = replayed.iter().map(|e| e.id).collect();
    replayed_ids.sort_unstable();
    let mut expected = valid.clone();
    expected.sort_unstable();
    ensure!(
        replayed_ids == expected,
        "replay returned {} events, {} expected",
        replayed_ids.len(),
        expected.len()
    );
    eprintln!(
        "{} valid events handled once, {} foreign entries dead-lettered once, replay of {} events",
        valid.len(),
        markers.len(),
        replayed.len()
    );
    bus.shutdown().await?;
    Ok(())
}

/// A valid event written with an extra field whose name and value are binary: it is an event
/// like any other.
async fn valid_with_extra_binary_field(
    sc: &Scenario,
    event_type: &EventType,
    n: u64,
) -> anyhow::Result<EventId> {
    let event = numbered(event_type, 1_000_000 + n, Some("extra"));
    let json = serde_json::to_vec(&event)?;
    sc.raw_xadd(
        &sc.stream(event_type),
        "*",
        &[(b"\xfe\xff", b"\x00\x01"), (b"event", &json)],
    )
    .await?;
    Ok(event.id)
}
