//! Task use cases: enqueue, cancel, claim, and the fenced daemon reports.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::json;
use sqlx::PgConnection;

use super::{Changes, commit};
use crate::db;
use crate::db::tasks::{CancelNotice, Claimed, EndAttempt, Fenced, NewTask, Task};
use crate::domain::retry::{AfterFailure, Backoff};
use crate::domain::task::{Decision, FailureReason, ReportAction, TaskStatus, TaskView, decide};
use crate::domain::values::JsonObject;
use crate::error::{ApiError, ApiResult};
use crate::events;
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};
use crate::state::App;

pub struct Enqueue<'a> {
    pub agent: AgentId,
    pub payload: &'a JsonObject,
    pub priority: i32,
    pub max_attempts: i32,
    pub idempotency_key: Option<&'a str>,
}

/// Enqueues a task; returns it and whether it was created now (false: idempotency key reused).
pub async fn enqueue(app: &App, ws: WorkspaceId, req: &Enqueue<'_>) -> ApiResult<(Task, bool)> {
    let mut tx = db::begin_hot(&app.pool).await?;
    if let Some(key) = req.idempotency_key
        && let Some(existing) = db::tasks::get_by_key(&mut tx, ws, key).await?
    {
        return Ok((existing, false));
    }
    let agent = db::agents::for_enqueue(&mut tx, req.agent, ws)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    if agent.archived_at.is_some() {
        return Err(ApiError::Conflict("the agent is archived".into()));
    }
    if agent.runtime_status != "online" {
        return Err(ApiError::RuntimeOffline(agent.runtime_id.to_string()));
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
            .ok_or_else(|| ApiError::Conflict("idempotency key in use".into()))?;
        return Ok((existing, false));
    };
    commit(app, tx, vec![events::task("task.queued", &task)]).await?;
    Ok((task, true))
}

/// Cancels a queued, dispatched or running task. Cancelling a cancelled task answers its state.
pub async fn cancel(app: &App, ws: WorkspaceId, id: TaskId) -> ApiResult<Task> {
    let mut tx = db::begin_hot(&app.pool).await?;
    let task = db::tasks::lock(&mut tx, id, ws)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    let status = parse_status(&task)?;
    if status == TaskStatus::Cancelled {
        return Ok(task);
    }
    if status.is_terminal() {
        return Err(ApiError::InvalidTransition(format!(
            "cannot cancel a {} task",
            task.status
        )));
    }
    let mut ch = Changes::default();
    let from = [status.as_str().to_owned()];
    let end = EndAttempt {
        id,
        attempt_id: task.attempt_id,
        status: "cancelled",
        failure_reason: Some(FailureReason::Cancelled.as_str()),
        error: None,
        run_after: None,
        cancel_pending: status.is_active(),
        from: &from,
    };
    let updated = db::tasks::end_attempt(&mut tx, &end)
        .await?
        .ok_or_else(lost_race)?;
    if status.is_active() {
        // The cancelled attempt stays on the task row (ops.attempts).
        ch.agent_changed(task.agent_id);
    }
    ch.events
        .insert(0, events::task("task.cancelled", &updated));
    commit(app, tx, ch).await?;
    if status.is_active()
        && let Err(e) = app.live.flag_cancel(ws, task.runtime_id).await
    {
        // The claim response still carries it (it reads Postgres), and later reports get 409.
        tracing::warn!(error = %e, "could not flag cancellation in the liveness store");
        metrics::counter!("paddock_liveness_errors_total", "op" => "flag_cancel").increment(1);
    }
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
) -> ApiResult<ClaimResult> {
    let mut tx = db::begin_hot(&app.pool).await?;
    db::runtimes::lock_for_claim(&mut tx, runtime).await?;
    let claimed = db::tasks::claim(&mut tx, runtime, ws, max).await?;
    if claimed.is_empty() {
        // Nothing dispatched: say why when it is the runtime's fault.
        let rt = db::runtimes::get(&mut tx, runtime, ws)
            .await?
            .ok_or(ApiError::NotFound("runtime"))?;
        if rt.status != "online" {
            return Err(ApiError::RuntimeOffline(runtime.to_string()));
        }
    }
    let mut ch = Changes::from(claimed.iter().map(events::dispatched).collect::<Vec<_>>());
    let mut now_working: Vec<&Claimed> = claimed
        .iter()
        .filter(|c| c.agent_was != "working")
        .collect();
    now_working.sort_by_key(|c| c.agent_id);
    now_working.dedup_by_key(|c| c.agent_id);
    for c in now_working {
        ch.push(events::agent(
            "agent.status",
            c.workspace_id,
            c.agent_id,
            json!({ "status": "working" }),
        ));
    }
    let cancel = db::tasks::take_cancels(&mut tx, &[runtime]).await?;
    commit(app, tx, ch).await?;
    Ok(ClaimResult {
        tasks: claimed,
        cancel,
    })
}

