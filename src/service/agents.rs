//! Agent use cases: create, update, archive.

use serde_json::json;

use super::commit;
use crate::db;
use crate::db::agents::{Agent, AgentPatch, NewAgent};
use crate::db::tasks::EndAttempt;
use crate::domain::task::FailureReason;
use crate::error::{ApiError, ApiResult};
use crate::events;
use crate::ids::{AgentId, WorkspaceId};
use crate::state::App;

pub async fn create(app: &App, new: &NewAgent<'_>) -> ApiResult<Agent> {
    let mut tx = app.pool.begin().await?;
    let agent = db::agents::insert(&mut tx, new)
        .await?
        .ok_or(ApiError::NotFound("runtime"))?;
    let evs = vec![events::agent(
        "agent.created",
        agent.workspace_id,
        agent.id,
        json!({ "runtime_id": agent.runtime_id, "name": agent.name, "status": agent.status }),
    )];
    commit(app, tx, evs).await?;
    Ok(agent)
}

pub async fn update(
    app: &App,
    ws: WorkspaceId,
    id: AgentId,
    patch: &AgentPatch<'_>,
) -> ApiResult<Agent> {
    let mut tx = app.pool.begin().await?;
    let agent = match db::agents::update(&mut tx, id, ws, patch).await? {
        Some(a) => a,
        None => return Err(missing_or_archived(&mut tx, ws, id).await?),
    };
    let evs = vec![events::agent(
        "agent.updated",
        ws,
        id,
        json!({ "definition_version": agent.definition_version, "name": agent.name }),
    )];
    commit(app, tx, evs).await?;
    Ok(agent)
}

/// Archives an agent: no new tasks; its queued tasks are cancelled, active ones may finish.
pub async fn archive(app: &App, ws: WorkspaceId, id: AgentId) -> ApiResult<Agent> {
    let mut tx = app.pool.begin().await?;
    let agent = match db::agents::archive(&mut tx, id, ws).await? {
        Some(a) => a,
        None => {
            // Archiving twice answers the archived agent.
            return db::agents::get(&mut tx, id, ws)
                .await?
                .ok_or(ApiError::NotFound("agent"));
        }
    };
    let mut evs = vec![events::agent("agent.archived", ws, id, json!({}))];
    let from = ["queued".to_owned()];
    for task_id in db::tasks::queued_of_agent(&mut tx, id).await? {
        let Some(task) = db::tasks::lock(&mut tx, task_id, ws).await? else {
            continue;
        };
        let end = EndAttempt {
            id: task_id,
            attempt_id: task.attempt_id,
            status: "cancelled",
            failure_reason: Some(FailureReason::Cancelled.as_str()),
            error: Some("agent archived"),
            run_after: None,
            cancel_pending: false,
            from: &from,
        };
        if let Some(t) = db::tasks::end_attempt(&mut tx, &end).await? {
            evs.push(events::task("task.cancelled", &t));
        }
    }
    commit(app, tx, evs).await?;
    Ok(agent)
}

async fn missing_or_archived(
    conn: &mut sqlx::PgConnection,
    ws: WorkspaceId,
    id: AgentId,
) -> ApiResult<ApiError> {
    Ok(match db::agents::get(conn, id, ws).await? {
        Some(_) => ApiError::Conflict("the agent is archived".into()),
        None => ApiError::NotFound("agent"),
    })
}
