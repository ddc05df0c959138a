//! Statements of the sweepers; each relies on a partial index over active rows (see each file).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use paddock_api::{FailureReason, TaskStatus, Usage};
use sqlx::types::Json;

use super::runtimes::Changed;
use super::tasks::{StoredSession, Task};
use super::uuids;
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

pub async fn stale_runtime_candidates(
    conn: &mut PgConnection,
    threshold: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Changed>> {
    sqlx::query_file_as!(
        Changed,
        "queries/sweeps/stale_runtime_candidates.sql",
        secs(threshold),
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn mark_stale_offline(
    conn: &mut PgConnection,
    ids: &[RuntimeId],
    threshold: std::time::Duration,
) -> sqlx::Result<Vec<Changed>> {
    sqlx::query_file_as!(
        Changed,
        "queries/sweeps/mark_stale_offline.sql",
        &uuids(ids),
        secs(threshold)
    )
    .fetch_all(conn)
    .await
}

/// Tasks past their deadline in this status, earliest first, locked.
pub async fn stale_dispatched(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "queries/sweeps/stale_dispatched.sql", limit)
        .fetch_all(conn)
        .await
}

/// Tasks past their deadline in this status, earliest first, locked.
pub async fn stale_running(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "queries/sweeps/stale_running.sql", limit)
        .fetch_all(conn)
        .await
}

pub async fn expire_queued(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "queries/sweeps/expire_queued.sql", limit)
        .fetch_all(conn)
        .await
}

pub async fn collect_runtimes(
    conn: &mut PgConnection,
    ttl: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Changed>> {
    sqlx::query_file_as!(
        Changed,
        "queries/sweeps/collect_runtimes.sql",
        secs(ttl),
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn delete_old_events(
    conn: &mut PgConnection,
    retention: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query_file!(
        "queries/sweeps/delete_old_events.sql",
        secs(retention),
        limit
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

pub async fn delete_old_tasks(
    conn: &mut PgConnection,
    retention: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query_file!(
        "queries/sweeps/delete_old_tasks.sql",
        secs(retention),
        limit
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

pub async fn record_run(
    conn: &mut PgConnection,
    sweep: &str,
    replica: &str,
    started_at: DateTime<Utc>,
    duration_ms: f64,
    rows: i32,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query_file!(
        "queries/sweeps/record_run.sql",
        sweep,
        replica,
        started_at,
        duration_ms,
        rows,
        error
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn trim_runs(conn: &mut PgConnection, keep: i64) -> sqlx::Result<()> {
    sqlx::query_file!("queries/sweeps/trim_runs.sql", keep)
        .execute(conn)
        .await?;
    Ok(())
}
