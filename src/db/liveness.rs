//! Attempt liveness (DESIGN §10): revoked attempts, the active attempts a sweep compares with
//! their daemons' listings, and the `unlisted_since` mark.

use chrono::{DateTime, Utc};
use paddock_api::{CancelNotice, FailureReason, TaskStatus, Usage};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::tasks::{StoredSession, Task};
use super::uuids;
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};

/// An attempt the server ended while its daemon may still run it.
pub struct Revoked {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub workspace: WorkspaceId,
    pub runtime: RuntimeId,
}

pub async fn revoke(conn: &mut PgConnection, revoked: &[Revoked]) -> sqlx::Result<()> {
    if revoked.is_empty() {
        return Ok(());
    }
    let attempts: Vec<uuid::Uuid> = revoked.iter().map(|r| r.attempt.0).collect();
    let tasks: Vec<uuid::Uuid> = revoked.iter().map(|r| r.task.0).collect();
    let workspaces: Vec<uuid::Uuid> = revoked.iter().map(|r| r.workspace.0).collect();
    let runtimes: Vec<uuid::Uuid> = revoked.iter().map(|r| r.runtime.0).collect();
    sqlx::query_file!(
        "queries/liveness/revoke.sql",
        &attempts,
        &tasks,
        &workspaces,
        &runtimes
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The revoked attempts among `listed`, as cancellations to hand to their daemon.
pub async fn revoked_of(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    listed: &[AttemptId],
) -> sqlx::Result<Vec<CancelNotice>> {
    sqlx::query_file_as!(
        CancelNotice,
        "queries/liveness/revoked_of.sql",
        &uuids(listed),
        ws.0
    )
    .fetch_all(conn)
    .await
}

/// Deletes revocations older than `age`, at most `limit`.
pub async fn forget_revoked(
    conn: &mut PgConnection,
    age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let res = sqlx::query_file!(
        "queries/liveness/forget_revoked.sql",
        age.as_secs_f64(),
        limit
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

pub struct ActiveAttempt {
    pub id: TaskId,
    pub workspace_id: WorkspaceId,
    pub runtime_id: RuntimeId,
    pub attempt_id: AttemptId,
    pub dispatched_at: DateTime<Utc>,
    pub unlisted_since: Option<DateTime<Utc>>,
}

pub async fn active_attempts(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<ActiveAttempt>> {
    sqlx::query_file_as!(ActiveAttempt, "queries/liveness/active_attempts.sql", limit)
        .fetch_all(conn)
        .await
}

/// Sets `unlisted_since` of each (task, attempt) to its time (`None` clears it).
pub async fn mark_unlisted(
    conn: &mut PgConnection,
    marks: &[(TaskId, AttemptId, Option<DateTime<Utc>>)],
) -> sqlx::Result<u64> {
    if marks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = marks.iter().map(|m| m.0.0).collect();
    let attempts: Vec<uuid::Uuid> = marks.iter().map(|m| m.1.0).collect();
    let since: Vec<Option<DateTime<Utc>>> = marks.iter().map(|m| m.2).collect();
    let res = sqlx::query_file!(
        "queries/liveness/mark_unlisted.sql",
        &ids,
        &attempts,
        &since as &[Option<DateTime<Utc>>]
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Active tasks of runtimes offline longer than `grace`, at most `limit`, locked.
pub async fn offline_tasks(
    conn: &mut PgConnection,
    grace: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(
        Task,
        "queries/liveness/offline_tasks.sql",
        grace.as_secs_f64(),
        limit
    )
    .fetch_all(conn)
    .await
}
