//! A user's trial of the Kafka backend with a production-sized workload: three event types,
//! handler `a` on types one and two, handler `b` on two and three, each group run by three
//! processes (buses on runtimes of their own: one joins late, one is cut off mid-run without
//! `shutdown`, as a killed process is), a backlog bigger than a fetch (1 MiB) and a batch per
//! partition published before they subscribe and more while they run, per-key order checked,
//! and records another Kafka application writes mid-stream (Kafka's Java producer and console
//! producer): without headers, with a null key, tombstones, text and JSON that is no envelope,
//! batches compressed with gzip, snappy and zstd, a committed and an aborted transaction. At
//! the end every event is handled by each of its handlers, each foreign record is accounted for
//! as `docs/kafka.md` says (and an envelope of another type in a topic is dead-lettered), stats
//! show lag 0 and the dead letters, health is healthy and no consumer loop was restarted.
//! Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`) with Kafka's jars
//! (`EVENTBUS_TEST_KAFKA_CLASSPATH`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{
    DeadLetterReason, Event, EventBus, EventHandler, EventId, EventType, HandlerError,
    HealthStatus, StartFrom, SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;
use support::{Settings, kafka_script, send_event};
use tokio::runtime::Runtime;

/// Events of each type in the backlog: over 1,600 records of about 1.1 KB in each of the three
/// partitions, more than a fetch (1 MiB, of compressed batches: the padding is random) and
/// many batches (`EVENT_BATCH_SIZE`, 100).
const BACKLOG: usize = 5_000;
/// Events of each type published while the third process joins.
const LIVE: usize = 500;
/// Events of each type published as the second process is killed.
const KILLED_ROUND: usize = 2_000;
/// Partition keys of each type.
const KEYS: usize = 40;

/// One handling: the event's id, type, partition key and sequence number within its key, and
/// the process that handled it.
type Handled = (EventId, String, Option<String>, Option<u64>, usize);

/// A handler of `process` that records every event it is given in `log`, shared by the
/// processes of its group.
fn recording(name: &str, log: &Arc<Mutex<Vec<Handled>>>, process: usize) -> Arc<dyn EventHandler> {
    let log = log.clone();
    handler_fn(name.to_string(), move |event: Arc<Event>| {
        let log = log.clone();
        async move {
            let seq = event.payload.get("seq").and_then(serde_json::Value::as_u64);
            log.lock().unwrap().push((
                event.id,
                event.event_type.to_string(),
                event.partition_key.clone(),
                seq,
                process,
            ));
            Ok::<(), HandlerError>(())
        }
    })
}

/// A consumer process: a bus on a runtime of its own, which [`Process::kill`] drops at once
/// (its tasks stop mid-call, no commit, no LeaveGroup), as SIGKILL would.
struct Process {
    runtime: Option<Runtime>,
    bus: Arc<KafkaBus>,
}

impl Process {
    async fn start(
        settings: &Settings,
        subscriptions: &[(String, Vec<EventType>, Arc<dyn EventHandler>)],
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (settings, subscriptions) = (settings.clone(), subscriptions.to_vec());
        let bus = runtime
            .spawn(async move {
                let bus = settings.connect().await?;
                for (handler, types, h) in subscriptions {
                    let spec =
                        SubscriptionSpec::new(handler, types).start_from(StartFrom::Earliest);
                    bus.subscribe(spec, h).await?;
                }
                anyhow::Ok(Arc::new(bus))
            })
            .await??;
        Ok(Self {
            runtime: Some(runtime),
            bus,
        })
    }

