//! Use cases: each opens one transaction, asks `domain` what to do, persists through `db`, writes
//! the events of every change in the same transaction, and publishes them once it has committed.
//!
//! HTTP handlers and sweepers both call these, so a change made by a sweep emits exactly the events
//! and agent-status updates the API path does.

pub mod agents;
pub mod runtimes;
pub mod tasks;

use sqlx::{PgConnection, Postgres, Transaction};

use crate::db;
use crate::db::events::NewEvent;
use crate::error::ApiResult;
use crate::ids::AgentId;
use crate::state::App;

/// Writes the collected events, commits, then publishes them (waking claims, feeding sockets).
pub async fn commit(
    app: &App,
    mut tx: Transaction<'static, Postgres>,
    events: Vec<NewEvent>,
) -> ApiResult<()> {
    let stored = db::events::insert(&mut tx, &events).await?;
    tx.commit().await?;
    app.hub.committed(stored);
    Ok(())
}

/// Recomputes the status of these agents and records an `agent.status` event for each change.
pub async fn refresh_agents(
    conn: &mut PgConnection,
    agents: &[AgentId],
    events: &mut Vec<NewEvent>,
) -> ApiResult<()> {
    let mut ids = agents.to_vec();
    ids.sort();
    ids.dedup();
    for change in db::agents::refresh_status(conn, &ids).await? {
        events.push(crate::events::agent(
            "agent.status",
            change.workspace_id,
            change.id,
            serde_json::json!({ "status": change.status }),
        ));
    }
    Ok(())
}
