//! [`AgentEventHandler`]: the agent fleet (running, stopped, errored, uptime, tasks, success
//! rate, mean and p95 duration), and a `system.error` alert, once per episode, when an agent's
//! error rate over a window passes a threshold.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_core::{Event, EventBus, EventType, HandlerError};
use serde::Serialize;
use time::OffsetDateTime;

use super::payloads::{
    AGENT_TASK_STARTED, AgentError, AgentStarted, AgentStopped, AgentTaskCompleted,
    AgentTaskStarted, decode,
};
use super::{Outbox, RecentIds, lock, seconds_between};

/// Durations kept per agent for the p95.
const DURATIONS_KEPT: usize = 1_000;

/// When the agent handler raises an alert.
///
/// Outcomes are task completions (successful or not) and `agent.error` events, by event
/// timestamp; an alert fires when, among an agent's outcomes of the last `window`, at least
/// `min_outcomes` are present and the share of failures reaches `error_rate`. It fires once:
/// the episode ends when the share falls below `error_rate` again, and the next crossing
/// fires again.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgentAlertPolicy {
    /// The share of failed outcomes that raises an alert, 0 to 1 (default 0.5).
    pub error_rate: f64,
    /// The window outcomes are counted over (default 5 minutes).
    pub window: Duration,
    /// The fewest outcomes in the window for a rate to count (default 5): one failure out of
    /// one is not a trend.
    pub min_outcomes: usize,
}

impl Default for AgentAlertPolicy {
    fn default() -> Self {
        Self {
            error_rate: 0.5,
            window: Duration::from_secs(300),
            min_outcomes: 5,
        }
    }
}

impl AgentAlertPolicy {
    /// A policy with the given threshold, window and minimum sample.
    pub fn new(error_rate: f64, window: Duration, min_outcomes: usize) -> Self {
        Self {
            error_rate: error_rate.clamp(0.0, 1.0),
            window,
            min_outcomes: min_outcomes.max(1),
        }
    }
}

/// What an agent is doing, as last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Started (or completed a task) and not stopped.
    Running,
    /// Stopped.
    Stopped,
    /// Reported an error and has not started or completed a task successfully since.
    Errored,
}

/// One agent in the [`AgentFleet`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgentSummary {
    /// The agent's id.
    pub agent_id: String,
    /// Its type, as last reported.
    pub agent_type: Option<String>,
    /// What it is doing.
    pub status: AgentStatus,
    /// When it last started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it last stopped.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
    /// Why it last stopped.
    pub stop_reason: Option<String>,
    /// Seconds up: as reported when it stopped (or computed from start and stop), or since
    /// its start while running.
    pub uptime_seconds: Option<f64>,
    /// `agent.error` events received.
    pub errors: u64,
    /// The last error's message.
    pub last_error: Option<String>,
    /// Tasks started (`agent.task_started`).
    pub tasks_started: u64,
    /// Tasks completed, successful or not.
    pub tasks_completed: u64,
    /// Tasks completed successfully.
    pub tasks_succeeded: u64,
    /// Tasks completed with `success: false`.
    pub tasks_failed: u64,
    /// Tasks started and not completed yet.
    pub tasks_in_progress: u64,
    /// Successful share of completed tasks.
    pub success_rate: Option<f64>,
    /// Mean task duration, seconds.
    pub mean_duration_seconds: Option<f64>,
    /// 95th percentile task duration (nearest rank over the last 1,000 tasks), seconds.
    pub p95_duration_seconds: Option<f64>,
    /// Failed share of the outcomes in the alert window ending at the agent's last event.
    pub window_error_rate: Option<f64>,
    /// Whether an alert episode is going on.
    pub alerting: bool,
    /// Alerts raised for this agent.
    pub alerts_raised: u64,
}

/// The agent fleet: the view of [`AgentEventHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgentFleet {
    /// Agents running.
    pub running: usize,
    /// Agents stopped.
    pub stopped: usize,
    /// Agents errored.
    pub errored: usize,
    /// Alerts raised over all agents.
    pub alerts_raised: u64,
    /// The alert policy in force.
    pub policy: AgentAlertPolicy,
    /// Every agent seen, by id.
    pub agents: Vec<AgentSummary>,
}

impl AgentFleet {
    /// The agent with this id.
    pub fn agent(&self, agent_id: &str) -> Option<&AgentSummary> {
        self.agents.iter().find(|a| a.agent_id == agent_id)
    }
}

#[derive(Debug)]
struct AgentRecord {
    summary: AgentSummary,
    duration_total: f64,
    durations: VecDeque<f64>,
    /// `(timestamp, failed)` of the outcomes inside the window.
    outcomes: VecDeque<(OffsetDateTime, bool)>,
    in_progress: std::collections::BTreeSet<String>,
}

