//! Attempts: the finished ones (`ops.attempts`: requeued attempts in `task_attempts`, a task's last
//! one on its row) and the open one, which lives on the task row.

use chrono::{DateTime, Utc};
use paddock_api::{AttemptOutcome, FailureReason, Usage};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::tasks::{StoredSession, Task};
use crate::ids::{AttemptId, RuntimeId, TaskId};

/// A finished attempt, from `ops.attempts`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i32,
    pub attempt_id: AttemptId,
    pub runtime_id: RuntimeId,
    pub dispatched_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<AttemptOutcome>,
    pub failure_reason: Option<FailureReason>,
    pub error: Option<String>,
    pub usage: Option<Json<Usage>>,
}

impl From<Attempt> for paddock_api::Attempt {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            attempt_id: a.attempt_id,
            runtime_id: a.runtime_id,
            dispatched_at: a.dispatched_at,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
            failure_reason: a.failure_reason,
            error: a.error,
            usage: a.usage.map(|Json(u)| u),
        }
    }
}

impl Attempt {
    /// The open attempt of an active task, which lives on the task row.
    pub fn open_of(task: &Task) -> Option<Self> {
        let (attempt_id, dispatched_at) = (task.attempt_id?, task.dispatched_at?);
        let runtime_id = task.runtime_id?;
        task.status.is_active().then_some(Self {
            attempt: task.attempt,
            attempt_id,
            runtime_id,
            dispatched_at,
            started_at: task.started_at,
            finished_at: None,
            outcome: None,
            failure_reason: None,
            error: None,
            usage: task.usage.clone(),
        })
    }
}

/// How a requeued attempt ended.
pub struct Ended<'a> {
    pub reason: FailureReason,
    pub error: Option<&'a str>,
    /// Its final usage.
    pub usage: Option<&'a Usage>,
    /// The session it reported.
    pub session: Option<&'a StoredSession>,
}

/// Records the end of attempt `task.attempt` of `task` (as it was before the change).
pub async fn insert(conn: &mut PgConnection, task: &Task, end: &Ended<'_>) -> sqlx::Result<()> {
    let (Some(attempt_id), Some(dispatched_at), Some(runtime)) =
        (task.attempt_id, task.dispatched_at, task.runtime_id)
    else {
        return Ok(());
    };
    sqlx::query_file!(
        "queries/tasks/insert_attempt.sql",
        attempt_id.0,
        task.id.0,
        task.workspace_id.0,
        task.attempt,
        runtime.0,
        dispatched_at,
        task.started_at,
        end.reason as _,
        end.error,
        end.usage.map(Json) as _,
        end.session.map(Json) as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn of_task(conn: &mut PgConnection, task: TaskId) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_file_as!(Attempt, "queries/tasks/attempts.sql", task.0)
        .fetch_all(conn)
        .await
}

/// Why a failed attempt failed (None: not failed, or not finished).
pub async fn failure_reason(
    conn: &mut PgConnection,
    attempt: AttemptId,
) -> sqlx::Result<Option<FailureReason>> {
    let reason = sqlx::query_file_scalar!("queries/tasks/attempt_failure_reason.sql", attempt.0)
        .fetch_optional(conn)
        .await?;
    Ok(reason.flatten())
}
