//! Single awaited publishes on a single server go over the bus's direct connection (named
//! `{prefix}:publish` in `CLIENT LIST`), which hands a command to the client's own connection
//! whenever anything is unusual. Against the shared server (`EVENTBUS_TEST_REDIS_URL`): the
//! direct connection killed again and again mid-run, publishes dropped in the middle of their
//! call, and server errors lose nothing, answer nothing wrong, and return the server's error.

mod common;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use anyhow::{Context as _, ensure};
use common::{Scenario, client_list, numbered, secs, wait_until};
use event_core::{EventBus, EventId};
use fred::prelude::{Client, ClientLike as _, KeysInterface as _};
use fred::types::Value;

/// Single publishes of the run.
const EVENTS: u64 = 6_000;
/// Every this many publishes, the direct connection is killed, and one publish is dropped
/// after its first poll.
const EVERY: u64 = 500;

/// The `CLIENT LIST` fields of the connections named `name`.
async fn connections(admin: &Client, name: &str) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let mut all = client_list(admin).await?;
    all.retain(|c| c.get("name").is_some_and(|n| n == name));
    Ok(all)
}

/// Waits until the direct connection is up, and returns its id.
async fn direct_id(admin: &Client, name: &str) -> anyhow::Result<String> {
    let mut id = None;
    wait_until("the direct connection", secs(20), async || {
        id = connections(admin, name)
            .await?
            .pop()
            .and_then(|mut c| c.remove("id"));
        Ok(id.is_none().then(|| format!("no connection named {name}")))
    })
    .await?;
    id.context("no id")
}

/// Fails unless the direct connection's last command was an `XADD`.
async fn published_directly(admin: &Client, name: &str, when: &str) -> anyhow::Result<()> {
    let direct = connections(admin, name).await?;
    ensure!(
        direct
            .iter()
            .any(|c| c.get("cmd").is_some_and(|cmd| cmd == "xadd")),
        "{when}: the direct connection did not publish: {direct:?}"
    );
    Ok(())
}

/// Polls `call` once and drops it, as a caller's timeout would: the command written, its
/// reply not read. Its output, when that one poll finished it.
fn abandon<F: Future>(call: F) -> Option<F::Output> {
    let mut call = pin!(call);
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The `id` field of every entry of `stream`.
async fn ids_in(admin: &Client, stream: &str) -> anyhow::Result<Vec<String>> {
    let reply: Value = admin
        .custom(fred::cmd!("XRANGE"), vec![stream, "-", "+"])
        .await?;
    let mut ids = Vec::new();
    for entry in reply.into_array() {
        let mut parts = entry.into_array();
        let fields = parts.pop().context("an entry without fields")?.into_array();
        let id = fields
            .chunks(2)
            .find(|pair| pair[0].as_str().as_deref() == Some("id"))
            .and_then(|pair| pair[1].as_string())
            .context("an entry without id")?;
        ids.push(id);
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_and_dropped_calls_lose_nothing() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-direct").await? else {
        return Ok(());
    };
    scenario
        .run(async |s| {
            let bus = s.config().connect().await?;
            let name = format!("{}:publish", s.prefix);
            let event_type = s.event_type("direct");
            let stream = s.stream(&event_type);
            let (mut published, mut dropped, mut killed) = (Vec::<EventId>::new(), 0, 0);
            for n in 0..EVENTS {
                if n % EVERY == EVERY - 1 {
                    // Once the direct connection is back after the last fault (it reconnects
                    // in the background; publishes go through the client meanwhile), a publish
                    // with nothing else in flight goes over it.
                    let id = direct_id(&s.admin, &name).await?;
                    published.push(bus.publish(numbered(&event_type, n, None)).await?);
                    published_directly(&s.admin, &name, &format!("publish {n}")).await?;
                    let gone: i64 = s
                        .admin
                        .custom(fred::cmd!("CLIENT"), vec!["KILL", "ID", id.as_str()])
                        .await?;
                    killed += gone;
                    continue;
                }
                if n % EVERY == EVERY / 2 {
                    direct_id(&s.admin, &name).await?;
                    match abandon(bus.publish(numbered(&event_type, n, None))) {
                        Some(result) => published.push(result?),
                        None => dropped += 1,
                    }
                    continue;
                }
                published.push(bus.publish(numbered(&event_type, n, None)).await?);
            }
            let stored = ids_in(&s.admin, &stream).await?;
            let unique: HashSet<&String> = stored.iter().collect();
            let missing = published
                .iter()
                .filter(|id| !unique.contains(&id.to_string()))
                .count();
            ensure!(
                missing == 0,
                "{missing} of {} published events are not in the stream",
                published.len()
            );
            // A dropped call's command may or may not have run; a connection killed while a
            // reply was on its way sends the command again through the client.
            ensure!(
                stored.len() as u64 <= published.len() as u64 + dropped + killed as u64,
                "{} entries for {} publishes, {dropped} dropped calls and {killed} kills",
                stored.len(),
                published.len()
            );
            ensure!(
                killed >= (EVENTS / EVERY) as i64 && dropped > 0,
                "the faults did not happen: {killed} kills, {dropped} dropped calls"
            );
            // The direct connection is closed with the bus.
            bus.shutdown().await?;
            wait_until("the direct connection to close", secs(20), async || {
                let open = connections(&s.admin, &name).await?.len();
                Ok((open > 0).then(|| format!("{open} still open")))
            })
            .await?;
            Ok(())
        })
        .await
}

/// A publish the server refuses returns the server's error, also right after a dropped call
/// left its reply unread on the direct connection (that reply must not answer the next
/// publish), and the direct connection goes on publishing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_returns_the_servers_error() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-direct-refused").await? else {
        return Ok(());
    };
    scenario
        .run(async |s| {
            let bus = s.config().connect().await?;
            let name = format!("{}:publish", s.prefix);
            let good = s.event_type("good");
            let bad = s.event_type("bad");
            // Another program holds a plain string under the bad type's stream key.
            let _: () = s
                .admin
                .set(s.stream(&bad), "not a stream", None, None, false)
                .await?;
            for round in 0..20 {
                direct_id(&s.admin, &name).await?;
                if round % 2 == 1 {
                    let _ = abandon(bus.publish(numbered(&good, round, None)));
                }
                let refused = bus.publish(numbered(&bad, round, None)).await;
                let Err(e) = refused else {
                    anyhow::bail!("round {round}: a publish onto a string key succeeded");
                };
                ensure!(e.to_string().contains("WRONGTYPE"), "round {round}: {e}");
                bus.publish(numbered(&good, round, None)).await?;
            }
            let _: i64 = s.admin.del(s.stream(&bad)).await?;
            // The last round's dropped call closed the connection: once it is back, a
            // publish of the type refused before goes over it.
            direct_id(&s.admin, &name).await?;
            bus.publish(numbered(&bad, 99, None)).await?;
            published_directly(&s.admin, &name, "at the end").await?;
            bus.shutdown().await?;
            Ok(())
        })
        .await
}
