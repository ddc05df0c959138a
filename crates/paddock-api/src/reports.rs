//! A daemon's reports about one attempt: the single calls (`/tasks/{id}/start|progress|complete|fail`)
//! and the batch (`/daemon/report`).

use serde::{Deserialize, Serialize};

use crate::enums::ReportAction;
use crate::ids::{AttemptId, TaskId};
use crate::problem::Problem;
use crate::tasks::Task;
use crate::transcripts::{Session, Usage};
use crate::values::JsonObject;

/// `POST /tasks/{id}/start`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptOnly {
    pub attempt_id: AttemptId,
}

/// `POST /tasks/{id}/progress`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    pub attempt_id: AttemptId,
    #[schema(value_type = Object)]
    pub progress: JsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// `POST /tasks/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    pub attempt_id: AttemptId,
    #[schema(value_type = Object)]
    pub result: JsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

fn yes() -> bool {
    true
}

/// `POST /tasks/{id}/fail`: `retryable` (default true) lets the task go back to the queue when it
/// has attempts left.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    pub attempt_id: AttemptId,
    pub error: String,
    #[serde(default = "yes")]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// One update of `POST /daemon/report`: the action and the field it needs (`progress`, `result`,
/// or `error` with `retryable`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub task_id: TaskId,
    pub attempt_id: AttemptId,
    pub action: ReportAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// With `progress`, `complete` or `fail`: the attempt's cumulative usage so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// With `progress`, `complete` or `fail`: the agent's resumable session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

impl Update {
    fn new(task_id: TaskId, attempt_id: AttemptId, action: ReportAction) -> Self {
        Self {
            task_id,
            attempt_id,
            action,
            progress: None,
            result: None,
            error: None,
            retryable: None,
            usage: None,
            session: None,
        }
    }

    /// The same update carrying usage and a session.
    pub fn with(mut self, usage: Option<Usage>, session: Option<Session>) -> Self {
        self.usage = usage;
        self.session = session;
        self
    }

    pub fn start(task: TaskId, attempt: AttemptId) -> Self {
        Self::new(task, attempt, ReportAction::Start)
    }

    pub fn progress(task: TaskId, attempt: AttemptId, progress: JsonObject) -> Self {
        Self {
            progress: Some(progress),
            ..Self::new(task, attempt, ReportAction::Progress)
        }
    }

    pub fn complete(task: TaskId, attempt: AttemptId, result: JsonObject) -> Self {
        Self {
            result: Some(result),
            ..Self::new(task, attempt, ReportAction::Complete)
        }
    }

    pub fn fail(task: TaskId, attempt: AttemptId, error: String, retryable: bool) -> Self {
        Self {
            error: Some(error),
            retryable: Some(retryable),
            ..Self::new(task, attempt, ReportAction::Fail)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub updates: Vec<Update>,
}

/// One update's outcome: `status` 200 with the task, or 404/409 with the problem (nothing changed).
/// Under `Prefer: return=minimal` a 200 carries no task (`task_id` names it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportResult {
    pub task_id: TaskId,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportReply {
    pub results: Vec<ReportResult>,
}
