//! Agent use cases: create, update, archive.

use paddock_api::{EventType, TaskStatus};
use serde_json::json;

use super::{Changes, Error, Result, commit};
use crate::db;
use crate::db::agents::{Agent, AgentPatch, NewAgent};
use crate::db::tasks::EndAttempt;
use crate::domain::task::FailureReason;
use crate::events;
use crate::ids::{AgentId, WorkspaceId};
use crate::state::App;

pub async fn create(app: &App, new: &NewAgent<'_>) -> Result<Agent> {
    let mut tx = db::begin(&app.pool).await?;
    let agent = db::agents::insert(&mut tx, new)
        .await?
        .ok_or(Error::NotFound("runtime"))?;
    let evs = vec![events::agent(
        EventType::AgentCreated,
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
) -> Result<Agent> {
    let mut tx = db::begin(&app.pool).await?;
    let agent = match db::agents::update(&mut tx, id, ws, patch).await? {
        Some(a) => a,
        None => return Err(missing_or_archived(&mut tx, ws, id).await?),
    };
    let evs = vec![events::agent(
        EventType::AgentUpdated,
        ws,
        id,
        json!({ "definition_version": agent.definition_version, "name": agent.name,
                "runtime_id": agent.runtime_id, "paused": agent.paused,
                "max_concurrent_tasks": agent.max_concurrent_tasks }),
    )];
    commit(app, tx, evs).await?;
    Ok(agent)
}

/// Archives an agent: no new tasks; its queued tasks are cancelled, active ones may finish.
pub async fn archive(app: &App, ws: WorkspaceId, id: AgentId) -> Result<Agent> {
    let mut tx = db::begin(&app.pool).await?;
    let agent = match db::agents::archive(&mut tx, id, ws).await? {
        Some(a) => a,
        None => {
            // Archiving twice answers the archived agent.
            return db::agents::get(&mut tx, id, ws)
                .await?
                .ok_or(Error::NotFound("agent"));
        }
    };
    let mut ch = Changes::default();
    ch.push(events::agent(EventType::AgentArchived, ws, id, json!({})));
    for task_id in db::tasks::queued_of_agent(&mut tx, id).await? {
        let Some(task) = db::tasks::lock(&mut tx, task_id, ws).await? else {
            continue;
        };
        let end = EndAttempt {
            id: task_id,
            attempt_id: task.attempt_id,
            status: TaskStatus::Cancelled,
            failure_reason: Some(FailureReason::Cancelled),
            error: Some("agent archived"),
            run_after: None,
            cancel_pending: false,
            from: &[TaskStatus::Queued],
            usage: None,
            session: None,
            usage_prior: task.usage_prior.clone().map(|j| j.0),
        };
        if let Some(t) = db::tasks::end_attempt(&mut tx, &end).await? {
            ch.push(events::task(EventType::TaskCancelled, &t));
        }
    }
    commit(app, tx, ch).await?;
    Ok(agent)
}

async fn missing_or_archived(
    conn: &mut sqlx::PgConnection,
    ws: WorkspaceId,
    id: AgentId,
) -> Result<Error> {
    Ok(match db::agents::get(conn, id, ws).await? {
        Some(_) => Error::Conflict("the agent is archived".into()),
        None => Error::NotFound("agent"),
    })
}
