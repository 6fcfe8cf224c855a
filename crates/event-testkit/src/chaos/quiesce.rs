//! Waiting for quiescence before the checks: by the bus's own stats every handler's group has
//! lag 0 and nothing pending, and no handler call happened for a settle period (in this
//! process or in a consumer process), all within a deadline.

use std::time::Duration;

use event_core::BusStats;
use tokio::time::Instant;

use super::cluster::Cluster;

/// Why the run did not become quiet.
#[derive(Debug)]
pub(crate) struct NotQuiet {
    pub(crate) waited: Duration,
    /// Each handler that still had work, with its lag and pending count.
    pub(crate) busy: Vec<String>,
    pub(crate) last_error: Option<String>,
}

/// Waits until the run is quiet for `settle`, or `deadline` passes.
pub(crate) async fn quiesce(
    cluster: &Cluster,
    settle: Duration,
    deadline: Duration,
) -> Result<Duration, NotQuiet> {
    let started = Instant::now();
    let mut progress = progress(cluster);
    let mut quiet_since = Instant::now();
    loop {
        let busy;
        let last_error;
        let now_progress = self::progress(cluster);
        match tokio::time::timeout(Duration::from_secs(20), cluster.main_bus().stats()).await {
            Ok(Ok(stats)) => {
                busy = busy_handlers(cluster, &stats);
                last_error = None;
            }
            Ok(Err(e)) => {
                busy = Vec::new();
                last_error = Some(format!("stats failed: {e}"));
            }
            Err(_) => {
                busy = Vec::new();
                last_error = Some("stats did not answer within 20 s".into());
            }
        }
        let calm = busy.is_empty() && last_error.is_none() && now_progress == progress;
        if !calm {
            // Work is left, or a call just happened: the settle period starts over.
            progress = now_progress;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= settle {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= deadline {
            return Err(NotQuiet {
                waited: started.elapsed(),
                busy,
                last_error,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Handler calls recorded so far, here and in the consumer processes' files.
fn progress(cluster: &Cluster) -> (usize, u64) {
    (cluster.history.delivery_count(), cluster.process_progress())
}

fn busy_handlers(cluster: &Cluster, stats: &BusStats) -> Vec<String> {
    cluster
        .plan
        .handlers
        .iter()
        .filter_map(|h| match stats.handlers.get(&h.name) {
            Some(s) if s.lag == 0 && s.pending == 0 => None,
            Some(s) => Some(format!("{}: lag {}, pending {}", h.name, s.lag, s.pending)),
            None => Some(format!("{}: not in the stats", h.name)),
        })
        .collect()
}
