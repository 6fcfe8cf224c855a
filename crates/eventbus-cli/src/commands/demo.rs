//! `eventbus demo`: the seed document's scenarios end to end on the configured bus, with every
//! domain handler: the five publishers, a batch of signals, the views, an agent failing until
//! the alert fires, a dead letter and its redrive, a replay of the last minute, the stats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use event_core::{
    DeadLetterSelection, EventType, HandlerError, JsonObject, ReplayQuery, SubscriptionSpec,
    handler_fn,
};
use event_handlers::{AuditSettings, DomainContext};
use event_manager::{EventBusManager, replay_page};
use event_publishers::{
    AgentError, AgentEventPublisher, AgentStarted, AgentStopped, AgentTaskCompleted,
    AgentTaskStarted, BatchPublisher, BatchSettings, MarketSignalEventPublisher,
    OpportunityCreated, OpportunityDeleted, OpportunityEventPublisher, OpportunityUpdated,
    OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed, SystemEventPublisher,
    SystemHealthCheck, SystemMaintenance, UserEventPublisher, UserProfileUpdated, UserRegistered,
    UserReputationChanged,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Signals published through the batch publisher.
    #[arg(long, default_value_t = 3000)]
    signals: usize,
    /// How long to wait for the handlers at each step before giving up, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// The custom handler that pages someone on `system.error`; it is "offline" at first.
const PAGER: &str = "pager";

pub(crate) async fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let run_id = uuid_fragment();
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let say = |text: String| {
        if !ctx.json {
            out!("{text}");
        }
    };

    // The pager: fails while offline, so the alert it receives is dead-lettered.
    let pager_offline = Arc::new(AtomicBool::new(true));
    let paged = Arc::new(AtomicU64::new(0));
    let pager = handler_fn(PAGER, {
        let (offline, paged) = (pager_offline.clone(), paged.clone());
        move |event| {
            let offline = offline.load(Ordering::SeqCst);
            let paged = paged.clone();
            let severity = event.payload.get("severity").cloned();
            async move {
                if offline {
                    return Err(HandlerError::permanent(std::io::Error::other(
                        "the pager service is offline",
                    )));
                }
                if severity == Some(Value::from("high")) {
                    paged.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        }
    });
    let mut config = ctx.config.clone();
    // Consumer groups of its own: a service running the same handlers on this bus keeps its
    // events, and the demo's views see every one of the demo's.
    config.consumer_group = format!("{}.demo", config.consumer_group);
    // Every domain handler, whatever the environment selects: the demo shows them all.
    config.enable_event_handlers = true;
    config.enabled_event_handlers = event_core::HandlerSelection::All;
    let audit_dir = std::env::temp_dir().join(format!("eventbus-demo-audit-{run_id}"));
    let manager = Arc::new(
        EventBusManager::builder(config.clone())
            .explicit_variables(ctx.explicit_variables())
            .handler(
                SubscriptionSpec::new(PAGER, [EventType::SYSTEM_ERROR]),
                pager,
            )
            .domain_context({
                let dir = audit_dir.clone();
                move |bus| {
                    Ok(DomainContext::new(bus).with_audit(AuditSettings::json_lines(dir.clone())))
                }
            })
            .build()?,
    );
    say(format!(
        "eventbus demo on the {} bus (run {run_id})\n",
        config.bus_type
    ));
    say("1. starting the bus with the domain handlers".into());
    manager.start_with_retries(3).await?;
    say(format!(
        "   handlers: {}\n",
        manager.handler_names().join(", ")
    ));
    let result = scenarios(
        ctx,
        &manager,
        &args,
        &run_id,
        timeout,
        &pager_offline,
        &paged,
    )
    .await;
    let stop = manager.stop().await;
    let _ = std::fs::remove_dir_all(&audit_dir);
    let summary = result?;
    stop?;
    if ctx.json {
        let mut summary = summary;
        summary["elapsed_seconds"] = json!(started.elapsed().as_secs_f64());
        output::json(&summary)?;
    } else {
        out!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(Exit::Ok)
}

/// Every scenario; returns the summary.
async fn scenarios(
    ctx: &Context,
    manager: &Arc<EventBusManager>,
    args: &DemoArgs,
    run_id: &str,
    timeout: Duration,
    pager_offline: &AtomicBool,
    paged: &AtomicU64,
) -> anyhow::Result<Value> {
    let say = |text: String| {
        if !ctx.json {
            out!("{text}");
        }
    };
    let bus = manager.bus()?;
    let view = |name: &str| -> anyhow::Result<Value> {
        Ok(manager
            .view(name)
            .with_context(|| format!("no {name} view"))?
            .snapshot())
    };
    let correlation = format!("demo-{run_id}");

    // 2. Opportunities.
    say("2. opportunities: created, validated, updated, deleted".into());
    let opportunities = OpportunityEventPublisher::new(bus.clone()).for_request(&correlation);
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
    wait_for("the opportunity catalogue", timeout, &|| {
        let v = view("opportunity")?;
        let first = &v["opportunities"][opp(0)];
        Ok(first["validation_count"] == 1
            && first["history"].as_array().is_some_and(|h| !h.is_empty())
            && v["opportunities"][opp(1)]["validation_count"] == 1
            && v["deleted"].get(opp(2)).is_some())
    })
    .await?;
    let catalogue = view("opportunity")?;
    say(format!(
        "   catalogue: {} active; {}: {} validation(s), mean score {}, {} re-analysis request(s) after its description changed\n",
        catalogue["active"],
        opp(0),
        catalogue["opportunities"][opp(0)]["validation_count"],
        catalogue["opportunities"][opp(0)]["mean_validation_score"],
        catalogue["opportunities"][opp(0)]["reanalysis_requests"]
    ));

    // 3. Users.
    say("3. users: registered, profile updated, reputation changed".into());
    let users = UserEventPublisher::new(bus.clone()).for_request(&correlation);
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
    wait_for("the user directory", timeout, &|| {
        let v = view("user")?;
        let first = &v["users"][user(0)];
        Ok(v["users"].get(user(2)).is_some()
            && first["ledger"].as_array().is_some_and(|l| l.len() == 3)
            && first["profile_updates"] == 1)
    })
    .await?;
    say(format!(
        "   users: {} registered; {} has reputation {} after {} changes\n",
        view("user")?["registered"],
        user(0),
        view("user")?["users"][user(0)]["reputation"],
        view("user")?["users"][user(0)]["ledger"]
            .as_array()
            .map_or(0, Vec::len)
    ));

    // 4. Agents, one failing until the alert fires.
    say(
        "4. agents: a scraper runs tasks; an analyzer fails until the error-rate alert fires"
            .into(),
    );
    let agents = AgentEventPublisher::new(bus.clone()).for_request(&correlation);
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
        let fleet = view("agent")?;
        Ok(fleet["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["agent_id"] == id).cloned())
            .unwrap_or(Value::Null))
    };
    let spinner = progress(ctx, None, "analyzer failures");
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
        wait_for("the agent handler to see the failure", timeout, &|| {
            Ok(agent_view(&analyzer)?["errors"].as_u64() == Some(failures))
        })
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
    say(format!(
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
    say(format!(
        "   scraper: {} tasks, success rate {}, mean {} s\n",
        scraper_summary["tasks_completed"],
        scraper_summary["success_rate"],
        scraper_summary["mean_duration_seconds"]
    ));

    // 5. A dead letter and its redrive.
    say("5. the pager is offline: the alert lands in its dead-letter queue".into());
    let letters = wait_for_dead_letters(manager, timeout).await?;
    let letter = &letters[0];
    say(format!(
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
    pager_offline.store(false, Ordering::SeqCst);
    let report = bus
        .redrive_dead_letters(PAGER, DeadLetterSelection::All)
        .await?;
    wait_for("the redriven alert to page someone", timeout, &|| {
        Ok(paged.load(Ordering::SeqCst) >= 1)
    })
    .await?;
    say(format!(
        "   the pager is back: {} dead letter(s) redriven and handled\n",
        report.redriven
    ));

    // 6. Market signals: a batch through the batch publisher.
    say(format!(
        "6. signals: {} detected through the batch publisher, then processed and clustered",
        args.signals
    ));
    let signals = MarketSignalEventPublisher::new(bus.clone()).for_request(&correlation);
    let batch = BatchPublisher::new(
        signals.publisher().clone(),
        BatchSettings::from_config(manager.config()),
    );
    let bar = progress(ctx, Some(args.signals as u64), "signals published");
    let sources = ["reddit", "hacker_news", "twitter", "product_hunt"];
    let before = view("market_signal")?["detected"].as_u64().unwrap_or(0);
    for n in 0..args.signals {
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
    let expected = before + args.signals as u64;
    let bar = progress(ctx, Some(args.signals as u64), "signals handled");
    wait_for("the signal funnel to count every signal", timeout, &|| {
        let detected = view("market_signal")?["detected"].as_u64().unwrap_or(0);
        bar.set_position(detected.saturating_sub(before));
        Ok(detected >= expected)
    })
    .await?;
    bar.finish_and_clear();
    wait_for("the clusters", timeout, &|| {
        Ok(view("market_signal")?["clusters"]
            .get(format!("cluster-{run_id}-1"))
            .is_some())
    })
    .await?;
    let funnel = view("market_signal")?;
    say(format!(
        "   funnel: {} detected, {} processed, {} clustered into {} clusters; mean confidence {:.2}\n",
        funnel["detected"],
        funnel["processed"],
        funnel["clustered"],
        funnel["cluster_count"],
        funnel["mean_confidence"].as_f64().unwrap_or(0.0)
    ));

    // 7. System health.
    say("7. system: health checks and a maintenance window".into());
    let system = SystemEventPublisher::new(bus.clone()).for_request(&correlation);
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
    wait_for("the system view", timeout, &|| {
        let v = view("system")?;
        Ok(v["maintenance"].as_array().is_some_and(|m| !m.is_empty())
            && v["components"].get("redis").is_some())
    })
    .await?;
    let status = view("system")?;
    say(format!(
        "   degraded components: {}; errors by severity: {}\n",
        status["degraded"], status["errors_by_severity"]
    ));

    // 8. Replay of the last minute.
    say("8. replay of the last minute, by type".into());
    let from = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = None;
    let bar = progress(ctx, None, "events replayed");
    loop {
        let page = replay_page(bus.as_ref(), ReplayQuery::new([], from), cursor, 1000).await?;
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
    if !ctx.json {
        let rows: Vec<Vec<String>> = by_type
            .iter()
            .map(|(t, n)| vec![t.clone(), n.to_string()])
            .collect();
        output::table_indented("   ", &["event type", "events"], &rows);
        out!("   {replayed} events in the last minute\n");
    }

    // 9. Stats.
    let stats = manager.stats().await?;
    if !ctx.json {
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
    let audit = view("audit")?;
    say(format!(
        "\nsummary: {} opportunities in the catalogue, {} users, {} agents ({} alert), {} signals in the funnel, {} audit entries, {} dead letter redriven, {} events replayed",
        catalogue["active"],
        view("user")?["registered"],
        view("agent")?["agents"].as_array().map_or(0, Vec::len),
        view("agent")?["alerts_raised"],
        funnel["detected"],
        audit["entries_written"],
        report.redriven,
        replayed
    ));
    Ok(json!({
        "backend": stats.backend,
        "run": run_id,
        "handlers": manager.handler_names(),
        "views": {
            "opportunity": {"active": catalogue["active"], "validations": catalogue["validations"], "reanalysis_requests": catalogue["reanalysis_requests"].as_array().map_or(0, Vec::len)},
            "user": {"registered": view("user")?["registered"], "reputation_changes": view("user")?["reputation_changes"]},
            "agent": {"alerts_raised": view("agent")?["alerts_raised"], "analyzer_failures": failures},
            "market_signal": {"detected": funnel["detected"], "processed": funnel["processed"], "clustered": funnel["clustered"], "clusters": funnel["cluster_count"]},
            "system": {"degraded": status["degraded"]},
            "audit": {"entries_written": audit["entries_written"]},
        },
        "dead_letters": {"redriven": report.redriven, "paged": paged.load(Ordering::SeqCst)},
        "replayed_last_minute": replayed,
        "replayed_by_type": by_type,
        "signals_published": args.signals,
    }))
}

/// Waits until the pager's dead-letter queue holds the alert.
async fn wait_for_dead_letters(
    manager: &EventBusManager,
    timeout: Duration,
) -> anyhow::Result<Vec<event_core::DeadLetter>> {
    let bus = manager.bus()?;
    let deadline = Instant::now() + timeout;
    loop {
        match bus.dead_letters(PAGER, 10).await {
            Ok(letters) if !letters.is_empty() => return Ok(letters),
            Ok(_) | Err(event_core::Error::UnknownHandler { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for the alert in the pager's dead-letter queue"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `condition` holds, polling; fails after `timeout` naming what it waited for.
async fn wait_for(
    what: &str,
    timeout: Duration,
    condition: &dyn Fn() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition()? {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn ensure_below(n: u64, limit: u64, what: &str) -> anyhow::Result<()> {
    if n > limit {
        bail!("{what} after {limit} attempts");
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal, or with `--json`).
fn progress(ctx: &Context, len: Option<u64>, what: &str) -> ProgressBar {
    let bar = match len {
        _ if ctx.json => ProgressBar::hidden(),
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        format!("   {{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}})")
    } else {
        format!("   {{spinner}} {{pos}} {what}")
    };
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A short random id for this run's entities.
fn uuid_fragment() -> String {
    let id = event_core::EventId::new().to_string();
    id.rsplit('-').next().unwrap_or_default()[..8].to_string()
}
