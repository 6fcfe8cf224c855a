//! The demo's scenarios, one method of [`Demo`] each, in the order the seed document tells
//! them: opportunities, users, agents (until the alert fires), the pager's dead letter and its
//! redrive, a batch of signals, system health, a replay of the last minute, the stats.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use anyhow::bail;
use event_core::{DeadLetterSelection, JsonObject, ReplayQuery};
use event_manager::replay_page;
use event_publishers::{
    AgentError, AgentEventPublisher, AgentStarted, AgentStopped, AgentTaskCompleted,
    AgentTaskStarted, BatchPublisher, BatchSettings, MarketSignalEventPublisher,
    OpportunityCreated, OpportunityDeleted, OpportunityEventPublisher, OpportunityUpdated,
    OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed, SystemEventPublisher,
    SystemHealthCheck, SystemMaintenance, UserEventPublisher, UserProfileUpdated, UserRegistered,
    UserReputationChanged,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Demo, PAGER, ensure_below, progress, wait_for, wait_for_dead_letters};
use crate::output;

impl Demo<'_> {
    /// The opportunity scenario: created, validated, updated, deleted; returns the catalogue.
    pub(super) async fn opportunities(&self) -> anyhow::Result<Value> {
        let run_id = self.run_id;
        self.say("2. opportunities: created, validated, updated, deleted".into());
        let opportunities =
            OpportunityEventPublisher::new(self.bus.clone()).for_request(&self.correlation);
        let opp = |n: usize| format!("opp-{run_id}-{n}");
        for (n, (title, solution)) in [
            ("AI-Powered Customer Service", "nlp"),
            ("Predictive Maintenance for Wind Farms", "time_series"),
            ("Invoice Fraud Detection", "anomaly_detection"),
        ]
        .into_iter()
        .enumerate()
        {
            opportunities
                .opportunity_created(OpportunityCreated {
                    opportunity_id: opp(n),
                    title: title.into(),
                    description: format!("{title}: an opportunity found by the monitoring agents"),
                    ai_solution_type: solution.into(),
                    market_size_estimate: Some(5_000_000.0 * (n + 1) as f64),
                    created_by: Some("user-456".into()),
                    ..Default::default()
                })
                .await?;
        }
        for (n, score) in [(0, 8.5), (1, 6.0)] {
            opportunities
                .opportunity_validated(OpportunityValidated {
                    opportunity_id: opp(n),
                    validation_id: format!("val-{run_id}-{n}"),
                    validator_id: "expert-7".into(),
                    validation_score: score,
                    validation_type: "market_research".into(),
                    comments: Some("checked against three customer interviews".into()),
                    ..Default::default()
                })
                .await?;
        }
        let mut changes = JsonObject::new();
        changes.insert(
            "description".into(),
            json!("Automated support with retrieval and NLP"),
        );
        opportunities
            .opportunity_updated(OpportunityUpdated {
                opportunity_id: opp(0),
                changes,
                updated_by: Some("user-456".into()),
                ..Default::default()
            })
            .await?;
        opportunities
            .opportunity_deleted(OpportunityDeleted {
                opportunity_id: opp(2),
                deleted_by: "moderator-1".into(),
                reason: Some("duplicate".into()),
                ..Default::default()
            })
            .await?;
        wait_for("the opportunity catalogue", self.timeout, &|| {
            let v = self.view("opportunity")?;
            let first = &v["opportunities"][opp(0)];
            Ok(first["validation_count"] == 1
                && first["history"].as_array().is_some_and(|h| !h.is_empty())
                && v["opportunities"][opp(1)]["validation_count"] == 1
                && v["deleted"].get(opp(2)).is_some())
        })
        .await?;
        let catalogue = self.view("opportunity")?;
        self.say(format!(
            "   catalogue: {} active; {}: {} validation(s), mean score {}, {} re-analysis request(s) after its description changed\n",
            catalogue["active"],
            opp(0),
            catalogue["opportunities"][opp(0)]["validation_count"],
            catalogue["opportunities"][opp(0)]["mean_validation_score"],
            catalogue["opportunities"][opp(0)]["reanalysis_requests"]
        ));
        Ok(catalogue)
    }

    /// The user scenario: registered, profile updated, reputation changed.
    pub(super) async fn users(&self) -> anyhow::Result<()> {
        let run_id = self.run_id;
        self.say("3. users: registered, profile updated, reputation changed".into());
        let users = UserEventPublisher::new(self.bus.clone()).for_request(&self.correlation);
        let user = |n: usize| format!("user-{run_id}-{n}");
        for n in 0..3 {
            users
                .user_registered(UserRegistered {
                    user_id: user(n),
                    email: format!("user{n}@example.com"),
                    username: Some(format!("user{n}")),
                    user_type: if n == 0 {
                        "expert".into()
                    } else {
                        "user".into()
                    },
                    extra: JsonObject::new(),
                })
                .await?;
        }
        let mut profile = JsonObject::new();
        profile.insert("bio".into(), json!("validates fintech opportunities"));
        users
            .user_profile_updated(UserProfileUpdated {
                user_id: user(0),
                changes: profile,
                ..Default::default()
            })
            .await?;
        for (old, new, reason) in [
            (0.0, 10.0, "first validation"),
            (10.0, 25.0, "validation upvoted"),
            (25.0, 20.0, "validation disputed"),
        ] {
            users
                .user_reputation_changed(UserReputationChanged {
                    user_id: user(0),
                    old_score: old,
                    new_score: new,
                    reason: reason.into(),
                    ..Default::default()
                })
                .await?;
        }
        wait_for("the user directory", self.timeout, &|| {
            let v = self.view("user")?;
            let first = &v["users"][user(0)];
            Ok(v["users"].get(user(2)).is_some()
                && first["ledger"].as_array().is_some_and(|l| l.len() == 3)
                && first["profile_updates"] == 1)
        })
        .await?;
        self.say(format!(
            "   users: {} registered; {} has reputation {} after {} changes\n",
            self.view("user")?["registered"],
            user(0),
            self.view("user")?["users"][user(0)]["reputation"],
            self.view("user")?["users"][user(0)]["ledger"]
                .as_array()
                .map_or(0, Vec::len)
        ));
        Ok(())
    }

    /// The agent scenario: a scraper runs tasks, an analyzer fails until the error-rate alert fires; returns the analyzer's failures.
    pub(super) async fn agents(&self) -> anyhow::Result<u64> {
        let run_id = self.run_id;
        self.say(
            "4. agents: a scraper runs tasks; an analyzer fails until the error-rate alert fires"
                .into(),
        );
        let agents = AgentEventPublisher::new(self.bus.clone()).for_request(&self.correlation);
        let (scraper, analyzer) = (format!("scraper-{run_id}"), format!("analyzer-{run_id}"));
        for (id, kind) in [
            (&scraper, "reddit_monitor"),
            (&analyzer, "opportunity_analyzer"),
        ] {
            agents
                .agent_started(AgentStarted {
                    agent_id: id.clone(),
                    agent_type: kind.into(),
                    ..Default::default()
                })
                .await?;
        }
        for t in 0..6 {
            let task_id = format!("task-{run_id}-{t}");
            agents
                .agent_task_started(AgentTaskStarted {
                    agent_id: scraper.clone(),
                    task_id: task_id.clone(),
                    task_type: "scrape_subreddit".into(),
                    ..Default::default()
                })
                .await?;
            agents
                .agent_task_completed(AgentTaskCompleted {
                    agent_id: scraper.clone(),
                    task_id,
                    task_type: "scrape_subreddit".into(),
                    duration_seconds: 1.5 + t as f64 * 0.25,
                    success: true,
                    result: Some(json!({"posts": 40 + t})),
                    extra: JsonObject::new(),
                })
                .await?;
        }
        let agent_view = |id: &str| -> anyhow::Result<Value> {
            let fleet = self.view("agent")?;
            Ok(fleet["agents"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["agent_id"] == id).cloned())
                .unwrap_or(Value::Null))
        };
        let spinner = progress(self.ctx, None, "analyzer failures");
        let mut failures = 0u64;
        loop {
            failures += 1;
            ensure_below(failures, 50, "the alert never fired")?;
            agents
                .agent_error(AgentError {
                    agent_id: analyzer.clone(),
                    agent_type: "opportunity_analyzer".into(),
                    error_message: "upstream model timed out".into(),
                    error_type: Some("TimeoutError".into()),
                    ..Default::default()
                })
                .await?;
            spinner.set_position(failures);
            wait_for(
                "the agent handler to see the failure",
                self.timeout,
                &|| Ok(agent_view(&analyzer)?["errors"].as_u64() == Some(failures)),
            )
            .await?;
            if agent_view(&analyzer)?["alerts_raised"]
                .as_u64()
                .unwrap_or(0)
                >= 1
            {
                break;
            }
        }
        spinner.finish_and_clear();
        self.say(format!(
            "   the analyzer failed {failures} times in a row: the agent handler published a system.error alert"
        ));
        agents
            .agent_stopped(AgentStopped {
                agent_id: analyzer.clone(),
                agent_type: "opportunity_analyzer".into(),
                reason: "error rate over threshold".into(),
                uptime_seconds: Some(42.0),
                ..Default::default()
            })
            .await?;
        let scraper_summary = agent_view(&scraper)?;
        self.say(format!(
            "   scraper: {} tasks, success rate {}, mean {} s\n",
            scraper_summary["tasks_completed"],
            scraper_summary["success_rate"],
            scraper_summary["mean_duration_seconds"]
        ));
        Ok(failures)
    }

    /// The pager's dead letter (the alert) and its redrive once the pager is back; returns how many were redriven.
    pub(super) async fn redrive(&self) -> anyhow::Result<u64> {
        self.say("5. the pager is offline: the alert lands in its dead-letter queue".into());
        let letters = wait_for_dead_letters(self.manager, self.timeout).await?;
        let letter = &letters[0];
        self.say(format!(
            "   dead letter {}: {} ({}), after {} attempt(s)",
            letter.id,
            letter
                .event
                .as_ref()
                .map(|e| e.event_type.to_string())
                .unwrap_or_default(),
            letter.last_error,
            letter.attempts
        ));
        self.pager_offline.store(false, Ordering::SeqCst);
        let report = self
            .bus
            .redrive_dead_letters(PAGER, DeadLetterSelection::All)
            .await?;
        wait_for("the redriven alert to page someone", self.timeout, &|| {
            Ok(self.paged.load(Ordering::SeqCst) >= 1)
        })
        .await?;
        self.say(format!(
            "   the pager is back: {} dead letter(s) redriven and handled\n",
            report.redriven
        ));
        Ok(report.redriven)
    }

    /// The signal scenario: a batch of detected signals through the batch publisher, then processed and clustered; returns the funnel.
    pub(super) async fn signals(&self) -> anyhow::Result<Value> {
        let run_id = self.run_id;
        self.say(format!(
            "6. signals: {} detected through the batch publisher, then processed and clustered",
            self.args.signals
        ));
        let signals =
            MarketSignalEventPublisher::new(self.bus.clone()).for_request(&self.correlation);
        let batch = BatchPublisher::new(
            signals.publisher().clone(),
            BatchSettings::from_config(self.manager.config()),
        );
        let bar = progress(
            self.ctx,
            Some(self.args.signals as u64),
            "signals published",
        );
        let sources = ["reddit", "hacker_news", "twitter", "product_hunt"];
        let before = self.view("market_signal")?["detected"]
            .as_u64()
            .unwrap_or(0);
        for n in 0..self.args.signals {
            batch
                .add(SignalDetected {
                    signal_id: format!("sig-{run_id}-{n}"),
                    source: sources[n % sources.len()].into(),
                    signal_type: if n % 3 == 0 {
                        "pain_point".into()
                    } else {
                        "feature_request".into()
                    },
                    content: format!("signal {n}: customers ask for better support automation"),
                    confidence: ((n * 37) % 100) as f64 / 100.0,
                    ..Default::default()
                })
                .await?;
            if n % 100 == 0 {
                bar.set_position(n as u64);
            }
        }
        let flush = batch.close().await;
        bar.finish_and_clear();
        if !flush.failed.is_empty() {
            bail!(
                "{} signals could not be published: {}",
                flush.failed.len(),
                flush.failed[0].error
            );
        }
        for n in 0..20 {
            signals
                .signal_processed(SignalProcessed {
                    signal_id: format!("sig-{run_id}-{n}"),
                    processing_result: json!({"sentiment": "negative", "topic": "support"}),
                    quality_score: Some(0.5 + (n % 5) as f64 / 10.0),
                    ..Default::default()
                })
                .await?;
        }
        for c in 0..2 {
            signals
                .signal_clustered(SignalClustered {
                    cluster_id: format!("cluster-{run_id}-{c}"),
                    signal_ids: (0..10)
                        .map(|n| format!("sig-{run_id}-{}", c * 10 + n))
                        .collect(),
                    cluster_theme: ["support automation", "invoice errors"][c].into(),
                    ..Default::default()
                })
                .await?;
        }
        let expected = before + self.args.signals as u64;
        let bar = progress(self.ctx, Some(self.args.signals as u64), "signals handled");
        wait_for(
            "the signal funnel to count every signal",
            self.timeout,
            &|| {
                let detected = self.view("market_signal")?["detected"]
                    .as_u64()
                    .unwrap_or(0);
                bar.set_position(detected.saturating_sub(before));
                Ok(detected >= expected)
            },
        )
        .await?;
        bar.finish_and_clear();
        wait_for("the clusters", self.timeout, &|| {
            Ok(self.view("market_signal")?["clusters"]
                .get(format!("cluster-{run_id}-1"))
                .is_some())
        })
        .await?;
        let funnel = self.view("market_signal")?;
        self.say(format!(
            "   funnel: {} detected, {} processed, {} clustered into {} clusters; mean confidence {:.2}\n",
            funnel["detected"],
            funnel["processed"],
            funnel["clustered"],
            funnel["cluster_count"],
            funnel["mean_confidence"].as_f64().unwrap_or(0.0)
        ));
        Ok(funnel)
    }

    /// The system scenario: health checks and a maintenance window; returns the system view.
    pub(super) async fn system(&self) -> anyhow::Result<Value> {
        self.say("7. system: health checks and a maintenance window".into());
        let system = SystemEventPublisher::new(self.bus.clone()).for_request(&self.correlation);
        for (component, status, ms) in [
            ("api", "healthy", 12.0),
            ("database", "degraded", 850.0),
            ("redis", "healthy", 1.2),
        ] {
            system
                .health_check(SystemHealthCheck {
                    component: component.into(),
                    status: status.into(),
                    response_time_ms: Some(ms),
                    ..Default::default()
                })
                .await?;
        }
        system
            .maintenance_scheduled(SystemMaintenance {
                maintenance_type: "database_upgrade".into(),
                start_time: OffsetDateTime::now_utc() + time::Duration::hours(24),
                estimated_duration: "2 hours".into(),
                affected_components: vec!["database".into(), "api".into()],
                extra: JsonObject::new(),
            })
            .await?;
        wait_for("the system view", self.timeout, &|| {
            let v = self.view("system")?;
            Ok(v["maintenance"].as_array().is_some_and(|m| !m.is_empty())
                && v["components"].get("redis").is_some())
        })
        .await?;
        let status = self.view("system")?;
        self.say(format!(
            "   degraded components: {}; errors by severity: {}\n",
            status["degraded"], status["errors_by_severity"]
        ));
        Ok(status)
    }

    /// A replay of the last minute; returns the events by type.
    pub(super) async fn replay(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        self.say("8. replay of the last minute, by type".into());
        let from = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut cursor = None;
        let bar = progress(self.ctx, None, "events replayed");
        loop {
            let page =
                replay_page(self.bus.as_ref(), ReplayQuery::new([], from), cursor, 1000).await?;
            for event in &page.events {
                *by_type.entry(event.event_type.to_string()).or_default() += 1;
            }
            bar.inc(page.events.len() as u64);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        bar.finish_and_clear();
        let replayed: u64 = by_type.values().sum();
        if !self.ctx.json {
            let rows: Vec<Vec<String>> = by_type
                .iter()
                .map(|(t, n)| vec![t.clone(), n.to_string()])
                .collect();
            output::table_indented("   ", &["event type", "events"], &rows);
            out!("   {replayed} events in the last minute\n");
        }
        Ok(by_type)
    }

    /// The stats of the bus, as a table.
    pub(super) async fn stats(&self) -> anyhow::Result<event_manager::ManagerStats> {
        let stats = self.manager.stats().await?;
        if !self.ctx.json {
            out!("9. stats of the {} bus", stats.backend);
            let rows: Vec<Vec<String>> = stats
                .handlers
                .iter()
                .filter(|(_, h)| h.origin != "none")
                .map(|(name, h)| {
                    vec![
                        name.clone(),
                        h.processed.to_string(),
                        h.failed.to_string(),
                        h.dead_lettered.to_string(),
                        h.lag.to_string(),
                        format!("{:.1}", h.events_per_second),
                    ]
                })
                .collect();
            output::table_indented(
                "   ",
                &[
                    "handler",
                    "processed",
                    "failed",
                    "dead-lettered",
                    "lag",
                    "ev/s",
                ],
                &rows,
            );
        }
        Ok(stats)
    }
}
