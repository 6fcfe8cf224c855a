//! `eventbus health`: connectivity, round trip, consumers; the exit code is the status.

use event_core::HealthStatus;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

pub(crate) async fn run(ctx: &Context) -> anyhow::Result<Exit> {
    // An unreachable backend is a health answer (unhealthy), not an error of the command.
    let health = match ctx.open().await {
        Ok(manager) => {
            let health = manager.health().await;
            manager.stop().await?;
            Some(health)
        }
        Err(e) if crate::exit::classify(&e) == Exit::Unavailable => {
            if ctx.json {
                output::json(&serde_json::json!({
                    "status": "unhealthy",
                    "backend": ctx.settings.bus_type.as_str(),
                    "problems": [format!("{e:#}")],
                }))?;
            } else {
                out!("unhealthy: {e:#}");
            }
            None
        }
        Err(e) => return Err(e),
    };
    let Some(health) = health else {
        return Ok(Exit::Unhealthy);
    };
    if ctx.json {
        output::json(&health)?;
    } else {
        let status = serde_json::to_value(health.status)?;
        out!(
            "{} ({} backend, round trip {})",
            status.as_str().unwrap_or_default(),
            health.backend,
            health
                .round_trip_ms
                .map(|ms| format!("{ms:.2} ms"))
                .unwrap_or_else(|| "-".into())
        );
        for problem in &health.problems {
            out!("  - {problem}");
        }
    }
    Ok(match health.status {
        HealthStatus::Healthy => Exit::Ok,
        HealthStatus::Degraded => Exit::Degraded,
        _ => Exit::Unhealthy,
    })
}