/// A daemon's report about one attempt.
#[derive(Debug, Clone)]
pub enum Report {
    Start,
    Progress(JsonObject),
    Complete(JsonObject),
    Fail { error: String, retryable: bool },
}

impl Report {
    pub fn action(&self) -> ReportAction {
        match self {
            Self::Start => ReportAction::Start,
            Self::Progress(_) => ReportAction::Progress,
            Self::Complete(_) => ReportAction::Complete,
            Self::Fail { .. } => ReportAction::Fail,
        }
    }
}

/// One update of a report: the task, the attempt the daemon says it is running, and what happened.
#[derive(Debug, Clone)]
pub struct ReportItem {
    pub task: TaskId,
    pub attempt: AttemptId,
    pub report: Report,
}

/// Applies a daemon's reports in order inside the caller's transaction, each fenced by its attempt
/// id; events are appended to `ch`. Returns one outcome per report: the task as it is afterwards, or
/// the refusal (404, 409) of a report that changed nothing. Any other error aborts the batch.
///
/// Set-based: the batch's tasks are locked with one statement, `decide` judges every report, and the
/// accepted ones are written with one statement per action. A task named twice (start and complete
/// in one batch) is handled in rounds, so each of its reports is judged after the one before it.
/// Events come in round order: a task's own events keep their order. An accepted start whose next
/// report completes the same attempt (and would be accepted after it) is written together with that
/// completion: one row write instead of two, the same row, answers and events.
pub async fn apply_reports(
    conn: &mut PgConnection,
    backoff: Backoff,
    ws: WorkspaceId,
    items: &[ReportItem],
    ch: &mut Changes,
) -> ApiResult<Vec<ApiResult<Task>>> {
    let mut ids: Vec<TaskId> = items.iter().map(|i| i.task).collect();
    ids.sort();
    ids.dedup();
    let mut tasks: HashMap<TaskId, Task> = db::tasks::lock_many(conn, &ids, ws)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let mut out: Vec<Option<ApiResult<Task>>> = items.iter().map(|_| None).collect();
    // A task's k-th report goes in round k: every round is judged against what the rounds before
    // it wrote, so each task's reports apply in order, and a batch of "start, complete" per task
    // takes two rounds however many tasks it names.
    let mut seen: HashMap<TaskId, usize> = HashMap::new();
    let rounds: Vec<usize> = items
        .iter()
        .map(|it| {
            let n = seen.entry(it.task).or_default();
            *n += 1;
            *n - 1
        })
        .collect();
    // Each report's successor: the same task's next report.
    let mut next: Vec<Option<usize>> = vec![None; items.len()];
    let mut last_of: HashMap<TaskId, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(prev) = last_of.insert(item.task, i) {
            next[prev] = Some(i);
        }
    }
    // Completions written ahead, with the start before them: the report's index → the row.
    let mut ahead: HashMap<usize, Task> = HashMap::new();
    let last_round = rounds.iter().copied().max().unwrap_or(0);
    for round in 0..=last_round {
        let mut segment: Vec<Planned> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if rounds[i] != round {
                continue;
            }
            if ahead.contains_key(&i) {
                segment.push(Planned::WrittenAhead(i));
                continue;
            }
            let Some(task) = tasks.get(&item.task) else {
                out[i] = Some(Err(ApiError::NotFound("task")));
                continue;
            };
            let action = item.report.action();
            out[i] = match judge(conn, task, item.attempt, action).await? {
                Decision::Apply => {
                    segment.push(
                        match next[i].filter(|&j| completes_after_start(items, i, j)) {
                            Some(j) => Planned::StartThenComplete(i, j),
                            None => Planned::Write(i),
                        },
                    );
                    None
                }
                Decision::AlreadyApplied => Some(Ok(task.clone())),
                Decision::Superseded => {
                    Some(Err(ApiError::AttemptSuperseded(item.attempt.to_string())))
                }
                Decision::Invalid => Some(Err(ApiError::InvalidTransition(format!(
                    "cannot {} a {} task",
                    action.as_str(),
                    task.status
                )))),
            };
        }
        flush(
            conn, backoff, items, &segment, &mut tasks, &mut ahead, &mut out, ch,
        )
        .await?;
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(lost_race())))
        .collect())
}