    /// Runs `f` on the bus, on the process's own runtime.
    async fn on<T: Send + 'static, F>(&self, f: impl FnOnce(Arc<KafkaBus>) -> F) -> T
    where
        F: Future<Output = T> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("a live process");
        runtime.spawn(f(self.bus.clone())).await.expect("no panic")
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits until `ready` holds, polling every 200 ms, for at most `within`.
async fn until<F: Future<Output = anyhow::Result<bool>>>(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while !ready().await? {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// 800 random letters and digits, which compression cannot shrink below 600 bytes.
fn padding() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(800)
        .collect()
}

/// Publishes `n` events of each type, keys `{type}-k{i}` with increasing `seq` per key,
/// continuing from `sequence`: their ids by type.
async fn publish(
    bus: &KafkaBus,
    types: &[EventType],
    n: usize,
    sequence: &mut u64,
) -> anyhow::Result<HashMap<String, Vec<EventId>>> {
    let mut ids: HashMap<String, Vec<EventId>> = HashMap::new();
    for chunk in 0..n.div_ceil(500) {
        let mut events = Vec::new();
        for i in chunk * 500..(chunk * 500 + 500).min(n) {
            let seq = *sequence + (i / KEYS) as u64;
            for t in types {
                events.push(
                    Event::builder(t.clone(), "trial")
                        .partition_key(format!("{t}-k{}", i % KEYS))
                        .field("seq", seq)
                        .field("padding", padding())
                        .build()?,
                );
            }
        }
        let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
        for (result, t) in bus.publish_batch(events).await.into_iter().zip(types) {
            ids.entry(t).or_default().push(result?);
        }
    }
    *sequence += n.div_ceil(KEYS) as u64;
    Ok(ids)
}

/// What foreign producers write, and what must come of it.
#[derive(Default)]
struct Foreign {
    /// Valid envelopes, by type (of the envelope): handled by the type's handlers.
    valid: HashMap<String, Vec<EventId>>,
    /// Keys of records that are no event, in the topic of type two: a dead letter for `a` and
    /// one for `b`.
    invalid: Vec<String>,
    /// Envelopes of a type written to another type's topic, key `misplaced-{type}`: (envelope
    /// type, topic type).
    misplaced: Vec<(String, String)>,
}

/// Writes the foreign records mid-stream: the Java producer's script (no headers, null key,
/// tombstone, text, JSON of another shape, misplaced envelopes, two transactions) and three
/// console producers (gzip, snappy, zstd), all at once.
async fn write_foreign(
    classpath: &str,
    brokers: &str,
    prefix: &str,
    types: &[EventType],
) -> anyhow::Result<Foreign> {
    let mut foreign = Foreign::default();
    let topic = |t: &EventType| format!("{prefix}.{t}");
    let two = &types[1];
    let envelope =
        |t: &EventType, key: &str| Event::builder(t.clone(), "java").partition_key(key).build();
    let mut script = String::from("PRODUCER\t-\n");
    for p in 0..3 {
        let headerless = envelope(two, &format!("headerless-{p}"))?;
        script.push_str(&send_event(&topic(two), p, &headerless)?);
        let no_key = envelope(two, "unused")?;
        let json = String::from_utf8(event_core::JsonCodec::default().encode(&no_key)?)?;
        script.push_str(&format!("SEND\t{}\t{p}\t-\t{json}\n", topic(two)));
        foreign
            .valid
            .entry(two.to_string())
            .or_default()
            .extend([headerless.id, no_key.id]);
        for (what, value) in [
            ("tombstone", "-"),
            ("text", "just some text"),
            ("shape", r#"{"order":17,"lines":[{"sku":"x"}]}"#),
        ] {
            let key = format!("{what}-{p}");
            script.push_str(&format!("SEND\t{}\t{p}\t{key}\t{value}\n", topic(two)));
            foreign.invalid.push(key);
        }
    }
    // An envelope of type three in type one's topic, and one of type one in type three's.
    for (inside, of) in [(&types[0], &types[2]), (&types[2], &types[0])] {
        let misplaced = envelope(of, &format!("misplaced-{of}"))?;
        script.push_str(&send_event(&topic(inside), 1, &misplaced)?);
        foreign.misplaced.push((of.to_string(), inside.to_string()));
    }
    script.push_str(&format!("FLUSH\nPRODUCER\ttrial-{prefix}\n"));
    for (end, n) in [("COMMIT", 0), ("ABORT", 1)] {
        script.push_str("BEGIN\n");
        for p in 0..3 {
            let event = envelope(two, &format!("tx{n}-{p}"))?;
            script.push_str(&send_event(&topic(two), p, &event)?);
            if end == "COMMIT" {
                foreign
                    .valid
                    .entry(two.to_string())
                    .or_default()
                    .push(event.id);
            }
            let key = format!("tx{n}-text-{p}");
            script.push_str(&format!(
                "SEND\t{}\t{p}\t{key}\tnot an envelope\n",
                topic(two)
            ));
            if end == "COMMIT" {
                foreign.invalid.push(key);
            }
        }
        script.push_str(&format!("{end}\n"));
    }
    let mut consoles = Vec::new();
    for codec in ["gzip", "snappy", "zstd"] {
        let mut lines = String::new();
        for i in 0..30 {
            let event = envelope(two, &format!("{codec}-{i}"))?;
            let json = String::from_utf8(event_core::JsonCodec::default().encode(&event)?)?;
            lines.push_str(&format!("{codec}-{i}\t{json}\n"));
            foreign
                .valid
                .entry(two.to_string())
                .or_default()
                .push(event.id);
        }
        lines.push_str(&format!("{codec}-text\tcompressed, but no envelope\n"));
        foreign.invalid.push(format!("{codec}-text"));
        let args = [
            "--compression-codec",
            codec,
            "--reader-property",
            "parse.key=true",
        ];
        consoles.push((args, lines));
    }
    let topic_two = topic(two);
    let (scripted, consoled) = tokio::join!(
        kafka_script(classpath, brokers, &script),
        futures::future::join_all(consoles.iter().map(|(args, lines)| {
            support::console_produce(classpath, brokers, &topic_two, args, lines)
        }))
    );
    scripted?;
    for c in consoled {
        c?;
    }
    Ok(foreign)
}

/// For each partition key, the sequence numbers in the order they were first handled must
/// rise: a redelivery may repeat an event, never overtake one.
fn per_key_order(log: &[Handled]) -> anyhow::Result<()> {
    let mut first: HashMap<&str, (HashSet<u64>, u64)> = HashMap::new();
    for (_, _, key, seq, _) in log {
        let (Some(key), Some(seq)) = (key, seq) else {
            continue;
        };
        let (seen, last) = first.entry(key).or_default();
        if seen.insert(*seq) {
            ensure!(
                *seq >= *last,
                "key {key}: seq {seq} first handled after {last}"
            );
            *last = *seq;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_workload_with_three_processes_and_foreign_producers() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut settings = Settings::on(&brokers);
    settings.kafka.topic_prefix = event_testkit::unique("eventbus-trial");
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.kafka.heartbeat_interval = Duration::from_secs(1);
    settings.kafka.rebalance_timeout = Duration::from_secs(20);
    let prefix = settings.kafka.topic_prefix.clone();
    let tag = format!("{:08x}", fastrand::u32(..));
    let types: Vec<EventType> = ["one", "two", "three"]
        .iter()
        .map(|t| EventType::new(format!("trial.{t}{tag}")))
        .collect::<Result<_, _>>()?;
    let (a, b) = (format!("a{tag}"), format!("b{tag}"));
    let (log_a, log_b) = (Arc::default(), Arc::default());
    let subscriptions = |process| {
        vec![
            (
                a.clone(),
                types[..2].to_vec(),
                recording(&a, &log_a, process),
            ),
            (
                b.clone(),
                types[1..].to_vec(),
                recording(&b, &log_b, process),
            ),
        ]
    };

    let publisher = settings.connect().await?;
    let mut sequence = 0;
    let mut ids = publish(&publisher, &types, BACKLOG, &mut sequence).await?;
    let mut p1 = Process::start(&settings, &subscriptions(1)).await?;
    let mut p2 = Process::start(&settings, &subscriptions(2)).await?;
    let handled = |log: &Arc<Mutex<Vec<Handled>>>| log.lock().unwrap().len();
    until(
        "the handlers under way",
        Duration::from_secs(60),
        || async { Ok(handled(&log_a) >= 1_000 && handled(&log_b) >= 1_000) },
    )
    .await?;

    // The third process joins late, while events and foreign records arrive.
    let third = subscriptions(3);
    let (p3, live, foreign) = tokio::join!(
        Process::start(&settings, &third),
        publish(&publisher, &types, LIVE, &mut sequence),
        write_foreign(&classpath, &brokers, &prefix, &types),
    );
    let (mut p3, foreign) = (p3?, foreign?);
    for (t, more) in live? {
        ids.entry(t).or_default().extend(more);
    }
    let first = &p1;
    for handler in [&a, &b] {
        until(
            "three members in each group",
            Duration::from_secs(60),
            || {
                let handler = handler.clone();
                async move {
                    let stats = first.on(|bus| async move { bus.stats().await }).await?;
                    Ok(stats
                        .handlers
                        .get(&handler)
                        .is_some_and(|h| h.members.len() == 3))
                }
            },
        )
        .await?;
    }
    // The second process dies while it handles the next round.
    let round = sequence;
    let in_round = |log: &Arc<Mutex<Vec<Handled>>>| {
        let log = log.lock().unwrap();
        log.iter()
            .filter(|h| h.4 == 2 && h.3.is_some_and(|s| s >= round))
            .count()
    };
    let (published, killed) = tokio::join!(
        publish(&publisher, &types, KILLED_ROUND, &mut sequence),
        async {
            until(
                "the second process handling the round",
                Duration::from_secs(60),
                || async { Ok(in_round(&log_a) >= 100 && in_round(&log_b) >= 100) },
            )
            .await?;
            p2.kill();
            anyhow::Ok(())
        }
    );
    killed?;
    for (t, more) in published? {
        ids.entry(t).or_default().extend(more);
    }

    let expected = |handler_types: &[EventType]| -> HashSet<EventId> {
        handler_types
            .iter()
            .flat_map(|t| {
                let t = t.to_string();
                ids[&t]
                    .iter()
                    .chain(foreign.valid.get(&t).into_iter().flatten())
                    .copied()
            })
            .collect()
    };
    let (want_a, want_b) = (expected(&types[..2]), expected(&types[1..]));
    let missing = |log: &Arc<Mutex<Vec<Handled>>>, want: &HashSet<EventId>| {
        let seen: HashSet<EventId> = log.lock().unwrap().iter().map(|h| h.0).collect();
        want.iter().filter(|id| !seen.contains(id)).count()
    };
    until(
        "every event handled by each of its handlers",
        Duration::from_secs(120),
        || async { Ok(missing(&log_a, &want_a) == 0 && missing(&log_b, &want_b) == 0) },
    )
    .await
    .with_context(|| {
        format!(
            "a misses {} of {}, b {} of {}",
            missing(&log_a, &want_a),
            want_a.len(),
            missing(&log_b, &want_b),
            want_b.len()
        )
    })?;
    for (handler, process) in [(&a, &p1), (&b, &p1), (&a, &p3), (&b, &p3)] {
        let handler = handler.clone();
        until("lag 0, nothing pending", Duration::from_secs(60), || {
            let handler = handler.clone();
            async move {
                let stats = process.on(|bus| async move { bus.stats().await }).await?;
                Ok(stats
                    .handlers
                    .get(&handler)
                    .is_some_and(|h| h.lag == 0 && h.pending == 0))
            }
        })
        .await?;
    }

    // Each record that is no event of its topic is one dead letter of each handler reading
    // the topic (an envelope of another type too: none of its handlers reads that topic).
    let (mut depths, mut processed) = (HashMap::new(), HashMap::new());
    for (handler, log, want, topic_types) in [
        (&a, &log_a, &want_a, &types[..2]),
        (&b, &log_b, &want_b, &types[1..]),
    ] {
        let log = log.lock().unwrap().clone();
        per_key_order(&log)?;
        let by_process = |p| log.iter().filter(|h| h.4 == p).count();
        let by = [1, 2, 3].map(by_process);
        for p in [1, 3] {
            processed.insert((handler.clone(), p), by[p - 1] as u64);
        }
        eprintln!("{handler}: {} handlings, by process {by:?}", log.len());
        // Only the killed process's uncommitted tail comes again, after it: the late join's
        // rebalance hands partitions over at their committed end.
        let mut first_by: HashMap<EventId, usize> = HashMap::new();
        let mut again: HashMap<(usize, usize), usize> = HashMap::new();
        for h in &log {
            if let Some(first) = first_by.get(&h.0) {
                *again.entry((*first, h.4)).or_default() += 1;
            } else {
                first_by.insert(h.0, h.4);
            }
        }
        ensure!(
            again
                .iter()
                .all(|((first, then), _)| *first == 2 && *then != 2),
            "{handler}: handled again, by (first, then) process: {again:?}"
        );
        // Neither an aborted event nor a misplaced one, nor anything else unexpected.
        let unexpected: Vec<_> = log.iter().filter(|h| !want.contains(&h.0)).collect();
        ensure!(unexpected.is_empty(), "{handler} handled {unexpected:?}");
        let name = handler.clone();
        let letters = p3
            .on(move |bus| async move { bus.dead_letters(&name, 10_000).await })
            .await?;
        let misplaced = foreign
            .misplaced
            .iter()
            .filter(|(_, inside)| topic_types.iter().any(|t| t.as_str() == inside.as_str()));
        let keys: Vec<String> = misplaced
            .map(|(of, _)| format!("misplaced-{of}"))
            .chain(foreign.invalid.iter().cloned())
            .collect();
        for key in &keys {
            let found = letters
                .iter()
                .filter(|l| {
                    l.raw
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&format!("key={key} ")))
                })
                .count();
            ensure!(found == 1, "{handler}, {key}: {found} dead letters, not 1");
        }
        ensure!(
            letters.len() == keys.len()
                && letters
                    .iter()
                    .all(|l| l.reason == DeadLetterReason::InvalidEnvelope),
            "{handler}: {} dead letters for {} foreign records: {letters:?}",
            letters.len(),
            keys.len()
        );
        depths.insert(handler.clone(), letters.len() as u64);
    }
    // Each survivor counts the dead letters it stored (the killed one's are lost with it).
    let mut lettered: HashMap<&String, u64> = HashMap::new();
    for (i, process) in [(1, &p1), (3, &p3)] {
        let stats = process.on(|bus| async move { bus.stats().await }).await?;
        for handler in [&a, &b] {
            let h = &stats.handlers[handler];
            *lettered.entry(handler).or_default() += h.dead_lettered;
            ensure!(
                h.dead_letter_depth == depths[handler]
                    && h.members.len() == 2
                    && h.processed == processed[&(handler.clone(), i)]
                    && h.failed == 0,
                "{handler}: {h:?}"
            );
        }
        let health = process.on(|bus| async move { bus.health().await }).await;
        ensure!(
            health.status == HealthStatus::Healthy
                && health
                    .consumers
                    .iter()
                    .all(|c| c.alive && c.loop_failures == 0),
            "{health:?}"
        );
    }
    for (handler, n) in lettered {
        ensure!(
            (1..=depths[handler]).contains(&n),
            "{handler}: {n} dead letters counted for {} stored",
            depths[handler]
        );
    }
    p1.on(|bus| async move { bus.shutdown().await }).await?;
    p3.on(|bus| async move { bus.shutdown().await }).await?;
    p1.kill();
    p3.kill();
    publisher.shutdown().await?;
    Ok(())
}
