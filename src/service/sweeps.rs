//! The sweeps' changes (DESIGN §5), one use case each, and the `sweeper_runs` record of every run.
//! `sweep` decides when they run (on the leader, every `sweep_interval`); these decide what they
//! change, through the same functions as the API path (same events, same agent-status updates,
//! same retry rules). Each is a few bounded statements over partial indexes of active rows.

use chrono::{DateTime, Utc};
use paddock_api::EventType;
use serde_json::json;

use super::tasks::{Failure, fail_active};
use super::{Changes, Result, commit, runtimes};
use crate::db;
use crate::db::tasks::Task;
use crate::domain::task::FailureReason;
use crate::events;
use crate::ids::{RuntimeId, WorkspaceId};
use crate::state::App;

/// Most rows one sweep statement picks (queued expiry has its own setting).
pub const SWEEP_BATCH: i64 = 500;
/// Events deleted per statement, and statements per tick, by the event-log sweep.
const EVENTS_BATCH: i64 = 5000;
const EVENT_BATCHES_PER_TICK: usize = 10;
/// Attempt transcripts, and bytes of their content, deleted per statement by the transcript
/// retention sweep (a few such statements per tick).
const TRANSCRIPTS_BATCH: i64 = 100;
const TRANSCRIPT_BYTES: i64 = 16 << 20;
/// Terminal tasks deleted per statement by the task retention sweep.
const TASKS_BATCH: i64 = 500;
/// Rows of `sweeper_runs` kept.
const RUNS_KEPT: i64 = 5000;

/// Sweep 1: online runtimes not seen for `stale_threshold` — minus those the liveness store says
/// are alive (if the store is down, the database is trusted) — go offline; their dispatched/running
/// tasks fail with `runtime_offline` (retried when attempts are left); their agents go offline.
pub async fn stale_runtimes(app: &App) -> Result<usize> {
    let threshold = app.settings.stale_threshold;
    let candidates = {
        let mut conn = app.pool.acquire().await?;
        db::sweeps::stale_runtime_candidates(&mut conn, threshold, SWEEP_BATCH).await?
    };
    if candidates.is_empty() {
        return Ok(0);
    }
    let keys: Vec<(WorkspaceId, RuntimeId)> =
        candidates.iter().map(|c| (c.workspace_id, c.id)).collect();
    // Heartbeats land in the store; last_seen_at lags by up to one flush interval.
    let stale: Vec<RuntimeId> = match app.live.alive(&keys).await {
        Ok(alive) => candidates
            .iter()
            .zip(alive)
            .filter(|(_, a)| !a)
            .map(|(c, _)| c.id)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "liveness store unavailable: the stale sweep trusts the database");
            metrics::counter!("paddock_liveness_errors_total", "op" => "alive").increment(1);
            metrics::counter!("paddock_liveness_fallbacks_total", "op" => "stale_sweep")
                .increment(1);
            candidates.iter().map(|c| c.id).collect()
        }
    };
    if stale.is_empty() {
        return Ok(0);
    }
    let mut tx = db::begin(&app.pool).await?;
    let changed = db::sweeps::mark_stale_offline(&mut tx, &stale, threshold).await?;
    let mut ch = Changes::default();
    let fail_now = app.settings.offline_grace.is_zero();
    runtimes::after_offline(&mut tx, app, &changed, fail_now, &mut ch).await?;
    runtimes::forget(app, &changed).await;
    commit(app, tx, ch).await?;
    Ok(changed.len())
}

/// Sweep 2a: tasks dispatched longer than their `dispatch_timeout` (the task's own, or the setting
/// when it was enqueued; its `deadline`) fail with `dispatch_timeout`.
pub async fn dispatch_timeout(app: &App) -> Result<usize> {
    let mut tx = db::begin(&app.pool).await?;
    let tasks = db::sweeps::stale_dispatched(&mut tx, SWEEP_BATCH).await?;
    fail_all(app, tx, tasks, FailureReason::DispatchTimeout).await
}

/// Sweep 2b: tasks running longer than their `running_timeout` (their `deadline`) fail with
/// `running_timeout`.
pub async fn running_timeout(app: &App) -> Result<usize> {
    let mut tx = db::begin(&app.pool).await?;
    let tasks = db::sweeps::stale_running(&mut tx, SWEEP_BATCH).await?;
    fail_all(app, tx, tasks, FailureReason::RunningTimeout).await
}