impl AgentRecord {
    fn new(agent_id: &str) -> Self {
        Self {
            summary: AgentSummary {
                agent_id: agent_id.to_owned(),
                agent_type: None,
                status: AgentStatus::Running,
                started_at: None,
                stopped_at: None,
                stop_reason: None,
                uptime_seconds: None,
                errors: 0,
                last_error: None,
                tasks_started: 0,
                tasks_completed: 0,
                tasks_succeeded: 0,
                tasks_failed: 0,
                tasks_in_progress: 0,
                success_rate: None,
                mean_duration_seconds: None,
                p95_duration_seconds: None,
                window_error_rate: None,
                alerting: false,
                alerts_raised: 0,
            },
            duration_total: 0.0,
            durations: VecDeque::new(),
            outcomes: VecDeque::new(),
            in_progress: Default::default(),
        }
    }
}

#[derive(Debug)]
struct FleetState {
    seen: RecentIds,
    agents: BTreeMap<String, AgentRecord>,
    alerts_raised: u64,
}

/// Keeps the agent fleet and raises error-rate alerts. Handles `agent.started`,
/// `agent.stopped`, `agent.error`, `agent.task_completed` and `agent.task_started`.
///
/// Missing optional fields (`uptime_seconds`, `error_type`, ...) never fail it; a payload
/// without a required field fails permanently, naming the field, and goes to the dead-letter
/// queue.
pub struct AgentEventHandler {
    bus: Arc<dyn EventBus>,
    policy: AgentAlertPolicy,
    source: String,
    state: Mutex<FleetState>,
    outbox: Outbox,
}

