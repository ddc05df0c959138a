//! Agents bound to runtimes.

use chrono::{DateTime, Utc};
use paddock_api::RuntimeSelector;
use paddock_api::{AgentStatus, RuntimeStatus};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::uuids;
use crate::domain::values::JsonObject;
use crate::ids::{AgentId, RuntimeId, WorkspaceId};

/// An `agents` row.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: AgentId,
    pub workspace_id: WorkspaceId,
    /// None for a pool agent.
    pub runtime_id: Option<RuntimeId>,
    pub runtime_selector: Option<Json<RuntimeSelector>>,
    pub name: String,
    pub max_concurrent_tasks: i32,
    pub definition: serde_json::Value,
    pub definition_version: i32,
    pub status: AgentStatus,
    pub paused: bool,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Agent> for paddock_api::Agent {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            runtime_id: a.runtime_id,
            runtime_selector: a.runtime_selector.map(|j| j.0),
            name: a.name,
            max_concurrent_tasks: a.max_concurrent_tasks,
            definition: a.definition,
            definition_version: a.definition_version,
            status: a.status,
            paused: a.paused,
            archived_at: a.archived_at,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

pub struct NewAgent<'a> {
    pub workspace: WorkspaceId,
    /// Bound to this runtime, or (None) to the pool of `selector`.
    pub runtime: Option<RuntimeId>,
    pub selector: Option<&'a RuntimeSelector>,
    pub name: &'a str,
    pub max_concurrent_tasks: i32,
    pub definition: &'a JsonObject,
}

/// Inserts an agent; None when the runtime is not in the workspace.
pub async fn insert(conn: &mut PgConnection, new: &NewAgent<'_>) -> sqlx::Result<Option<Agent>> {
    sqlx::query_file_as!(
        Agent,
        "queries/agents/insert.sql",
        AgentId::new().0,
        new.workspace.0,
        new.runtime.map(|r| r.0),
        new.name,
        new.max_concurrent_tasks,
        Json(new.definition) as _,
        new.selector.map(Json) as _,
    )
    .fetch_optional(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    id: AgentId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_file_as!(Agent, "queries/agents/get.sql", id.0, ws.0)
        .fetch_optional(conn)
        .await
}

pub async fn list(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    after: Option<AgentId>,
    limit: i64,
    include_archived: bool,
) -> sqlx::Result<Vec<Agent>> {
    sqlx::query_file_as!(
        Agent,
        "queries/agents/list.sql",
        ws.0,
        after.map(|a| a.0),
        limit,
        include_archived
    )
    .fetch_all(conn)
    .await
}

pub struct AgentPatch<'a> {
    pub name: Option<&'a str>,
    pub max_concurrent_tasks: Option<i32>,
    pub definition: Option<&'a JsonObject>,
    pub paused: Option<bool>,
}

pub async fn update(
    conn: &mut PgConnection,
    id: AgentId,
    ws: WorkspaceId,
    patch: &AgentPatch<'_>,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_file_as!(
        Agent,
        "queries/agents/update.sql",
        id.0,
        ws.0,
        patch.name,
        patch.max_concurrent_tasks,
        patch.definition.map(Json) as _,
        patch.paused,
    )
    .fetch_optional(conn)
    .await
}

pub async fn archive(
    conn: &mut PgConnection,
    id: AgentId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Agent>> {
    sqlx::query_file_as!(Agent, "queries/agents/archive.sql", id.0, ws.0)
        .fetch_optional(conn)
        .await
}

pub struct ForEnqueue {
    pub id: AgentId,
    /// None for a pool agent.
    pub runtime_id: Option<RuntimeId>,
    pub archived_at: Option<DateTime<Utc>>,
    pub runtime_status: RuntimeStatus,
}

/// The agents tasks are enqueued for (those of the workspace among `ids`), locked against archiving.
pub async fn for_enqueue(
    conn: &mut PgConnection,
    ids: &[AgentId],
    ws: WorkspaceId,
) -> sqlx::Result<Vec<ForEnqueue>> {
    sqlx::query_file_as!(
        ForEnqueue,
        "queries/agents/for_enqueue.sql",
        &super::uuids(ids),
        ws.0
    )
    .fetch_all(conn)
    .await
}

pub struct Definition {
    pub definition_version: i32,
    pub definition: serde_json::Value,
}

pub async fn definition(
    conn: &mut PgConnection,
    id: AgentId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Definition>> {
    sqlx::query_file_as!(Definition, "queries/agents/definition.sql", id.0, ws.0)
        .fetch_optional(conn)
        .await
}

pub struct StatusChange {
    pub id: AgentId,
    pub workspace_id: WorkspaceId,
    pub status: AgentStatus,
}

/// Locks the agents, then recomputes their status; returns those whose status changed.
pub async fn refresh_status(
    conn: &mut PgConnection,
    ids: &[AgentId],
) -> sqlx::Result<Vec<StatusChange>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = uuids(ids);
    sqlx::query_file!("queries/agents/lock.sql", &ids)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query_file_as!(StatusChange, "queries/agents/refresh_status.sql", &ids)
        .fetch_all(conn)
        .await
}

pub async fn of_runtimes(
    conn: &mut PgConnection,
    runtimes: &[RuntimeId],
) -> sqlx::Result<Vec<AgentId>> {
    sqlx::query_file_scalar!("queries/agents/of_runtimes.sql", &uuids(runtimes))
        .fetch_all(conn)
        .await
}
