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
    pub concurrency_key: Option<&'a str>,
    pub concurrency_limit: i32,
    /// The task's own timeouts (None: the settings').
    pub dispatch_timeout: Option<std::time::Duration>,
    pub running_timeout: Option<std::time::Duration>,
    pub queued_ttl: Option<std::time::Duration>,
}

/// Enqueues a task; returns it and whether it was created now (false: idempotency key reused).
pub async fn enqueue(app: &App, ws: WorkspaceId, req: &Enqueue<'_>) -> Result<(Task, bool)> {
    enqueue_many(app, ws, std::slice::from_ref(req))
        .await?
        .pop()
        .expect("one outcome per item")
}

/// What became of one item of a batch: the task and whether it was created now, or why not.
pub type Enqueued = Result<(Task, bool)>;

/// Enqueues tasks in one transaction (DESIGN §13), each under the rules of a single enqueue: an
/// idempotency key already used, earlier or by an earlier item, answers that task; an unknown or
/// foreign agent, an archived one or an offline runtime refuses the item alone. The accepted items
/// are inserted set-wise with their events; the answer is one outcome per item, in order. The
/// outer error is the transaction's (nothing was written).
pub async fn enqueue_many(
    app: &App,
    ws: WorkspaceId,
    items: &[Enqueue<'_>],
) -> Result<Vec<Enqueued>> {
    use std::collections::{HashMap, HashSet};

    /// Where an item's outcome comes from once the insert has run.
    enum Slot {
        Done(Box<Enqueued>),
        /// Inserted now, unless a concurrent enqueue took its key first.
        New(TaskId),
        /// An earlier item of this batch carries the same key.
        SameKey,
    }

    let mut tx = db::begin_hot(&app.pool).await?;
    let mut keys: Vec<&str> = items.iter().filter_map(|i| i.idempotency_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut by_key: HashMap<String, Task> = if keys.is_empty() {
        HashMap::new()
    } else {
        db::tasks::get_by_keys(&mut tx, ws, &keys)
            .await?
            .into_iter()
            .filter_map(|t| Some((t.idempotency_key.clone()?, t)))
            .collect()
    };
    let mut agent_ids: Vec<AgentId> = items.iter().map(|i| i.agent).collect();
    agent_ids.sort_unstable();
    agent_ids.dedup();
    let agents: HashMap<AgentId, db::agents::ForEnqueue> =
        db::agents::for_enqueue(&mut tx, &agent_ids, ws)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();

    let mut slots = Vec::with_capacity(items.len());
    let mut new = Vec::new();
    let mut taken: HashSet<&str> = HashSet::new();
    for item in items {
        if let Some(key) = item.idempotency_key {
            if let Some(t) = by_key.get(key) {
                slots.push(Slot::Done(Box::new(Ok((t.clone(), false)))));
                continue;
            }
            if taken.contains(key) {
                slots.push(Slot::SameKey);
                continue;
            }
        }
        let admitted = match agents.get(&item.agent) {
            None => Err(Error::NotFound("agent")),
            Some(a) if a.archived_at.is_some() => {
                Err(Error::Conflict("the agent is archived".into()))
            }
            Some(a) if a.runtime_status != RuntimeStatus::Online => Err(match a.runtime_id {
                Some(id) => Error::runtime_offline(id),
                None => Error::RuntimeOffline("no runtime of the agent's pool is online".into()),
            }),
            Some(a) => Ok(a.runtime_id),
        };
        match admitted {
            Err(e) => slots.push(Slot::Done(Box::new(Err(e)))),
            Ok(runtime) => {
                taken.extend(item.idempotency_key);
                let id = TaskId::new();
                let s = &app.settings;
                new.push(NewTask {
                    id,
                    agent: item.agent,
                    runtime,
                    priority: item.priority,
                    payload: item.payload,
                    max_attempts: item.max_attempts,
                    idempotency_key: item.idempotency_key,
                    concurrency_key: item.concurrency_key,
                    concurrency_limit: item.concurrency_limit,
                    dispatch_timeout_ms: ms(item.dispatch_timeout.unwrap_or(s.dispatch_timeout)),
                    running_timeout_ms: ms(item.running_timeout.unwrap_or(s.running_timeout)),
                    queued_ttl_ms: ms(item.queued_ttl.unwrap_or(s.queued_ttl)),
                });
                slots.push(Slot::New(id));
            }
        }
    }

    let inserted = if new.is_empty() {
        Vec::new()
    } else {
        let aging = db::tasks::aging_step(app.settings.priority_aging);
        db::tasks::insert_many(&mut tx, ws, &new, aging).await?
    };
    let events: Vec<_> = inserted
        .iter()
        .map(|t| events::task(EventType::TaskQueued, t))
        .collect();
    commit(app, tx, events).await?;

    let mut created: HashMap<TaskId, Task> = HashMap::with_capacity(inserted.len());
    for t in inserted {
        if let Some(key) = &t.idempotency_key {
            by_key.insert(key.clone(), t.clone());
        }
        created.insert(t.id, t);
    }
    // Items that lost a race on their key: the other enqueue has committed; answer its task.
    let lost: Vec<&str> = new
        .iter()
        .filter(|n| !created.contains_key(&n.id))
        .filter_map(|n| n.idempotency_key)
        .collect();
    if !lost.is_empty() {
        let mut conn = app.pool.acquire().await?;
        for t in db::tasks::get_by_keys(&mut conn, ws, &lost).await? {
            if let Some(key) = t.idempotency_key.clone() {
                by_key.insert(key, t);
            }
        }
    }
    let existing = |key: Option<&str>| -> Enqueued {
        key.and_then(|k| by_key.get(k))
            .map(|t| (t.clone(), false))
            .ok_or_else(|| Error::Conflict("idempotency key in use".into()))
    };
    Ok(slots
        .into_iter()
        .zip(items)
        .map(|(slot, item)| match slot {
            Slot::Done(outcome) => *outcome,
            Slot::New(id) => match created.remove(&id) {
                Some(t) => Ok((t, true)),
                None => existing(item.idempotency_key),
            },
            Slot::SameKey => existing(item.idempotency_key),
        })
        .collect())
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
    let updated = cancel_locked(&mut tx, &task, &mut ch)
        .await?
        .ok_or_else(lost_race)?;
    commit(app, tx, ch).await?;
    Ok(updated)
}

/// Cancels a locked non-terminal task: its event first, and for an active one the agent's status
/// and the daemon's notice. None if the task had moved on.
async fn cancel_locked(
    conn: &mut PgConnection,
    task: &Task,
    ch: &mut Changes,
) -> Result<Option<Task>> {
    let status = task.status;
    let end = EndAttempt {
        id: task.id,
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
    let Some(updated) = db::tasks::end_attempt(conn, &end).await? else {
        return Ok(None);
    };
    if status.is_active() {
        // The cancelled attempt stays on the task row (ops.attempts).
        ch.agent_changed(task.agent_id);
        ch.revoked(task);
    }
    ch.push(events::task(EventType::TaskCancelled, &updated));
    Ok(Some(updated))
}

/// Tasks one bulk-cancel transaction takes.
pub const CANCEL_BATCH: i64 = 200;

/// Cancels every non-terminal task that matches the filter and was enqueued before the call, in
/// transactions of at most [`CANCEL_BATCH`] tasks, each cancellation with its event and (for an
/// active task) its daemon's notice. Returns how many were cancelled.
pub async fn cancel_many(
    app: &App,
    ws: WorkspaceId,
    filter: &db::tasks::CancelFilter<'_>,
) -> Result<u64> {
    let up_to_seq = {
        let mut conn = app.pool.acquire().await?;
        db::tasks::last_seq(&mut conn, ws).await?
    };
    let filter = db::tasks::CancelFilter {
        up_to_seq,
        ..*filter
    };
    let mut cancelled = 0;
    loop {
        let mut tx = db::begin_hot(&app.pool).await?;
        let ids = db::tasks::to_cancel(&mut tx, ws, &filter, CANCEL_BATCH).await?;
        if ids.is_empty() {
            return Ok(cancelled);
        }
        let mut ch = Changes::default();
        for task in db::tasks::lock_many(&mut tx, &ids, ws).await? {
            if task.status.is_terminal() || !filter.statuses.contains(&task.status) {
                continue; // moved on between the pick and the lock
            }
            if cancel_locked(&mut tx, &task, &mut ch).await?.is_some() {
                cancelled += 1;
            }
        }
        commit(app, tx, ch).await?;
    }
}

pub struct ClaimResult {
    pub tasks: Vec<Claimed>,
    pub cancel: Vec<CancelNotice>,
}

/// One claim attempt (no waiting): dispatches up to `max` tasks of the runtime's agents.
///
/// It looks first, in one statement outside any transaction (`db::tasks::claim_look`): when no
/// cancellation waits and no task of the runtime's agents may run now, it answers at once, so an
/// idle daemon's long poll costs one statement instead of a transaction of five. The look only
/// skips claims that would have found nothing.
pub async fn claim(
    app: &App,
    ws: WorkspaceId,
    runtime: RuntimeId,
    max: i64,
) -> Result<ClaimResult> {
    let look = {
        let mut conn = app.pool.acquire().await?;
        db::tasks::claim_look(&mut conn, runtime, ws)
            .await?
            .ok_or(Error::NotFound("runtime"))?
    };
    if !look.cancels && !look.work {
        if look.status != RuntimeStatus::Online {
            return Err(Error::runtime_offline(runtime));
        }
        return Ok(ClaimResult {
            tasks: Vec::new(),
            cancel: Vec::new(),
        });
    }
    // Claims on different runtimes that dispatch tasks of the same concurrency keys take the keys'
    // locks (the gate trigger) in whatever order their rows come: PostgreSQL breaks such a cycle by
    // failing one of them, which then claims again.
    let mut tries = 0;
    loop {
        match claim_once(app, ws, runtime, max).await {
            Err(Error::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("40P01") && tries < 3 =>
            {
                tries += 1;
                metrics::counter!("paddock_claim_deadlocks_total").increment(1);
            }
            other => return other,
        }
    }
}

async fn claim_once(
    app: &App,
    ws: WorkspaceId,
    runtime: RuntimeId,
    max: i64,
) -> Result<ClaimResult> {
    let mut tx = db::begin_hot(&app.pool).await?;
    db::runtimes::lock_for_claim(&mut tx, runtime).await?;
    let aging = db::tasks::aging_step(app.settings.priority_aging);
    let claimed = db::tasks::claim(&mut tx, runtime, ws, max, aging).await?;
    if claimed.is_empty() {
        // Nothing dispatched: say why when it is the runtime's fault.
        let rt = db::runtimes::get(&mut tx, runtime, ws)
            .await?
            .ok_or(Error::NotFound("runtime"))?;
        if rt.status != RuntimeStatus::Online {
            return Err(Error::runtime_offline(runtime));
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
