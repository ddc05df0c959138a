//! Agents, bound to a runtime, and their definitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::AgentStatus;
use crate::ids::{AgentId, RuntimeId};
use crate::values::{JsonObject, MaxConcurrentTasks, Name};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub runtime_id: RuntimeId,
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

/// `POST /agents`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub name: Name,
    pub runtime_id: RuntimeId,
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
