//! Tasks and their finished attempts.

use chrono::{DateTime, Utc};
use paddock_api::{
    AgentStatus, CancelNotice, FailureReason, PriorSession, RuntimeStatus, TaskStatus, Usage,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::uuids;
use crate::domain::values::JsonObject;
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};

/// A `tasks` row.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: TaskId,
    pub workspace_id: WorkspaceId,
    pub agent_id: AgentId,
    /// None for a pool agent's task while it is queued.
    pub runtime_id: Option<RuntimeId>,
    pub status: TaskStatus,
    pub priority: i32,
    pub payload: serde_json::Value,
    pub progress: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub failure_reason: Option<FailureReason>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub attempt_id: Option<AttemptId>,
    pub idempotency_key: Option<String>,
    pub run_after: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The current attempt's cumulative usage.
    pub usage: Option<Json<Usage>>,
    /// The earlier attempts' usage, summed.
    pub usage_prior: Option<Json<Usage>>,
    /// The latest session any attempt reported.
    pub session: Option<Json<StoredSession>>,
    /// Insertion order: the FIFO tie-break and the list keyset.
    pub seq: i64,
    pub concurrency_key: Option<String>,
    pub concurrency_limit: i32,
    pub dispatch_timeout_ms: i64,
    pub running_timeout_ms: i64,
    pub queued_ttl_ms: i64,
    /// When the current status times out (the sweeps' index).
    pub deadline: Option<DateTime<Utc>>,
}

impl Task {
    /// The session attempt `attempt` reported, if the latest one is its.
    pub fn session_of(&self, attempt: i32) -> Option<StoredSession> {
        self.session
            .as_ref()
            .filter(|s| s.0.attempt == attempt)
            .map(|s| s.0.clone())
    }

    /// Usage summed over the task's attempts.
    pub fn total_usage(&self) -> Option<Usage> {
        match (&self.usage_prior, &self.usage) {
            (Some(p), Some(u)) => Some(p.0.plus(&u.0)),
            (p, u) => p.as_ref().or(u.as_ref()).map(|j| j.0.clone()),
        }
    }
}

/// A session as the task row keeps it: the latest one any attempt reported, with where it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub id: String,
    pub work_dir: Option<String>,
    pub runtime_id: RuntimeId,
    /// The attempt that reported it.
    pub attempt: i32,
}

impl From<Task> for paddock_api::Task {
    fn from(t: Task) -> Self {
        let usage = t.total_usage();
        Self {
            id: t.id,
            agent_id: t.agent_id,
            runtime_id: t.runtime_id,
            status: t.status,
            priority: t.priority,
            payload: t.payload,
            progress: t.progress,
            result: t.result,
            error: t.error,
            failure_reason: t.failure_reason,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            attempt_id: t.attempt_id,
            idempotency_key: t.idempotency_key,
            run_after: t.run_after,
            enqueued_at: t.enqueued_at,
            dispatched_at: t.dispatched_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            usage,
            concurrency_key: t.concurrency_key,
            concurrency_limit: t.concurrency_limit,
            dispatch_timeout_ms: t.dispatch_timeout_ms,
            running_timeout_ms: t.running_timeout_ms,
            queued_ttl_ms: t.queued_ttl_ms,
            deadline: t.deadline,
            blocked: None,
        }
    }
}

pub struct NewTask<'a> {
    pub id: TaskId,
    pub agent: AgentId,
    /// None for a pool agent's task.
    pub runtime: Option<RuntimeId>,
    pub priority: i32,
    pub payload: &'a JsonObject,
    pub max_attempts: i32,
    pub idempotency_key: Option<&'a str>,
    pub concurrency_key: Option<&'a str>,
    pub concurrency_limit: i32,
    /// Timeouts in ms, 0: none.
    pub dispatch_timeout_ms: i64,
    pub running_timeout_ms: i64,
    pub queued_ttl_ms: i64,
}

/// The step of priority aging in ms as the queue's `claim_key` counts it (a task's `claim_key` is
/// its enqueue time in ms minus `priority` steps): `priority_aging`, or, with aging off (0),
/// 10^13 ms (317 years), so that priority decides and then enqueue time.
pub fn aging_step(priority_aging: std::time::Duration) -> i64 {
    match i64::try_from(priority_aging.as_millis()) {
        Ok(0) | Err(_) => 10_000_000_000_000,
        Ok(ms) => ms,
    }
}

