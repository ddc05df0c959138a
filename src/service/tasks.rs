//! Task use cases: enqueue, cancel, claim; and ending an active attempt as failed, which reports,
//! deregistration and the sweeps share.

use chrono::Utc;
use paddock_api::{AgentStatus, EventType, RuntimeStatus, TaskStatus, Usage};
use sqlx::PgConnection;

use super::{Changes, Error, Result, commit, error::lost_race};
use crate::db;
use crate::db::tasks::{Claimed, EndAttempt, NewTask, StoredSession, Task};
use crate::domain::retry::{AfterFailure, Backoff};
use crate::domain::task::FailureReason;
use crate::domain::values::JsonObject;
use crate::events;
use crate::ids::{AgentId, RuntimeId, TaskId, WorkspaceId};
use crate::state::App;
use paddock_api::CancelNotice;

pub struct Enqueue<'a> {
    pub agent: AgentId,
    pub payload: &'a JsonObject,
    pub priority: i32,
    pub max_attempts: i32,
    pub idempotency_key: Option<&'a str>,
}

/// Enqueues a task; returns it and whether it was created now (false: idempotency key reused).
pub async fn enqueue(app: &App, ws: WorkspaceId, req: &Enqueue<'_>) -> Result<(Task, bool)> {
    let mut tx = db::begin_hot(&app.pool).await?;
    if let Some(key) = req.idempotency_key
        && let Some(existing) = db::tasks::get_by_key(&mut tx, ws, key).await?
    {
        return Ok((existing, false));
    }
    let agent = db::agents::for_enqueue(&mut tx, req.agent, ws)
        .await?
        .ok_or(Error::NotFound("agent"))?;
    if agent.archived_at.is_some() {
        return Err(Error::Conflict("the agent is archived".into()));
    }
    if agent.runtime_status != RuntimeStatus::Online {
        return Err(Error::RuntimeOffline(agent.runtime_id));
    }
    let new = NewTask {
        workspace: ws,
        agent: req.agent,
        runtime: agent.runtime_id,
        priority: req.priority,
        payload: req.payload,
        max_attempts: req.max_attempts,
        idempotency_key: req.idempotency_key,
    };
    let Some(task) = db::tasks::insert(&mut tx, &new).await? else {
        // Lost a race on the idempotency key: the other insert has committed.
        drop(tx);
        let mut conn = app.pool.acquire().await?;
        let key = req.idempotency_key.unwrap_or_default();
        let existing = db::tasks::get_by_key(&mut conn, ws, key)
            .await?
            .ok_or_else(|| Error::Conflict("idempotency key in use".into()))?;
        return Ok((existing, false));
    };
    commit(app, tx, vec![events::task(EventType::TaskQueued, &task)]).await?;
    Ok((task, true))
}

/// Cancels a queued, dispatched or running task. Cancelling a cancelled task answers its state.
pub async fn cancel(app: &App, ws: WorkspaceId, id: TaskId) -> Result<Task> {
    let mut tx = db::begin_hot(&app.pool).await?;
    let task = db::tasks::lock(&mut tx, id, ws)
        .await?
        .ok_or(Error::NotFound("task"))?;
    let status = task.status;
    if status == TaskStatus::Cancelled {
        return Ok(task);
    }
    if status.is_terminal() {
        return Err(Error::InvalidTransition(format!(
            "cannot cancel a {status} task"
        )));
    }
    let mut ch = Changes::default();
    let end = EndAttempt {
        id,
        attempt_id: task.attempt_id,
        status: TaskStatus::Cancelled,
        failure_reason: Some(FailureReason::Cancelled),
        error: None,
        run_after: None,
        cancel_pending: status.is_active(),
        from: &[status],
        usage: None,
        session: None,
        usage_prior: task.usage_prior.clone().map(|j| j.0),
    };
    let updated = db::tasks::end_attempt(&mut tx, &end)
        .await?
        .ok_or_else(lost_race)?;
    if status.is_active() {
        // The cancelled attempt stays on the task row (ops.attempts).
        ch.agent_changed(task.agent_id);
        ch.revoked(&task);
    }
    ch.events
        .insert(0, events::task(EventType::TaskCancelled, &updated));
    commit(app, tx, ch).await?;
    Ok(updated)
}

pub struct ClaimResult {
    pub tasks: Vec<Claimed>,
    pub cancel: Vec<CancelNotice>,
}

