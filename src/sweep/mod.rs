//! The sweepers (DESIGN §5): every `sweep_interval`, on the one replica that holds the leader lock,
//! run each sweep once, and record each run in `sweeper_runs`. What each sweep changes is a use case
//! of `service::sweeps`: a few bounded statements over partial indexes of active rows, so its cost
//! does not grow with task history, with the same events and agent-status updates as the API path.

pub mod leader;

use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::service::{self, sweeps};
use crate::state::{App, AppState};

type SweepFn = for<'a> fn(&'a App) -> futures::future::BoxFuture<'a, service::Result<usize>>;

/// The sweeps of one tick, in order, by the name `sweeper_runs` records.
const SWEEPS: [(&str, SweepFn); 9] = [
    ("stale_runtimes", |s| Box::pin(sweeps::stale_runtimes(s))),
    ("dispatch_timeout", |s| {
        Box::pin(sweeps::dispatch_timeout(s))
    }),
    ("running_timeout", |s| Box::pin(sweeps::running_timeout(s))),
    ("queued_expiry", |s| Box::pin(sweeps::queued_expiry(s))),
    ("collector", |s| Box::pin(sweeps::collector(s))),
    ("events_gc", |s| Box::pin(sweeps::events_gc(s))),
    ("tasks_gc", |s| Box::pin(sweeps::tasks_gc(s))),
    ("transcripts_gc", |s| Box::pin(sweeps::transcripts_gc(s))),
    ("attempt_liveness", |s| {
        Box::pin(service::liveness::attempt_liveness(s))
    }),
];

/// One tick: every sweep once, each timed, counted and recorded in `sweeper_runs`.
pub async fn tick(state: &AppState, replica: &str) {
    for (name, sweep) in SWEEPS {
        let started_at = Utc::now();
        let t0 = Instant::now();
        let span = tracing::info_span!("sweep", sweep = name);
        let res = tracing::Instrument::instrument(sweep(state), span).await;
        let elapsed = t0.elapsed();
        metrics::histogram!("paddock_sweep_duration_seconds", "sweep" => name)
            .record(elapsed.as_secs_f64());
        let (rows, error) = match &res {
            Ok(n) => (*n, None),
            Err(e) => {
                tracing::warn!(sweep = name, error = %e, "sweep failed");
                metrics::counter!("paddock_sweep_errors_total", "sweep" => name).increment(1);
                (0, Some(e.to_string()))
            }
        };
        metrics::counter!("paddock_sweep_rows_total", "sweep" => name).increment(rows as u64);
        if rows > 0 {
            tracing::info!(
                sweep = name,
                rows,
                ms = elapsed.as_millis() as u64,
                "sweep changed rows"
            );
        }
        let run = sweeps::Run {
            sweep: name,
            replica,
            started_at,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            rows,
            error: error.as_deref(),
        };
        if let Err(e) = sweeps::record_run(state, &run).await {
            tracing::warn!(error = %e, "could not record the sweep run");
        }
    }
    if let Err(e) = sweeps::trim_runs(state).await {
        tracing::warn!(error = %e, "could not trim sweeper_runs");
    }
}

/// The sweeper loop: try to lead every interval; while leading, tick.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let replica = format!(
        "{}:{}:{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let mut leader = leader::Leader::new(state.settings.database_url.clone().unwrap_or_default());
    let mut interval = tokio::time::interval(state.settings.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    metrics::gauge!("paddock_sweeper_leader").set(0.0);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let leading = leader.ensure().await;
        metrics::gauge!("paddock_sweeper_leader").set(if leading { 1.0 } else { 0.0 });
        if leading {
            tick(&state, &replica).await;
        }
    }
    leader.release().await;
    metrics::gauge!("paddock_sweeper_leader").set(0.0);
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "paddock".into())
}