/// What `decide` says of a report, given the locked task.
async fn judge(
    conn: &mut PgConnection,
    task: &Task,
    attempt: AttemptId,
    action: ReportAction,
) -> ApiResult<Decision> {
    let status = parse_status(task)?;
    let failed_by_agent = match status {
        TaskStatus::Failed => {
            task.failure_reason.as_deref() == Some(FailureReason::AgentError.as_str())
        }
        TaskStatus::Queued if task.attempt_id == Some(attempt) => {
            db::tasks::attempt_failure_reason(conn, attempt)
                .await?
                .as_deref()
                == Some(FailureReason::AgentError.as_str())
        }
        _ => false,
    };
    let view = TaskView {
        status,
        attempt_id: task.attempt_id,
        started: task.started_at.is_some(),
        failed_by_agent,
    };
    Ok(decide(&view, attempt, action))
}

/// How an accepted report of a round is written.
#[derive(Clone, Copy)]
enum Planned {
    /// By its own action's statement.
    Write(usize),
    /// A start (the first index) written with the completion that follows it (the second), by the
    /// complete statement.
    StartThenComplete(usize, usize),
    /// A completion written in an earlier round with its start.
    WrittenAhead(usize),
}

/// Whether report `j`, the report after `i` of the same task, completes the attempt `i` starts, and
/// `decide` would accept it once the start is written.
fn completes_after_start(items: &[ReportItem], i: usize, j: usize) -> bool {
    let (start, then) = (&items[i], &items[j]);
    let running = TaskView {
        status: TaskStatus::Running,
        attempt_id: Some(start.attempt),
        started: true,
        failed_by_agent: false,
    };
    matches!(start.report, Report::Start)
        && matches!(then.report, Report::Complete(_))
        && decide(&running, then.attempt, ReportAction::Complete) == Decision::Apply
}

/// Writes the accepted reports `segment` of one round (each naming a different task): one statement
/// per action, then the events in report order.
#[allow(clippy::too_many_arguments)]
async fn flush(
    conn: &mut PgConnection,
    backoff: Backoff,
    items: &[ReportItem],
    segment: &[Planned],
    tasks: &mut HashMap<TaskId, Task>,
    ahead: &mut HashMap<usize, Task>,
    out: &mut [Option<ApiResult<Task>>],
    ch: &mut Changes,
) -> ApiResult<()> {
    let batch = |action: ReportAction| -> Vec<Fenced<'_>> {
        segment
            .iter()
            .filter_map(|p| {
                // The report whose task and attempt are written, the one whose data is, and
                // whether the write starts the task as well.
                let (it, with, start) = match (*p, action) {
                    (Planned::Write(i), _) if items[i].report.action() == action => {
                        (&items[i], &items[i], false)
                    }
                    (Planned::StartThenComplete(i, j), ReportAction::Complete) => {
                        (&items[i], &items[j], true)
                    }
                    _ => return None,
                };
                Some(Fenced {
                    id: it.task,
                    attempt: it.attempt,
                    data: match &with.report {
                        Report::Progress(d) | Report::Complete(d) => Some(d),
                        Report::Start | Report::Fail { .. } => None,
                    },
                    start,
                })
            })
            .collect()
    };
    let mut written: HashMap<TaskId, Task> = HashMap::new();
    for action in [
        ReportAction::Start,
        ReportAction::Progress,
        ReportAction::Complete,
    ] {
        let fenced = batch(action);
        if fenced.is_empty() {
            continue;
        }
        let rows = match action {
            ReportAction::Start => db::tasks::start_many(conn, &fenced).await?,
            ReportAction::Progress => db::tasks::progress_many(conn, &fenced).await?,
            _ => db::tasks::complete_many(conn, &fenced).await?,
        };
        written.extend(rows.into_iter().map(|t| (t.id, t)));
    }
    for &planned in segment {
        let i = match planned {
            Planned::Write(i) | Planned::WrittenAhead(i) => i,
            Planned::StartThenComplete(i, j) => {
                // The start's answer and event: the written row as the start alone leaves it.
                let done = written.remove(&items[i].task).ok_or_else(lost_race)?;
                let started = Task {
                    status: TaskStatus::Running.as_str().to_owned(),
                    result: None,
                    finished_at: None,
                    ..done.clone()
                };
                ch.push(events::task("task.running", &started));
                out[i] = Some(Ok(started.clone()));
                tasks.insert(started.id, started);
                ahead.insert(j, done);
                continue;
            }
        };
        let item = &items[i];
        let updated = match &item.report {
            Report::Fail { error, retryable } => {
                let before = tasks.get(&item.task).ok_or_else(lost_race)?;
                fail_active(
                    conn,
                    backoff,
                    before,
                    FailureReason::AgentError,
                    Some(error),
                    *retryable,
                    ch,
                )
                .await?
            }
            report => {
                let t = match ahead.remove(&i) {
                    Some(t) => t,
                    None => written.remove(&item.task).ok_or_else(lost_race)?,
                };
                match report {
                    Report::Start => ch.push(events::task("task.running", &t)),
                    Report::Progress(_) => ch.push(events::task_progress(&t)),
                    _ => {
                        ch.push(events::task("task.completed", &t));
                        ch.agent_changed(t.agent_id);
                    }
                }
                t
            }
        };
        out[i] = Some(Ok(updated.clone()));
        tasks.insert(item.task, updated);
    }
    Ok(())
}