/// Inserts tasks set-wise, in order, and answers them as stored. A task whose idempotency key was
/// already used is left out of the answer.
pub async fn insert_many(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    new: &[NewTask<'_>],
    aging_ms: i64,
) -> sqlx::Result<Vec<Task>> {
    /// What the insert decides of a task: the rest is what the caller sent.
    struct Inserted {
        id: TaskId,
        seq: i64,
        enqueued_at: DateTime<Utc>,
    }
    let ids: Vec<uuid::Uuid> = new.iter().map(|t| t.id.0).collect();
    let agents: Vec<uuid::Uuid> = new.iter().map(|t| t.agent.0).collect();
    let runtimes: Vec<Option<uuid::Uuid>> = new.iter().map(|t| t.runtime.map(|r| r.0)).collect();
    let priorities: Vec<i32> = new.iter().map(|t| t.priority).collect();
    let payloads: Vec<String> = new
        .iter()
        .map(|t| serde_json::to_string(t.payload).expect("a JSON object serialises"))
        .collect();
    let max_attempts: Vec<i32> = new.iter().map(|t| t.max_attempts).collect();
    let keys: Vec<Option<&str>> = new.iter().map(|t| t.idempotency_key).collect();
    let ckeys: Vec<Option<&str>> = new.iter().map(|t| t.concurrency_key).collect();
    let climits: Vec<i32> = new.iter().map(|t| t.concurrency_limit).collect();
    let dispatch: Vec<i64> = new.iter().map(|t| t.dispatch_timeout_ms).collect();
    let running: Vec<i64> = new.iter().map(|t| t.running_timeout_ms).collect();
    let ttl: Vec<i64> = new.iter().map(|t| t.queued_ttl_ms).collect();
    let inserted = sqlx::query_file_as!(
        Inserted,
        "queries/tasks/insert_many.sql",
        ws.0,
        &ids,
        &agents,
        &runtimes as &[Option<uuid::Uuid>],
        &priorities,
        &payloads,
        &max_attempts,
        &keys as &[Option<&str>],
        &ckeys as &[Option<&str>],
        &climits,
        &dispatch,
        &running,
        &ttl,
        aging_ms,
    )
    .fetch_all(conn)
    .await?;
    let mut stored: std::collections::HashMap<TaskId, (i64, DateTime<Utc>)> = inserted
        .into_iter()
        .map(|row| (row.id, (row.seq, row.enqueued_at)))
        .collect();
    Ok(new
        .iter()
        .filter_map(|t| {
            let (seq, at) = stored.remove(&t.id)?;
            Some(t.stored(ws, seq, at))
        })
        .collect())
}

impl NewTask<'_> {
    /// The task as `insert_many.sql` stores it (the columns' defaults, the deadline its TTL's).
    fn stored(&self, ws: WorkspaceId, seq: i64, now: DateTime<Utc>) -> Task {
        Task {
            id: self.id,
            workspace_id: ws,
            agent_id: self.agent,
            runtime_id: self.runtime,
            status: TaskStatus::Queued,
            priority: self.priority,
            payload: serde_json::Value::Object(self.payload.clone()),
            progress: None,
            result: None,
            error: None,
            failure_reason: None,
            attempt: 0,
            max_attempts: self.max_attempts,
            attempt_id: None,
            idempotency_key: self.idempotency_key.map(str::to_owned),
            run_after: now,
            enqueued_at: now,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            usage: None,
            usage_prior: None,
            session: None,
            seq,
            concurrency_key: self.concurrency_key.map(str::to_owned),
            concurrency_limit: self.concurrency_limit,
            dispatch_timeout_ms: self.dispatch_timeout_ms,
            running_timeout_ms: self.running_timeout_ms,
            queued_ttl_ms: self.queued_ttl_ms,
            deadline: (self.queued_ttl_ms > 0)
                .then(|| now + chrono::Duration::milliseconds(self.queued_ttl_ms)),
        }
    }
}

