//! Carrying out the plan's operations (redrive, purge, resubscribe, foreign input) and faults
//! at their times, recording exactly what each selected and did.

use std::sync::Arc;
use std::time::Duration;

use event_core::{DeadLetter, DeadLetterSelection};
use fastrand::Rng;
use tokio::time::Instant;

use super::backend::{ChaosBackend, Fault};
use super::cluster::Cluster;
use super::history::{DeadLetterOperation, FaultRecord, ForeignRecord, now_ms};
use super::workload::{Operation, Scheduled};

/// Dead letters read at most per handler.
pub(crate) const DEAD_LETTER_LIMIT: usize = 1_000_000;

/// Runs the operations at their offsets from `start`.
pub(crate) async fn run_operations(
    cluster: Arc<Cluster>,
    backend: Arc<dyn ChaosBackend>,
    start: Instant,
) -> anyhow::Result<()> {
    let mut rng = Rng::with_seed(cluster.plan.seed ^ 0x0b5e_55ed);
    let operations: Vec<Scheduled<Operation>> = cluster.plan.operations.clone();
    for (n, op) in operations.into_iter().enumerate() {
        tokio::time::sleep_until(start + op.at).await;
        match op.what {
            Operation::Redrive { handler, all } => {
                redrive(&cluster, handler, all, &mut rng).await;
            }
            Operation::Purge { handler } => purge(&cluster, handler, &mut rng).await,
            Operation::Resubscribe { handler, away } => {
                match cluster.unsubscribe(handler, 0).await {
                    Ok(false) => continue,
                    Ok(true) => {}
                    // The subscription is gone either way; the error is the bus's to report.
                    Err(e) => cluster.history.note(format!("unsubscribe failed: {e:#}")),
                }
                tokio::time::sleep(away).await;
                cluster.subscribe(handler, 0).await?;
            }
            Operation::Foreign { event_type } => {
                let event_type = cluster.plan.types[event_type].clone();
                let marker = format!("cf{n}");
                match backend.write_foreign(&event_type, &marker).await {
                    Ok(entries) => {
                        let written_ms = now_ms();
                        cluster.history.note(format!(
                            "wrote {} foreign entries into {event_type}",
                            entries.len()
                        ));
                        let mut records = cluster.history.lock();
                        for entry in entries {
                            records.foreign.push(ForeignRecord {
                                event_type: event_type.as_str().to_string(),
                                entry,
                                written_ms,
                            });
                        }
                    }
                    Err(e) => cluster
                        .history
                        .note(format!("writing foreign entries failed: {e:#}")),
                }
            }
        }
    }
    Ok(())
}

async fn dead_letters(cluster: &Cluster, handler: &str) -> Vec<DeadLetter> {
    match cluster
        .main_bus()
        .dead_letters(handler, DEAD_LETTER_LIMIT)
        .await
    {
        Ok(letters) => letters,
        Err(e) => {
            cluster
                .history
                .note(format!("listing the dead letters of {handler} failed: {e}"));
            Vec::new()
        }
    }
}

fn operation(handler: &str, chosen: &[&DeadLetter]) -> DeadLetterOperation {
    DeadLetterOperation {
        handler: handler.to_string(),
        at_ms: now_ms(),
        event_ids: chosen
            .iter()
            .filter_map(|d| d.event.as_ref().map(|e| e.id))
            .collect(),
        raws: chosen.iter().filter_map(|d| d.raw.clone()).collect(),
        result: Ok(String::new()),
    }
}

async fn redrive(cluster: &Cluster, handler: usize, all: bool, rng: &mut Rng) {
    let name = cluster.plan.handlers[handler].name.clone();
    let letters = dead_letters(cluster, &name).await;
    if letters.is_empty() {
        cluster
            .history
            .note(format!("redrive of {name}: no dead letters"));
        return;
    }
    let chosen: Vec<&DeadLetter> = if all {
        letters.iter().collect()
    } else {
        letters.iter().filter(|_| rng.bool()).collect()
    };
    let selection = if all {
        DeadLetterSelection::All
    } else {
        DeadLetterSelection::Ids(chosen.iter().map(|d| d.id.clone()).collect())
    };
    let mut record = operation(&name, &chosen);
    // Recorded before the call: a redelivery can start before the call returns.
    record.at_ms = now_ms();
    let result = cluster
        .main_bus()
        .redrive_dead_letters(&name, selection)
        .await;
    record.result = result
        .as_ref()
        .map(|r| format!("{} redriven, {} skipped", r.redriven, r.skipped.len()))
        .map_err(ToString::to_string);
    cluster.history.note(format!(
        "redrive of {name} ({} of {} selected): {:?}",
        chosen.len(),
        letters.len(),
        record.result
    ));
    cluster.history.lock().redrives.push(record);
}

