//! Runtimes (one daemon's registration for one provider) and the daemon's own calls about them:
//! register, heartbeat, deregister.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::{HeartbeatStatus, RuntimeStatus};
use crate::ids::RuntimeId;
use crate::tasks::CancelNotice;
use crate::values::{Labels, MaxConcurrency, Name};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Runtime {
    pub id: RuntimeId,
    pub daemon_id: String,
    pub provider: String,
    pub name: String,
    pub version: Option<String>,
    pub max_concurrency: Option<i32>,
    pub status: RuntimeStatus,
    /// A draining runtime gets no new claims; its running tasks finish (`POST /runtimes/{id}/drain`).
    pub draining: bool,
    /// What pools select runtimes by (`runtime_selector` of an agent).
    #[schema(value_type = Object)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub last_seen_at: DateTime<Utc>,
    pub offline_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// `POST /daemon/register`: idempotent on (workspace, daemon_id, provider).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub daemon_id: Name,
    pub provider: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<MaxConcurrency>,
    /// Labels pools select by; a re-registration replaces them (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    pub runtime_id: RuntimeId,
    pub status: RuntimeStatus,
    pub heartbeat_interval_ms: u64,
}

/// `POST /daemon/deregister`: the runtimes the call is about (1 to 1000).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeIds {
    pub runtime_ids: Vec<RuntimeId>,
}

/// `POST /daemon/heartbeat`: the runtimes heard from (1 to 1000) and, optionally, every attempt the
/// daemon holds now for them. Sending `attempts` opts these runtimes into reconciliation
/// (DESIGN §10): listed attempts that are no longer current come back in `cancel`, and active
/// attempts left unlisted for `attempt_lost_grace` fail with `attempt_lost`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub runtime_ids: Vec<RuntimeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<crate::ids::AttemptId>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuntimeState {
    pub runtime_id: RuntimeId,
    pub status: HeartbeatStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatReply {
    pub runtimes: Vec<RuntimeState>,
    /// Attempts the daemon must stop (cancelled since it was last told).
    pub cancel: Vec<CancelNotice>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deregistered {
    /// The runtimes that were online and are offline now.
    pub offline: Vec<RuntimeId>,
}
