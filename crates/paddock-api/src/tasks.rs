//! Tasks and their attempts: enqueue, list, read, cancel (members) and claim (daemons).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::{AttemptOutcome, FailureReason, TaskStatus};
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId};
use crate::transcripts::{PriorSession, Usage};
use crate::values::{JsonObject, MaxAttempts, MaxTasks, Priority, WaitMs};

/// A task object (DESIGN §4).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub agent_id: AgentId,
    pub runtime_id: RuntimeId,
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
        }
    }
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