/// The tasks enqueued earlier with these idempotency keys.
pub async fn get_by_keys(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    keys: &[&str],
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "queries/tasks/get_by_keys.sql", ws.0, keys as &[&str])
        .fetch_all(conn)
        .await
}

pub async fn get(
    conn: &mut PgConnection,
    id: TaskId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Task>> {
    sqlx::query_file_as!(Task, "queries/tasks/get.sql", id.0, ws.0)
        .fetch_optional(conn)
        .await
}

/// Reads and locks a task for a state change in the current transaction.
pub async fn lock(
    conn: &mut PgConnection,
    id: TaskId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Task>> {
    Ok(lock_many(conn, &[id], ws).await?.pop())
}

/// Reads and locks the workspace's tasks among `ids`, in id order.
pub async fn lock_many(
    conn: &mut PgConnection,
    ids: &[TaskId],
    ws: WorkspaceId,
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(Task, "queries/tasks/lock_many.sql", &uuids(ids), ws.0)
        .fetch_all(conn)
        .await
}

pub struct ListFilter {
    pub status: Option<TaskStatus>,
    pub agent: Option<AgentId>,
    pub runtime: Option<RuntimeId>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

pub async fn list(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    f: &ListFilter,
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_file_as!(
        Task,
        "queries/tasks/list.sql",
        ws.0,
        f.status as _,
        f.agent.map(|a| a.0),
        f.runtime.map(|r| r.0),
        f.before_seq,
        f.limit,
    )
    .fetch_all(conn)
    .await
}

/// A fenced transition of one task in a batch: the task, the attempt the daemon reported, and the
/// JSON it carries (progress or result; unused by `start`).
pub struct Fenced<'a> {
    pub id: TaskId,
    pub attempt: AttemptId,
    pub data: Option<&'a JsonObject>,
    /// For `complete_many`: the task is dispatched and is started in the same write.
    pub start: bool,
    /// The attempt's cumulative usage, when the report carries it.
    pub usage: Option<&'a Usage>,
    /// The session the report carries.
    pub session: Option<StoredSession>,
}

/// A batch's usage and session columns (NULL where a report carries none).
type Extras<'a> = (
    Vec<Option<Json<&'a Usage>>>,
    Vec<Option<Json<StoredSession>>>,
);

/// The usage and session columns of a batch.
fn usage_and_sessions<'a>(batch: &[Fenced<'a>]) -> Extras<'a> {
    batch
        .iter()
        .map(|f| (f.usage.map(Json), f.session.clone().map(Json)))
        .unzip()
}

fn ids_and_attempts(batch: &[Fenced<'_>]) -> (Vec<uuid::Uuid>, Vec<uuid::Uuid>) {
    batch.iter().map(|f| (f.id.0, f.attempt.0)).unzip()
}

fn data<'a>(batch: &[Fenced<'a>], empty: &'a JsonObject) -> Vec<Json<&'a JsonObject>> {
    batch
        .iter()
        .map(|f| Json(f.data.unwrap_or(empty)))
        .collect()
}

