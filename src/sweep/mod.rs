//! The sweepers (DESIGN §5): every `sweep_interval`, on the one replica that holds the leader lock,
//! run each sweep once. Each sweep is a few bounded statements over partial indexes of active rows,
//! so its cost does not grow with task history, and it makes its changes through the same service
//! functions as the API (same events, same agent-status updates, same retry rules).

pub mod collector;
pub mod events_gc;
pub mod leader;
pub mod queued_expiry;
pub mod stale_runtimes;
pub mod stale_tasks;

use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::error::ApiResult;
use crate::state::AppState;

/// Most rows one sweep statement picks (queued expiry has its own setting).
pub const SWEEP_BATCH: i64 = 500;
/// Rows of `sweeper_runs` kept.
const RUNS_KEPT: i64 = 5000;

type SweepFn = for<'a> fn(&'a AppState) -> futures::future::BoxFuture<'a, ApiResult<usize>>;

const SWEEPS: [(&str, SweepFn); 6] = [
    ("stale_runtimes", |s| Box::pin(stale_runtimes::run(s))),
    ("dispatch_timeout", |s| {
        Box::pin(stale_tasks::run_dispatched(s))
    }),
    ("running_timeout", |s| Box::pin(stale_tasks::run_running(s))),
    ("queued_expiry", |s| Box::pin(queued_expiry::run(s))),
    ("collector", |s| Box::pin(collector::run(s))),
    ("events_gc", |s| Box::pin(events_gc::run(s))),
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
        if let Ok(mut conn) = state.pool.acquire().await {
            let ms = elapsed.as_secs_f64() * 1000.0;
            let recorded = db::sweeps::record_run(
                &mut conn,
                name,
                replica,
                started_at,
                ms,
                rows as i32,
                error.as_deref(),
            )
            .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record the sweep run");
            }
        }
    }
    if let Ok(mut conn) = state.pool.acquire().await {
        let _ = db::sweeps::trim_runs(&mut conn, RUNS_KEPT).await;
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