async fn fail_all(
    app: &App,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tasks: Vec<Task>,
    reason: FailureReason,
) -> Result<usize> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let mut ch = Changes::default();
    let failure = Failure::server(reason);
    for task in &tasks {
        fail_active(&mut tx, app.backoff(), task, failure, &mut ch).await?;
    }
    commit(app, tx, ch).await?;
    Ok(tasks.len())
}

/// Sweep 3: queued backlog older than its `queued_ttl` (its `deadline`) fails with `queued_expired`
/// (never retried), at most `queued_expire_batch` rows per tick, earliest deadline first, in one
/// short statement.
pub async fn queued_expiry(app: &App) -> Result<usize> {
    let mut tx = db::begin(&app.pool).await?;
    let expired = db::sweeps::expire_queued(&mut tx, app.settings.queued_expire_batch).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let evs: Vec<_> = expired
        .iter()
        .map(|t| events::task(EventType::TaskFailed, t))
        .collect();
    commit(app, tx, evs).await?;
    Ok(expired.len())
}

/// Sweep 4: runtimes offline longer than `offline_runtime_ttl`, with no live agent and no open
/// task, are deleted (their archived agents first).
pub async fn collector(app: &App) -> Result<usize> {
    let mut tx = db::begin(&app.pool).await?;
    let gone = db::sweeps::collect_runtimes(&mut tx, app.settings.offline_runtime_ttl, SWEEP_BATCH)
        .await?;
    if gone.is_empty() {
        return Ok(0);
    }
    let evs: Vec<_> = gone
        .iter()
        .map(|r| events::runtime(EventType::RuntimeDeleted, r.workspace_id, r.id, json!({})))
        .collect();
    commit(app, tx, evs).await?;
    Ok(gone.len())
}

/// Sweep 5: events older than `event_retention` are deleted in batches (at most a few per tick, so
/// a large backlog drains over several ticks without one long statement).
pub async fn events_gc(app: &App) -> Result<usize> {
    let mut total = 0;
    let mut conn = app.pool.acquire().await?;
    for _ in 0..EVENT_BATCHES_PER_TICK {
        let n = db::sweeps::delete_old_events(&mut conn, app.settings.event_retention, EVENTS_BATCH)
            .await? as usize;
        total += n;
        if n < EVENTS_BATCH as usize {
            break;
        }
    }
    Ok(total)
}

/// Sweep 6: terminal tasks finished longer ago than `task_retention` are deleted with their attempts
/// and transcripts, [`TASKS_BATCH`] per statement and a few statements per tick (0 keeps them all).
pub async fn tasks_gc(app: &App) -> Result<usize> {
    let retention = app.settings.task_retention;
    if retention.is_zero() {
        return Ok(0);
    }
    let mut conn = app.pool.acquire().await?;
    let mut total = 0;
    for _ in 0..EVENT_BATCHES_PER_TICK {
        let n = db::sweeps::delete_old_tasks(&mut conn, retention, TASKS_BATCH).await? as usize;
        total += n;
        if n < TASKS_BATCH as usize {
            break;
        }
    }
    Ok(total)
}

/// Sweep 7: transcripts whose first message is older than `transcript_retention` are deleted whole,
/// oldest first, a bounded number of attempts per statement and a few statements per tick.
pub async fn transcripts_gc(app: &App) -> Result<usize> {
    let retention = app.settings.transcript_retention;
    if retention.is_zero() {
        return Ok(0);
    }
    let mut conn = app.pool.acquire().await?;
    let mut total = 0;
    for _ in 0..EVENT_BATCHES_PER_TICK {
        let n = db::transcripts::expire(&mut conn, retention, TRANSCRIPTS_BATCH, TRANSCRIPT_BYTES)
            .await?;
        total += usize::try_from(n).unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    Ok(total)
}

/// One sweep's run, for `sweeper_runs`.
pub struct Run<'a> {
    pub sweep: &'a str,
    pub replica: &'a str,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub rows: usize,
    pub error: Option<&'a str>,
}

/// Records a sweep's run in `sweeper_runs`.
pub async fn record_run(app: &App, run: &Run<'_>) -> Result<()> {
    let mut conn = app.pool.acquire().await?;
    db::sweeps::record_run(
        &mut conn,
        run.sweep,
        run.replica,
        run.started_at,
        run.duration_ms,
        i32::try_from(run.rows).unwrap_or(i32::MAX),
        run.error,
    )
    .await?;
    Ok(())
}

/// Keeps the newest `RUNS_KEPT` rows of `sweeper_runs`.
pub async fn trim_runs(app: &App) -> Result<()> {
    let mut conn = app.pool.acquire().await?;
    db::sweeps::trim_runs(&mut conn, RUNS_KEPT).await?;
    Ok(())
}
