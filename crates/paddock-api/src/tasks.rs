//! Tasks and their attempts: enqueue, list, read, cancel (members) and claim (daemons).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::{AttemptOutcome, BlockedReason, FailureReason, TaskStatus};
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId};
use crate::transcripts::{PriorSession, Usage};
use crate::values::{
    ConcurrencyKey, ConcurrencyLimit, DurationMs, JsonObject, MaxAttempts, MaxTasks, Priority,
    WaitMs,
};

/// A task object (DESIGN §4).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub agent_id: AgentId,
    /// The runtime of its agent, or (a pool agent's task) of its latest dispatch; null for a pool
    /// agent's task not dispatched yet.
    pub runtime_id: Option<RuntimeId>,
    pub status: TaskStatus,
    pub priority: i32,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub failure_reason: Option<FailureReason>,
    /// The latest attempt issued (0 before the first claim).
    pub attempt: i32,
    pub max_attempts: i32,
    /// The latest attempt's fencing token.
    pub attempt_id: Option<AttemptId>,
    pub idempotency_key: Option<String>,
    pub run_after: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Usage summed over the task's attempts (null before any was reported).
    pub usage: Option<Usage>,
    /// At most `concurrency_limit` dispatched+running tasks with this key in the workspace.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: i32,
    /// The task's timeouts in milliseconds (its own, or the server's defaults when it was
    /// enqueued); 0: none.
    pub dispatch_timeout_ms: i64,
    pub running_timeout_ms: i64,
    pub queued_ttl_ms: i64,
    /// When the current status times out (queued, dispatched, running); null otherwise.
    pub deadline: Option<DateTime<Utc>>,
    /// Why a queued task is not being claimed (queued tasks of `GET /tasks/{id}` and `GET /tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
}

/// Why a queued task waits (DESIGN §12), computed when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Blocked {
    pub reason: BlockedReason,
    /// With `behind`: 1 is the next task its agent hands out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One attempt of a task: `outcome` is null while it is open.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The attempt's cumulative usage, as its daemon last reported it.
    pub usage: Option<Usage>,
}

/// `GET /tasks/{id}`: the task and its attempts, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskWithAttempts {
    #[serde(flatten)]
    pub task: Task,
    pub attempts: Vec<Attempt>,
}

/// `POST /tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub agent_id: AgentId,
    #[schema(value_type = Object)]
    pub payload: JsonObject,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub max_attempts: MaxAttempts,
    /// 1 to 200 characters; the same key in the same workspace returns the existing task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// At most `concurrency_limit` (default 1) dispatched+running tasks with this key in the
    /// workspace (e.g. one task at a time per repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<ConcurrencyKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// This task's timeouts, instead of the server's defaults: milliseconds or humantime strings,
    /// at most the server's `max_task_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_timeout: Option<DurationMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_timeout: Option<DurationMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ttl: Option<DurationMs>,
}

impl CreateTask {
    /// A task for `agent` with defaults for everything else.
    pub fn new(agent: AgentId, payload: JsonObject) -> Self {
        Self {
            agent_id: agent,
            payload,
            priority: Priority::default(),
            max_attempts: MaxAttempts::default(),
            idempotency_key: None,
            concurrency_key: None,
            concurrency_limit: None,
            dispatch_timeout: None,
            running_timeout: None,
            queued_ttl: None,
        }
    }
}

/// `POST /tasks/batch` (DESIGN §13): 1 to 1000 tasks, each a `POST /tasks` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskBatch {
    pub tasks: Vec<CreateTask>,
}

/// The most tasks one `POST /tasks/batch` may carry.
pub const BATCH_MAX_TASKS: usize = 1000;

/// The answer to `POST /tasks/batch`: one result per item, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResults {
    pub results: Vec<BatchItem>,
}

/// One item's outcome: `status` is what `POST /tasks` would have answered for it (201 created,
/// 200 an idempotency key already used, 404 or 409 refused), with the task or the problem. Under
/// `Prefer: return=minimal` a 201 or 200 names its task by `task_id` alone.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub status: u16,
    /// The task's id (201 and 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::Problem>,
}

/// `POST /tasks/cancel`: cancels every task that matches all the filters given (at least one).
/// `status` defaults to every non-terminal status (queued, dispatched, running).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTasks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<RuntimeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<TaskStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<ConcurrencyKey>,
}

/// The answer to `POST /tasks/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelledTasks {
    pub cancelled: u64,
}

/// A cancelled attempt its daemon must stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelNotice {
    pub task_id: TaskId,
    pub attempt_id: AttemptId,
}

/// `POST /daemon/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub runtime_id: RuntimeId,
    #[serde(default)]
    pub max_tasks: MaxTasks,
    #[serde(default)]
    pub wait_ms: WaitMs,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimedTask {
    pub task_id: TaskId,
    pub attempt_id: AttemptId,
    pub attempt: i32,
    pub agent_id: AgentId,
    pub definition_version: i32,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub priority: i32,
    pub enqueued_at: DateTime<Utc>,
    /// The latest session an earlier attempt reported, for resuming it (absent on a first attempt
    /// and when none was reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_session: Option<PriorSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimReply {
    pub tasks: Vec<ClaimedTask>,
    pub cancel: Vec<CancelNotice>,
}
