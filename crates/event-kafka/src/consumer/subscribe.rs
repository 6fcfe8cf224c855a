//! Starting a subscription: joining the handler's running group in this process, or creating
//! the group (its topics, start positions, dispatcher, membership and commit tasks), and the
//! subscription's life until it leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_core::dispatch::{
    DispatchSettings, Dispatcher, HandlerCounters, StopMode, StopSignal, Supervisor,
};
use event_core::{Error, EventHandler, Subscription, SubscriptionSpec};
use tokio::sync::{Notify, watch};

use crate::control::ControlClient;
use crate::core::Inner;

use super::dead_letters::KafkaSink;
use super::membership::{self, Standing};
use super::positions::start_positions;
use super::router::{Router, Subscriber};
use super::{FaultNames, Group, Groups};

/// How often changed positions are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// Starts a subscription: joins the handler's group in this process, or starts it.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    groups: &Arc<Groups>,
    spec: SubscriptionSpec,
    handler: Arc<dyn EventHandler>,
) -> Result<Subscription, Error> {
    let _one_at_a_time = inner.subscribing.lock().await;
    let group_name = inner.group(&spec.handler);
    let mut event_types: Vec<String> = spec
        .event_types
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    event_types.sort();
    event_types.dedup();
    let member = inner.lifecycle.consumers().next_id();
    let entry = Arc::new(Subscriber {
        id: member,
        handler,
        busy: AtomicUsize::new(0),
        idle: Notify::new(),
    });
    // Join the running group of the handler; wait for one that is stopping to finish first.
    let joined = loop {
        let waiting = {
            let running = groups.lock();
            match running.get(&spec.handler) {
                Some(g) if !g.closing.load(Ordering::Acquire) => {
                    if g.event_types != event_types {
                        return Err(Error::InvalidArgument(format!(
                            "handler {} is already subscribed in this process to {:?}; its subscriptions share one group and must name the same event types, not {:?}",
                            spec.handler, g.event_types, event_types
                        )));
                    }
                    g.router.subscribers().push(entry.clone());
                    break Some(g.clone());
                }
                Some(g) => g.finished.subscribe(),
                None => break None,
            }
        };
        let mut finished = waiting;
        let _ = finished.wait_for(|f| *f).await;
    };
    let group = match joined {
        Some(group) => {
            inner
                .handlers
                .add_member(&spec.handler, &group_name, &event_types, member);
            group
        }
        None => {
            let counters = inner
                .handlers
                .add_member(&spec.handler, &group_name, &event_types, member)
                .counters;
            match start_group(
                inner,
                groups,
                &spec,
                &group_name,
                &event_types,
                entry,
                counters,
            )
            .await
            {
                Ok(group) => group,
                Err(e) => {
                    inner.handlers.remove_member(&spec.handler, member, |_| {});
                    return Err(e);
                }
            }
        }
    };
    let timeout = inner.config.shutdown_timeout;
    inner.lifecycle.consumers().spawn(member, move |stop| {
        member_loop(group, member, stop, timeout)
    });
    event_core::dispatch::subscription(&inner.lifecycle, member, spec.handler, group_name).await
}

/// A subscription's life: wait for a stop, then leave the group.
async fn member_loop(
    group: Arc<Group>,
    member: u64,
    mut stop: StopSignal,
    timeout: Duration,
) -> bool {
    loop {
        if stop.mode() != StopMode::Run {
            break;
        }
        if !stop.changed().await {
            break;
        }
    }
    group.leave(member, stop.remaining(timeout)).await
}

async fn start_group(
    inner: &Arc<Inner>,
    groups: &Arc<Groups>,
    spec: &SubscriptionSpec,
    group_name: &str,
    event_types: &[String],
    member: Arc<Subscriber>,
    counters: Arc<HandlerCounters>,
) -> Result<Arc<Group>, Error> {
    let mut topics: Vec<String> = event_types.iter().map(|t| inner.topics.events(t)).collect();
    let partitions = inner.kafka.partitions as i32;
    let mut wanted: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), partitions)).collect();
    let redrive = inner.topics.redrive(group_name);
    let dead_letters = inner.topics.dead_letters(group_name);
    wanted.push((redrive.clone(), 1));
    wanted.push((dead_letters.clone(), 1));
    let counts = inner.topics.ensure(&inner.control, &wanted).await?;
    topics.push(redrive);
    start_positions(
        inner,
        spec.start,
        group_name,
        &topics,
        &counts[..topics.len()],
    )
    .await?;
    // JoinGroup waits at the coordinator until the rebalance completes: it gets a connection
    // of its own, so heartbeats and commits of this and other groups never queue behind it.
    let coordinator = ControlClient::connect(
        &inner.kafka.bootstrap_servers,
        &inner.kafka.security(),
        crate::control::DEFAULT_TIMEOUT,
    )
    .await?;

    let (stop, stopped) = watch::channel(None);
    let (finished, _) = watch::channel(false);
    let group = Arc::new(Group {
        inner: inner.clone(),
        groups: groups.clone(),
        handler: spec.handler.clone(),
        name: group_name.to_string(),
        event_types: event_types.to_vec(),
        topics,
        dead_letters,
        start: spec.start,
        trackers: Mutex::new(HashMap::new()),
        standing: Mutex::new(Standing {
            generation: -1,
            ..Standing::default()
        }),
        router: Arc::new(Router {
            name: spec.handler.clone(),
            subscribers: Mutex::new(vec![member]),
        }),
        stop,
        membership: Mutex::new(None),
        commit_task: Mutex::new(None),
        dispatcher: Mutex::new(None),
        closing: AtomicBool::new(false),
        finished,
        counters: counters.clone(),
        failing_letters: Mutex::new(HashMap::new()),
        fault_names: FaultNames {
            membership: format!("{}/membership", spec.handler),
            commits: format!("{}/commits", spec.handler),
        },
    });
    let concurrency = spec.concurrency.unwrap_or(inner.config.handler_concurrency);
    let dispatcher = Arc::new(Dispatcher::start(
        group.router.clone(),
        DispatchSettings::new(
            group_name.to_string(),
            concurrency,
            inner.config.retry_policy(),
        )
        .with_system("kafka"),
        Arc::new(KafkaSink {
            group: group.clone(),
        }),
        counters,
    ));
    *group.dispatcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(dispatcher);
    *group.membership.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::spawn(
        membership::supervised(group.clone(), coordinator, stopped),
    ));
    *group.commit_task.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(tokio::spawn(supervised_commits(group.clone())));
    groups.lock().insert(spec.handler.clone(), group.clone());
    Ok(group)
}

/// Commits changed positions every [`COMMIT_EVERY`], restarted (with backoff, logged and
/// counted) should it fail; aborted when the group closes.
async fn supervised_commits(group: Arc<Group>) {
    let mut supervisor = Supervisor::new(group.handler.clone(), group.counters.clone());
    loop {
        let committer = group.clone();
        let mut stop = group.stop.subscribe();
        let outcome = supervisor
            .run(async move {
                loop {
                    event_core::fault::checkpoint(&committer.fault_names.commits);
                    tokio::select! {
                        () = tokio::time::sleep(COMMIT_EVERY) => {}
                        _ = stop.changed() => {}
                    }
                    committer.commit().await;
                }
            })
            .await;
        let why = match outcome {
            Ok(()) => "ended without being asked to stop".to_string(),
            Err(why) => why,
        };
        let pause = supervisor.failed("the offset commit task", &why);
        tokio::time::sleep(pause).await;
    }
}
