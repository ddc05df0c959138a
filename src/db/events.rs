//! The event log: written in the same transaction as the change it records.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::{EventId, WorkspaceId};

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub workspace: WorkspaceId,
    pub kind: &'static str,
    pub subject: Uuid,
    pub payload: serde_json::Value,
}

/// A stored event, as sent to clients.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: EventId,
    #[serde(skip)]
    pub workspace_id: WorkspaceId,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

pub async fn insert(conn: &mut PgConnection, events: &[NewEvent]) -> sqlx::Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ws: Vec<Uuid> = events.iter().map(|e| e.workspace.0).collect();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.to_owned()).collect();
    let subjects: Vec<Uuid> = events.iter().map(|e| e.subject).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(|e| e.payload.clone()).collect();
    let rows = sqlx::query_file!(
        "queries/events/insert.sql",
        &ws,
        &kinds,
        &subjects,
        &payloads
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            id: r.id,
            workspace_id: r.workspace_id,
            kind: r.r#type,
            subject_id: r.subject_id,
            occurred_at: r.occurred_at,
            payload: r.payload,
        })
        .collect())
}

/// Where to resume a workspace's log.
#[derive(Debug, Clone)]
pub struct Position {
    pub xact_id: String,
    pub id: EventId,
    /// Also require `id > min_id` (resuming after an id whose row is gone or unknown).
    pub min_id: EventId,
}

impl Position {
    pub const START: Position = Position {
        xact_id: String::new(),
        id: 0,
        min_id: 0,
    };
}

/// The position just after event `after` of the workspace.
pub async fn position_after(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    after: EventId,
) -> sqlx::Result<Position> {
    let xact = sqlx::query_file_scalar!("queries/events/position.sql", after, ws.0)
        .fetch_optional(conn)
        .await?;
    Ok(match xact {
        Some(xact_id) => Position {
            xact_id,
            id: after,
            min_id: 0,
        },
        None => Position {
            xact_id: "0".into(),
            id: 0,
            min_id: after,
        },
    })
}

/// Events after `pos`, below the commit horizon, in log order; also returns the position after the last.
pub async fn list_after(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    pos: &Position,
    limit: i64,
) -> sqlx::Result<(Vec<Event>, Position)> {
    let xact = if pos.xact_id.is_empty() {
        "0"
    } else {
        pos.xact_id.as_str()
    };
    let rows = sqlx::query_file!(
        "queries/events/list_after.sql",
        ws.0,
        xact,
        pos.id,
        pos.min_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    let next = match rows.last() {
        Some(r) => Position {
            xact_id: r.xact_id.clone(),
            id: r.id,
            min_id: pos.min_id,
        },
        None => pos.clone(),
    };
    let events = rows
        .into_iter()
        .map(|r| Event {
            id: r.id,
            workspace_id: r.workspace_id,
            kind: r.r#type,
            subject_id: r.subject_id,
            occurred_at: r.occurred_at,
            payload: r.payload,
        })
        .collect();
    Ok((events, next))
}