/// dispatched → running for each task of the batch whose attempt still owns it.
pub async fn start_many(conn: &mut PgConnection, batch: &[Fenced<'_>]) -> sqlx::Result<Vec<Task>> {
    let (ids, attempts) = ids_and_attempts(batch);
    sqlx::query_file_as!(Task, "queries/tasks/start_many.sql", &ids, &attempts)
        .fetch_all(conn)
        .await
}

/// Sets the progress of each running task of the batch whose attempt still owns it.
pub async fn progress_many(
    conn: &mut PgConnection,
    batch: &[Fenced<'_>],
) -> sqlx::Result<Vec<Task>> {
    let (ids, attempts) = ids_and_attempts(batch);
    let empty = JsonObject::new();
    let progress = data(batch, &empty);
    let (usage, sessions) = usage_and_sessions(batch);
    sqlx::query_file_as!(
        Task,
        "queries/tasks/progress_many.sql",
        &ids,
        &attempts,
        &progress as _,
        &usage as _,
        &sessions as _
    )
    .fetch_all(conn)
    .await
}

/// running → completed (dispatched → completed for a `start` item) for each task of the batch
/// whose attempt still owns it.
pub async fn complete_many(
    conn: &mut PgConnection,
    batch: &[Fenced<'_>],
) -> sqlx::Result<Vec<Task>> {
    let (ids, attempts) = ids_and_attempts(batch);
    let empty = JsonObject::new();
    let results = data(batch, &empty);
    let starts: Vec<bool> = batch.iter().map(|f| f.start).collect();
    let (usage, sessions) = usage_and_sessions(batch);
    sqlx::query_file_as!(
        Task,
        "queries/tasks/complete_many.sql",
        &ids,
        &attempts,
        &results as _,
        &starts,
        &usage as _,
        &sessions as _
    )
    .fetch_all(conn)
    .await
}

/// How an attempt (or a queued task) ends.
pub struct EndAttempt<'a> {
    pub id: TaskId,
    pub attempt_id: Option<AttemptId>,
    /// `queued` (retry), `failed` or `cancelled`.
    pub status: TaskStatus,
    pub failure_reason: Option<FailureReason>,
    pub error: Option<&'a str>,
    pub run_after: Option<DateTime<Utc>>,
    pub cancel_pending: bool,
    /// The statuses the task must be in (the fencing re-check).
    pub from: &'a [TaskStatus],
    /// The attempt's final usage and the task's session, when the report carries them.
    pub usage: Option<&'a Usage>,
    pub session: Option<StoredSession>,
    /// The earlier attempts' usage, summed, as it is after this change.
    pub usage_prior: Option<Usage>,
}

pub async fn end_attempt(
    conn: &mut PgConnection,
    e: &EndAttempt<'_>,
) -> sqlx::Result<Option<Task>> {
    sqlx::query_file_as!(
        Task,
        "queries/tasks/end_attempt.sql",
        e.id.0,
        e.attempt_id.map(|a| a.0),
        e.status as _,
        e.failure_reason as _,
        e.error,
        e.run_after,
        e.cancel_pending,
        e.from as _,
        e.usage.map(Json) as _,
        e.session.clone().map(Json) as _,
        e.usage_prior.clone().map(Json) as _,
    )
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: TaskId,
    pub workspace_id: WorkspaceId,
    pub agent_id: AgentId,
    pub runtime_id: RuntimeId,
    pub attempt_id: AttemptId,
    pub attempt: i32,
    pub priority: i32,
    pub payload: serde_json::Value,
    pub enqueued_at: DateTime<Utc>,
    pub seq: i64,
    pub definition_version: i32,
    /// The agent's status before this claim set it `working`.
    pub agent_was: AgentStatus,
    /// The latest session an earlier attempt reported.
    pub session: Option<Json<StoredSession>>,
    /// Its place in the claim's order (1 first).
    pub pick: i64,
}

impl From<Claimed> for paddock_api::ClaimedTask {
    fn from(c: Claimed) -> Self {
        Self {
            task_id: c.id,
            attempt_id: c.attempt_id,
            attempt: c.attempt,
            agent_id: c.agent_id,
            definition_version: c.definition_version,
            payload: c.payload,
            priority: c.priority,
            enqueued_at: c.enqueued_at,
            prior_session: c.session.map(|Json(s)| PriorSession {
                id: s.id,
                work_dir: s.work_dir,
                runtime_id: s.runtime_id,
            }),
        }
    }
}

/// What a claim's first look found (`claim_look.sql`).
#[derive(Debug)]
pub struct ClaimLook {
    pub status: RuntimeStatus,
    /// A cancellation waits for the runtime's daemon.
    pub cancels: bool,
    /// The runtime is online, not draining, and one of its agents has a task that may run now.
    pub work: bool,
}

/// A claim's first look, outside any transaction: None when the runtime is not in the workspace.
pub async fn claim_look(
    conn: &mut PgConnection,
    runtime: RuntimeId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<ClaimLook>> {
    sqlx::query_file_as!(ClaimLook, "queries/tasks/claim_look.sql", runtime.0, ws.0)
        .fetch_optional(conn)
        .await
}

/// Dispatches up to `max` tasks of the runtime's agents, within the runtime's and the agents' free
/// slots; nothing when the runtime is offline or not in the workspace. The caller holds
/// `runtimes::lock_for_claim`.
pub async fn claim(
    conn: &mut PgConnection,
    runtime: RuntimeId,
    ws: WorkspaceId,
    max: i64,
    aging_step: i64,
) -> sqlx::Result<Vec<Claimed>> {
    let mut rows = sqlx::query_file_as!(
        Claimed,
        "queries/tasks/claim.sql",
        runtime.0,
        ws.0,
        max,
        aging_step
    )
    .fetch_all(conn)
    .await?;
    rows.sort_by_key(|c| c.pick);
    Ok(rows)
}

pub async fn take_cancels(
    conn: &mut PgConnection,
    runtimes: &[RuntimeId],
) -> sqlx::Result<Vec<CancelNotice>> {
    sqlx::query_file_as!(
        CancelNotice,
        "queries/tasks/take_cancels.sql",
        &uuids(runtimes)
    )
    .fetch_all(conn)
    .await
}

pub async fn active_of_runtimes(
    conn: &mut PgConnection,
    runtimes: &[RuntimeId],
) -> sqlx::Result<Vec<TaskId>> {
    sqlx::query_file_scalar!("queries/tasks/active_of_runtimes.sql", &uuids(runtimes))
        .fetch_all(conn)
        .await
}

pub async fn queued_of_agent(conn: &mut PgConnection, agent: AgentId) -> sqlx::Result<Vec<TaskId>> {
    sqlx::query_file_scalar!("queries/tasks/queued_of_agent.sql", agent.0)
        .fetch_all(conn)
        .await
}

/// Reads and locks a task of any workspace (sweepers).
pub async fn lock_by_id(conn: &mut PgConnection, id: TaskId) -> sqlx::Result<Option<Task>> {
    sqlx::query_file_as!(Task, "queries/tasks/lock_by_id.sql", id.0)
        .fetch_optional(conn)
        .await
}

/// What a bulk cancel selects (at least one of agent, runtime, key; DESIGN §12).
pub struct CancelFilter<'a> {
    pub statuses: &'a [TaskStatus],
    pub agent: Option<AgentId>,
    pub runtime: Option<RuntimeId>,
    pub concurrency_key: Option<&'a str>,
    /// Only tasks enqueued up to here.
    pub up_to_seq: i64,
}

/// The next `limit` tasks a bulk cancel takes, oldest first.
pub async fn to_cancel(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    f: &CancelFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<TaskId>> {
    let statuses: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
    sqlx::query_file_scalar!(
        "queries/tasks/to_cancel.sql",
        ws.0,
        &statuses as &[&str],
        f.agent.map(|a| a.0),
        f.runtime.map(|r| r.0),
        f.concurrency_key,
        f.up_to_seq,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn last_seq(conn: &mut PgConnection, ws: WorkspaceId) -> sqlx::Result<i64> {
    sqlx::query_file_scalar!("queries/tasks/last_seq.sql", ws.0)
        .fetch_one(conn)
        .await
}

/// Why the queued tasks among `ids` wait (the others are left out).
pub async fn blocked(
    conn: &mut PgConnection,
    ids: &[TaskId],
    ws: WorkspaceId,
) -> sqlx::Result<Vec<(TaskId, paddock_api::Blocked)>> {
    use paddock_api::BlockedReason;
    use paddock_api::BlockedReason as R;
    let rows = sqlx::query_file!("queries/tasks/blocked.sql", &uuids(ids), ws.0)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let detail = match r.reason {
                R::AgentAtCapacity => Some(format!(
                    "{} of the agent's {} slots in use",
                    r.agent_active, r.agent_max
                )),
                R::KeyAtCapacity => r
                    .key_active
                    .map(|n| format!("{n} task(s) of its concurrency key dispatched or running")),
                R::RuntimeAtCapacity => {
                    Some("every runtime that could run it is at its max_concurrency".to_owned())
                }
                _ => None,
            };
            let position = (r.reason == R::Behind).then_some(r.position);
            (
                r.id,
                paddock_api::Blocked {
                    reason: r.reason,
                    position,
                    detail,
                },
            )
        })
        .collect())
}
