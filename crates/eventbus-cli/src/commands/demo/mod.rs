//! `eventbus demo`: the seed document's scenarios end to end on the configured bus, with every
//! domain handler: the five publishers, a batch of signals, the views, an agent failing until
//! the alert fires, a dead letter and its redrive, a replay of the last minute, the stats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use event_core::{EventType, HandlerError, SubscriptionSpec, handler_fn};
use event_handlers::{AuditSettings, DomainContext};
use event_manager::{EventBusManager, HandlerSelection};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

mod dashboard;
mod scenarios;

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Signals published through the batch publisher.
    #[arg(long, default_value_t = 3000)]
    signals: usize,
    /// How long to wait for the handlers at each step before giving up, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// After the story, keep the bus running with the HTTP API and its dashboard until
    /// Ctrl-C (a made-up admin token is printed unless EVENT_API_TOKENS is set).
    #[arg(long)]
    serve: bool,
    /// Where `--serve` listens.
    #[arg(long, env = "EVENT_API_ADDR", default_value = event_manager::http::DEFAULT_ADDR)]
    addr: String,
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
    let mut settings = ctx.settings.clone();
    // Consumer groups of its own: a service running the same handlers on this bus keeps its
    // events, and the demo's views see every one of the demo's.
    settings.bus.consumer_group = format!("{}.demo", settings.bus.consumer_group);
    // Every domain handler, whatever the environment selects: the demo shows them all.
    settings.enable_event_handlers = true;
    settings.enabled_event_handlers = HandlerSelection::All;
    let audit_dir = std::env::temp_dir().join(format!("eventbus-demo-audit-{run_id}"));
    let manager = Arc::new(
        EventBusManager::builder(settings.clone())
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
        settings.bus_type
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
    // The summary first, then the dashboard on the bus the story left behind.
    let served = match &result {
        Ok(summary) if args.serve => {
            if ctx.json {
                let mut summary = summary.clone();
                summary["elapsed_seconds"] = json!(started.elapsed().as_secs_f64());
                output::json(&summary)?;
            } else {
                out!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
            }
            dashboard::serve_until_stopped(&manager, &args.addr).await
        }
        _ => Ok(()),
    };
    let stop = manager.stop().await;
    let _ = std::fs::remove_dir_all(&audit_dir);
    let summary = result?;
    served?;
    stop?;
    if args.serve {
        return Ok(Exit::Ok);
    }
    if ctx.json {
        let mut summary = summary;
        summary["elapsed_seconds"] = json!(started.elapsed().as_secs_f64());
        output::json(&summary)?;
    } else {
        out!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(Exit::Ok)
}

/// One run of the demo: what every scenario needs.
struct Demo<'a> {
    ctx: &'a Context,
    manager: &'a Arc<EventBusManager>,
    bus: Arc<dyn event_core::EventBus>,
    args: &'a DemoArgs,
    run_id: &'a str,
    correlation: String,
    timeout: Duration,
    pager_offline: &'a AtomicBool,
    paged: &'a AtomicU64,
}

/// What the scenarios found, for the summary.
struct Findings {
    /// The opportunity view.
    catalogue: Value,
    /// The analyzer's failures before the alert fired.
    failures: u64,
    /// Dead letters redriven.
    redriven: u64,
    /// The signal funnel view.
    funnel: Value,
    /// The system view.
    status: Value,
    /// The last minute's events by type.
    by_type: BTreeMap<String, u64>,
    /// The bus's stats.
    stats: event_manager::ManagerStats,
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
    let demo = Demo {
        ctx,
        manager,
        bus: manager.bus()?,
        args,
        run_id,
        correlation: format!("demo-{run_id}"),
        timeout,
        pager_offline,
        paged,
    };
    let catalogue = demo.opportunities().await?;
    demo.users().await?;
    let findings = Findings {
        catalogue,
        failures: demo.agents().await?,
        redriven: demo.redrive().await?,
        funnel: demo.signals().await?,
        status: demo.system().await?,
        by_type: demo.replay().await?,
        stats: demo.stats().await?,
    };
    demo.summary(&findings)
}

impl Demo<'_> {
    fn say(&self, text: String) {
        if !self.ctx.json {
            out!("{text}");
        }
    }

    fn view(&self, name: &str) -> anyhow::Result<Value> {
        Ok(self
            .manager
            .view(name)
            .with_context(|| format!("no {name} view"))?
            .snapshot())
    }

    /// The closing line and the JSON summary.
    fn summary(&self, findings: &Findings) -> anyhow::Result<Value> {
        let Findings {
            catalogue,
            failures,
            redriven,
            funnel,
            status,
            by_type,
            stats,
        } = findings;
        let replayed: u64 = by_type.values().sum();
        let run_id = self.run_id;
        let audit = self.view("audit")?;
        self.say(format!(
            "\nsummary: {} opportunities in the catalogue, {} users, {} agents ({} alert), {} signals in the funnel, {} audit entries, {} dead letter redriven, {} events replayed",
            catalogue["active"],
            self.view("user")?["registered"],
            self.view("agent")?["agents"].as_array().map_or(0, Vec::len),
            self.view("agent")?["alerts_raised"],
            funnel["detected"],
            audit["entries_written"],
            redriven,
            replayed
        ));
        Ok(json!({
            "backend": stats.backend,
            "run": run_id,
            "handlers": self.manager.handler_names(),
            "views": {
                "opportunity": {"active": catalogue["active"], "validations": catalogue["validations"], "reanalysis_requests": catalogue["reanalysis_requests"].as_array().map_or(0, Vec::len)},
                "user": {"registered": self.view("user")?["registered"], "reputation_changes": self.view("user")?["reputation_changes"]},
                "agent": {"alerts_raised": self.view("agent")?["alerts_raised"], "analyzer_failures": failures},
                "market_signal": {"detected": funnel["detected"], "processed": funnel["processed"], "clustered": funnel["clustered"], "clusters": funnel["cluster_count"]},
                "system": {"degraded": status["degraded"]},
                "audit": {"entries_written": audit["entries_written"]},
            },
            "dead_letters": {"redriven": redriven, "paged": self.paged.load(Ordering::SeqCst)},
            "replayed_last_minute": replayed,
            "replayed_by_type": by_type,
            "signals_published": self.args.signals,
        }))
    }
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