/// Ends the current attempt of an active (dispatched or running) task as failed: back to the queue
/// after a backoff when attempts are left and the failure is retryable, else `failed` for good.
/// Shared by daemon reports, deregistration and the sweepers.
pub async fn fail_active(
    conn: &mut PgConnection,
    backoff: Backoff,
    task: &Task,
    reason: FailureReason,
    error: Option<&str>,
    retryable: bool,
    ch: &mut Changes,
) -> ApiResult<Task> {
    let from = ["dispatched".to_owned(), "running".to_owned()];
    let after = backoff.after_failure(reason, retryable, task.attempt, task.max_attempts);
    let (status, failure_reason, run_after, kind) = match after {
        AfterFailure::Requeue { delay } => {
            let at =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            ("queued", None, Some(at), "task.requeued")
        }
        AfterFailure::Fail => ("failed", Some(reason.as_str()), None, "task.failed"),
    };
    let end = EndAttempt {
        id: task.id,
        attempt_id: task.attempt_id,
        status,
        failure_reason,
        error,
        run_after,
        cancel_pending: false,
        from: &from,
    };
    let updated = db::tasks::end_attempt(conn, &end)
        .await?
        .ok_or_else(lost_race)?;
    if matches!(after, AfterFailure::Requeue { .. }) {
        // The next claim overwrites the attempt on the task row: keep it. A final failure stays on
        // the row (ops.attempts).
        db::tasks::insert_attempt(conn, task, Some(reason.as_str()), error).await?;
    }
    ch.push(events::task_ended(kind, &updated, reason.as_str(), error));
    ch.agent_changed(task.agent_id);
    Ok(updated)
}

/// Fails every dispatched/running task of these runtimes (they went offline).
pub async fn fail_tasks_of_runtimes(
    conn: &mut PgConnection,
    backoff: Backoff,
    ws: Option<WorkspaceId>,
    runtimes: &[RuntimeId],
    ch: &mut Changes,
) -> ApiResult<usize> {
    let ids = db::tasks::active_of_runtimes(conn, runtimes).await?;
    let mut n = 0;
    for id in ids {
        let Some(task) = lock_any(conn, id, ws).await? else {
            continue;
        };
        if parse_status(&task)?.is_active() {
            fail_active(
                conn,
                backoff,
                &task,
                FailureReason::RuntimeOffline,
                None,
                true,
                ch,
            )
            .await?;
            n += 1;
        }
    }
    Ok(n)
}

async fn lock_any(
    conn: &mut PgConnection,
    id: TaskId,
    ws: Option<WorkspaceId>,
) -> ApiResult<Option<Task>> {
    match ws {
        Some(ws) => Ok(db::tasks::lock(conn, id, ws).await?),
        None => Ok(db::tasks::lock_by_id(conn, id).await?),
    }
}

fn parse_status(task: &Task) -> ApiResult<TaskStatus> {
    TaskStatus::parse(&task.status)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown task status {}", task.status)))
}

/// The row was locked by this transaction, so a fenced update cannot miss it; if it does, the
/// invariant broke and the transaction is abandoned.
fn lost_race() -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "fenced task update matched no row while holding its lock"
    ))
}
