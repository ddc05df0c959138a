//! Agents, bound to a runtime, and their definitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::AgentStatus;
use crate::ids::{AgentId, RuntimeId};
use crate::values::{JsonObject, Labels, MaxConcurrentTasks, Name};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    /// The runtime the agent is bound to; null for a pool agent.
    pub runtime_id: Option<RuntimeId>,
    /// The pool a pool agent's tasks go to (null for an agent bound to a runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_selector: Option<RuntimeSelector>,
    pub name: String,
    pub max_concurrent_tasks: i32,
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    pub definition_version: i32,
    pub status: AgentStatus,
    /// A paused agent's tasks stay queued and are not claimed.
    pub paused: bool,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A pool (DESIGN §12): any online runtime of the workspace with this provider whose labels include
/// these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSelector {
    pub provider: Name,
    #[serde(default)]
    pub labels: Labels,
}

/// `POST /agents`: bound to one runtime (`runtime_id`) or to a pool (`runtime_selector`), not both.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<RuntimeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_selector: Option<RuntimeSelector>,
    #[serde(default)]
    pub max_concurrent_tasks: MaxConcurrentTasks,
    #[schema(value_type = Object)]
    pub definition: JsonObject,
}

/// `PATCH /agents/{id}`: the fields to change. A new `definition` bumps `definition_version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_tasks: Option<MaxConcurrentTasks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<JsonObject>,
    /// Pause (true) or resume (false) claiming the agent's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// `GET /daemon/agents/{id}/definition`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DefinitionReply {
    pub agent_id: AgentId,
    pub version: i32,
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
}