/// One claim attempt (no waiting): dispatches up to `max` tasks of the runtime's agents.
pub async fn claim(
    app: &App,
    ws: WorkspaceId,
    runtime: RuntimeId,
    max: i64,
) -> Result<ClaimResult> {
    let mut tx = db::begin_hot(&app.pool).await?;
    db::runtimes::lock_for_claim(&mut tx, runtime).await?;
    let claimed = db::tasks::claim(&mut tx, runtime, ws, max).await?;
    if claimed.is_empty() {
        // Nothing dispatched: say why when it is the runtime's fault.
        let rt = db::runtimes::get(&mut tx, runtime, ws)
            .await?
            .ok_or(Error::NotFound("runtime"))?;
        if rt.status != RuntimeStatus::Online {
            return Err(Error::RuntimeOffline(runtime));
        }
    }
    let mut ch = Changes::from(claimed.iter().map(events::dispatched).collect::<Vec<_>>());
    let mut now_working: Vec<&Claimed> = claimed
        .iter()
        .filter(|c| c.agent_was != AgentStatus::Working)
        .collect();
    now_working.sort_by_key(|c| c.agent_id);
    now_working.dedup_by_key(|c| c.agent_id);
    for c in now_working {
        ch.push(events::agent(
            EventType::AgentStatus,
            c.workspace_id,
            c.agent_id,
            serde_json::json!({ "status": AgentStatus::Working }),
        ));
    }
    let cancel = db::tasks::take_cancels(&mut tx, &[runtime]).await?;
    commit(app, tx, ch).await?;
    Ok(ClaimResult {
        tasks: claimed,
        cancel,
    })
}

/// Why an active attempt is being failed.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    pub reason: FailureReason,
    pub error: Option<&'a str>,
    pub retryable: bool,
    /// The attempt's final usage and its session, when its daemon reports them with the failure.
    pub usage: Option<&'a Usage>,
    pub session: Option<&'a StoredSession>,
}

impl Failure<'_> {
    /// A failure the server imposes (timeouts, runtime offline, attempt lost): retryable, no text.
    pub fn server(reason: FailureReason) -> Self {
        Self {
            reason,
            error: None,
            retryable: true,
            usage: None,
            session: None,
        }
    }
}

/// Ends the current attempt of an active (dispatched or running) task as failed — back to the queue
/// after a backoff when attempts are left and the failure is retryable, else `failed` for good —
/// and records its event (`task.requeued` or `task.failed`). Shared by daemon reports,
/// deregistration and the sweeps.
pub async fn fail_active(
    conn: &mut PgConnection,
    backoff: Backoff,
    task: &Task,
    failure: Failure<'_>,
    ch: &mut Changes,
) -> Result<Task> {
    let updated = write_failure(conn, backoff, task, failure).await?;
    ch.push(events::task_ended(&updated, failure.reason, failure.error));
    ch.agent_changed(task.agent_id);
    if failure.reason != FailureReason::AgentError {
        // The server ended it: its daemon may still be running it.
        ch.revoked(task);
    }
    Ok(updated)
}

/// The write of [`fail_active`], without its event.
pub async fn write_failure(
    conn: &mut PgConnection,
    backoff: Backoff,
    task: &Task,
    failure: Failure<'_>,
) -> Result<Task> {
    let after = backoff.after_failure(
        failure.reason,
        failure.retryable,
        task.attempt,
        task.max_attempts,
    );
    let (status, failure_reason, run_after) = match after {
        AfterFailure::Requeue { delay } => {
            let at =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            (TaskStatus::Queued, None, Some(at))
        }
        AfterFailure::Fail => (TaskStatus::Failed, Some(failure.reason), None),
    };
    let requeue = matches!(after, AfterFailure::Requeue { .. });
    // The attempt's final usage; a retry adds it to the earlier attempts' and starts from none.
    let usage = failure
        .usage
        .cloned()
        .or_else(|| task.usage.clone().map(|j| j.0));
    let prior = task.usage_prior.clone().map(|j| j.0);
    let usage_prior = match (requeue, &prior, &usage) {
        (true, Some(p), Some(u)) => Some(p.plus(u)),
        (true, None, Some(u)) => Some(u.clone()),
        _ => prior,
    };
    let end = EndAttempt {
        id: task.id,
        attempt_id: task.attempt_id,
        status,
        failure_reason,
        error: failure.error,
        run_after,
        cancel_pending: false,
        from: &[TaskStatus::Dispatched, TaskStatus::Running],
        usage: failure.usage,
        session: failure.session.cloned(),
        usage_prior,
    };
    let updated = db::tasks::end_attempt(conn, &end)
        .await?
        .ok_or_else(lost_race)?;
    if requeue {
        // The next claim overwrites the attempt on the task row: keep it. A final failure stays on
        // the row (ops.attempts).
        let own_session = task.session_of(task.attempt);
        let ended = db::attempts::Ended {
            reason: failure.reason,
            error: failure.error,
            usage: usage.as_ref(),
            session: failure.session.or(own_session.as_ref()),
        };
        db::attempts::insert(conn, task, &ended).await?;
    }
    Ok(updated)
}

/// Fails every dispatched/running task of these runtimes (they went offline).
pub async fn fail_tasks_of_runtimes(
    conn: &mut PgConnection,
    backoff: Backoff,
    runtimes: &[RuntimeId],
    ch: &mut Changes,
) -> Result<usize> {
    let ids = db::tasks::active_of_runtimes(conn, runtimes).await?;
    let failure = Failure::server(FailureReason::RuntimeOffline);
    let mut n = 0;
    for id in ids {
        let Some(task) = db::tasks::lock_by_id(conn, id).await? else {
            continue;
        };
        if task.status.is_active() {
            fail_active(conn, backoff, &task, failure, ch).await?;
            n += 1;
        }
    }
    Ok(n)
}