impl std::fmt::Debug for AgentEventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEventHandler")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl AgentEventHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "agent";

    /// A handler that publishes its alerts on `bus` with source `agent_monitor`.
    pub fn new(bus: Arc<dyn EventBus>, policy: AgentAlertPolicy) -> Self {
        Self {
            bus,
            policy,
            source: "agent_monitor".into(),
            state: Mutex::new(FleetState {
                seen: RecentIds::new(crate::view::RECENT_IDS),
                agents: BTreeMap::new(),
                alerts_raised: 0,
            }),
            outbox: Outbox::default(),
        }
    }

    /// The event types it handles.
    pub fn event_types() -> Vec<EventType> {
        vec![
            EventType::AGENT_STARTED,
            EventType::AGENT_STOPPED,
            EventType::AGENT_ERROR,
            EventType::AGENT_TASK_COMPLETED,
            agent_task_started(),
        ]
    }

    /// The fleet as it is now.
    pub fn fleet(&self) -> AgentFleet {
        let now = OffsetDateTime::now_utc();
        let state = lock(&self.state);
        let agents: Vec<AgentSummary> = state
            .agents
            .values()
            .map(|record| {
                let mut summary = record.summary.clone();
                if summary.status != AgentStatus::Stopped
                    && let Some(started) = summary.started_at
                {
                    summary.uptime_seconds = Some(seconds_between(started, now));
                }
                summary
            })
            .collect();
        let count = |status| agents.iter().filter(|a| a.status == status).count();
        AgentFleet {
            running: count(AgentStatus::Running),
            stopped: count(AgentStatus::Stopped),
            errored: count(AgentStatus::Errored),
            alerts_raised: state.alerts_raised,
            policy: self.policy,
            agents,
        }
    }

    fn apply(&self, state: &mut FleetState, event: &Event) -> Result<(), HandlerError> {
        let at = event.timestamp;
        let ty = event.event_type.as_str();
        if ty == EventType::AGENT_STARTED.as_str() {
            let p: AgentStarted = decode(event)?;
            let record = record(state, &p.agent_id);
            record.summary.agent_type = Some(p.agent_type);
            record.summary.status = AgentStatus::Running;
            record.summary.started_at = Some(at);
            record.summary.stopped_at = None;
            record.summary.stop_reason = None;
            record.summary.uptime_seconds = None;
        } else if ty == EventType::AGENT_STOPPED.as_str() {
            let p: AgentStopped = decode(event)?;
            let record = record(state, &p.agent_id);
            record.summary.agent_type = Some(p.agent_type);
            record.summary.status = AgentStatus::Stopped;
            record.summary.stopped_at = Some(at);
            record.summary.stop_reason = Some(p.reason);
            record.summary.uptime_seconds = p
                .uptime_seconds
                .or_else(|| record.summary.started_at.map(|s| seconds_between(s, at)));
        } else if ty == EventType::AGENT_ERROR.as_str() {
            let p: AgentError = decode(event)?;
            let record = record(state, &p.agent_id);
            record.summary.agent_type = Some(p.agent_type);
            record.summary.status = AgentStatus::Errored;
            record.summary.errors += 1;
            record.summary.last_error = Some(match p.error_type {
                Some(kind) => format!("{kind}: {}", p.error_message),
                None => p.error_message,
            });
            self.outcome(state, event, &p.agent_id, true);
        } else if ty == EventType::AGENT_TASK_COMPLETED.as_str() {
            let p: AgentTaskCompleted = decode(event)?;
            let record = record(state, &p.agent_id);
            let s = &mut record.summary;
            s.tasks_completed += 1;
            if p.success {
                s.tasks_succeeded += 1;
                if s.status == AgentStatus::Errored {
                    s.status = AgentStatus::Running;
                }
            } else {
                s.tasks_failed += 1;
            }
            if record.in_progress.remove(&p.task_id) {
                s.tasks_in_progress = s.tasks_in_progress.saturating_sub(1);
            }
            let duration = p.duration_seconds.max(0.0);
            record.duration_total += duration;
            record.durations.push_back(duration);
            if record.durations.len() > DURATIONS_KEPT {
                record.durations.pop_front();
            }
            s.success_rate = Some(s.tasks_succeeded as f64 / s.tasks_completed as f64);
            s.mean_duration_seconds = Some(record.duration_total / s.tasks_completed as f64);
            s.p95_duration_seconds = p95(&record.durations);
            self.outcome(state, event, &p.agent_id, !p.success);
        } else if ty == AGENT_TASK_STARTED {
            let p: AgentTaskStarted = decode(event)?;
            let record = record(state, &p.agent_id);
            record.summary.tasks_started += 1;
            if record.in_progress.insert(p.task_id) {
                record.summary.tasks_in_progress += 1;
            }
            // A task reported only by its start still leaves the set after a while: keep it
            // bounded.
            while record.in_progress.len() > DURATIONS_KEPT {
                record.in_progress.pop_first();
                record.summary.tasks_in_progress =
                    record.summary.tasks_in_progress.saturating_sub(1);
            }
        } else {
            return Err(HandlerError::permanent(format!(
                "the agent handler does not handle {} events",
                event.event_type
            )));
        }
        Ok(())
    }

    /// Adds an outcome to the agent's window and raises an alert when the episode starts.
    fn outcome(&self, state: &mut FleetState, event: &Event, agent_id: &str, failed: bool) {
        let policy = self.policy;
        let record = record(state, agent_id);
        record.outcomes.push_back((event.timestamp, failed));
        let window = time::Duration::try_from(policy.window).unwrap_or(time::Duration::MAX);
        let newest = record
            .outcomes
            .iter()
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(event.timestamp);
        record.outcomes.retain(|(t, _)| newest - *t <= window);
        let total = record.outcomes.len();
        let failures = record.outcomes.iter().filter(|(_, f)| *f).count();
        let rate = failures as f64 / total as f64;
        record.summary.window_error_rate = Some(rate);
        let over = total >= policy.min_outcomes && rate >= policy.error_rate;
        if over && !record.summary.alerting {
            record.summary.alerting = true;
            record.summary.alerts_raised += 1;
            let agent_type = record.summary.agent_type.clone();
            state.alerts_raised += 1;
            match self.alert(event, agent_id, agent_type, failures, total, rate) {
                Ok(alert) => self.outbox.push(alert),
                Err(error) => tracing::error!("could not build the agent alert: {error}"),
            }
        } else if !over && rate < policy.error_rate {
            record.summary.alerting = false;
        }
    }

    fn alert(
        &self,
        cause: &Event,
        agent_id: &str,
        agent_type: Option<String>,
        failures: usize,
        outcomes: usize,
        rate: f64,
    ) -> Result<Event, event_core::Error> {
        ::metrics::counter!(
            crate::middleware::metric_names::ALERTS,
            "handler" => Self::NAME,
            "alert" => "agent_error_rate",
        )
        .increment(1);
        tracing::warn!(agent_id, failures, outcomes, "agent error rate alert");
        let component = format!("agent:{agent_id}");
        cause
            .caused(EventType::SYSTEM_ERROR, self.source.clone())
            .partition_key(component.clone())
            .field("component", component)
            .field(
                "error_message",
                format!(
                    "agent {agent_id} failed {failures} of its last {outcomes} outcomes within {}s ({:.0}%), at or over the alert threshold of {:.0}%",
                    self.policy.window.as_secs(),
                    rate * 100.0,
                    self.policy.error_rate * 100.0
                ),
            )
            .field("severity", "high")
            .field("error_code", "AGENT_ERROR_RATE")
            .field("agent_id", agent_id)
            .field("agent_type", agent_type)
            .field("error_rate", rate)
            .field("failures", failures)
            .field("outcomes", outcomes)
            .field("window_seconds", self.policy.window.as_secs())
            .build()
    }
}

fn record<'a>(state: &'a mut FleetState, agent_id: &str) -> &'a mut AgentRecord {
    state
        .agents
        .entry(agent_id.to_owned())
        .or_insert_with(|| AgentRecord::new(agent_id))
}

/// Nearest-rank 95th percentile.
fn p95(values: &VecDeque<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// `agent.task_started`.
pub(crate) fn agent_task_started() -> EventType {
    <AgentTaskStarted as event_publishers::DomainEvent>::event_type()
}

domain_handler!(AgentEventHandler, fleet, outbox);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_nearest_rank() {
        let values: VecDeque<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(&values), Some(95.0));
        assert_eq!(p95(&VecDeque::from([3.0])), Some(3.0));
        assert_eq!(p95(&VecDeque::new()), None);
    }
}