async fn purge(cluster: &Cluster, handler: usize, rng: &mut Rng) {
    let name = cluster.plan.handlers[handler].name.clone();
    let letters = dead_letters(cluster, &name).await;
    let mut chosen: Vec<&DeadLetter> = letters.iter().filter(|_| rng.u32(0..3) == 0).collect();
    if chosen.is_empty() {
        chosen.extend(letters.first());
    }
    if chosen.is_empty() {
        cluster
            .history
            .note(format!("purge of {name}: no dead letters"));
        return;
    }
    let selection = DeadLetterSelection::Ids(chosen.iter().map(|d| d.id.clone()).collect());
    let mut record = operation(&name, &chosen);
    let result = cluster
        .main_bus()
        .purge_dead_letters(&name, selection)
        .await;
    record.result = result
        .as_ref()
        .map(|n| format!("{n} deleted"))
        .map_err(ToString::to_string);
    cluster.history.note(format!(
        "purge of {name} ({} of {} selected): {:?}",
        chosen.len(),
        letters.len(),
        record.result
    ));
    cluster.history.lock().purges.push(record);
}

/// Injects the plan's faults at their offsets from `start`.
pub(crate) async fn run_faults(
    cluster: Arc<Cluster>,
    backend: Arc<dyn ChaosBackend>,
    start: Instant,
) -> anyhow::Result<()> {
    let faults = cluster.plan.faults.clone();
    for scheduled in faults {
        tokio::time::sleep_until(start + scheduled.at).await;
        let (fault, seed) = scheduled.what;
        let started_ms = now_ms();
        let detail = inject(&cluster, &backend, fault, seed).await;
        let handlers = if fault == Fault::PanicLoopOnce {
            vec![
                cluster.plan.handlers[panic_target(&cluster, seed)]
                    .name
                    .clone(),
            ]
        } else if fault.touches_every_handler() {
            cluster
                .plan
                .handlers
                .iter()
                .map(|h| h.name.clone())
                .collect()
        } else {
            cluster
                .plan
                .handlers
                .iter()
                .filter(|h| h.shared)
                .map(|h| h.name.clone())
                .collect()
        };
        cluster.history.note(format!("fault {fault:?}: {detail:?}"));
        cluster.history.lock().faults.push(FaultRecord {
            fault,
            started_ms,
            ended_ms: now_ms(),
            detail: detail.map_err(|e| format!("{e:#}")),
            handlers,
        });
    }
    Ok(())
}

async fn inject(
    cluster: &Cluster,
    backend: &Arc<dyn ChaosBackend>,
    fault: Fault,
    seed: u64,
) -> anyhow::Result<String> {
    match fault {
        Fault::KillConsumerProcess => {
            let killed = cluster
                .with_process(seed, |p| p.kill())
                .await
                .ok_or_else(|| anyhow::anyhow!("no consumer process runs"))??;
            // The replacement comes a moment later, as a supervisor would start it.
            tokio::time::sleep(Duration::from_millis(500 + seed % 2000)).await;
            cluster.tidy_processes().await;
            cluster.start_process().await?;
            Ok(format!("killed {} and started a new process", killed.0))
        }
        Fault::PauseConsumerProcess => {
            let (label, ()) = cluster
                .with_process(seed, |p| p.pause())
                .await
                .ok_or_else(|| anyhow::anyhow!("no consumer process runs"))??;
            let pause = cluster.abilities.takeover_after * 2 + Duration::from_secs(1);
            tokio::time::sleep(pause).await;
            cluster.tidy_processes().await;
            Ok(format!("stopped {label} for {pause:?}"))
        }
        Fault::PanicLoopOnce => {
            let handler = cluster.plan.handlers[panic_target(cluster, seed)]
                .name
                .clone();
            let before = loop_failures(cluster, &handler).await;
            event_core::fault::panic_loop_once(&handler);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = loop_failures(cluster, &handler).await;
                if now > before {
                    return Ok(format!(
                        "the consumer loop of {handler} panicked; health counts {now} loop failures"
                    ));
                }
            }
            // Left armed: it fires if the loop ever reaches a checkpoint, and the checks then
            // see its effects like any other.
            anyhow::bail!(
                "armed panic_loop_once on {handler}, but no loop failure showed in health within 15 s (the backend's loop has no fault checkpoint?)"
            )
        }
        other => backend.inject(other, seed).await,
    }
}

/// The handler whose loop a `PanicLoopOnce` with this seed breaks.
fn panic_target(cluster: &Cluster, seed: u64) -> usize {
    (seed % cluster.plan.handlers.len() as u64) as usize
}

/// The loop failures health reports for the handler, summed over the buses of this process.
async fn loop_failures(cluster: &Cluster, handler: &str) -> u64 {
    let mut total = 0;
    for (_, bus) in &cluster.buses {
        if let Ok(health) = tokio::time::timeout(Duration::from_secs(10), bus.health()).await {
            total += health
                .consumers
                .iter()
                .filter(|c| c.handler == handler)
                .map(|c| c.loop_failures)
                .sum::<u64>();
        }
    }
    total
}
