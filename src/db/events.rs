//! The event log: written in the same transaction as the change it records, read in log order
//! `(xact_id, id)` below the commit horizon.

use paddock_api::EventType;
use serde_json::value::RawValue;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::ids::{EventId, WorkspaceId};

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub workspace: WorkspaceId,
    pub kind: EventType,
    pub subject: Uuid,
    /// Serialised when the event is made (`crate::events`).
    pub payload: Box<RawValue>,
}

/// A stored event: the body clients receive, and where it sits in the log.
#[derive(Debug, Clone)]
pub struct Event {
    pub workspace_id: WorkspaceId,
    /// The writing transaction (log order is `(xact_id, id)`); 0 when not read from the log.
    pub xact_id: u64,
    pub body: paddock_api::Event,
    /// `body` as a WebSocket text frame, serialised once (on first send) for every socket.
    pub frame: std::sync::OnceLock<axum::extract::ws::Utf8Bytes>,
}

impl Event {
    /// The frame sockets send: `body`'s JSON, shared.
    pub fn frame(&self) -> axum::extract::ws::Utf8Bytes {
        self.frame
            .get_or_init(|| {
                serde_json::to_string(&self.body)
                    .expect("an event serialises")
                    .into()
            })
            .clone()
    }

    pub fn id(&self) -> EventId {
        self.body.id
    }

    pub fn kind(&self) -> EventType {
        self.body.kind
    }

    pub fn position(&self) -> Position {
        Position {
            xact_id: self.xact_id,
            id: self.body.id,
            min_id: 0,
        }
    }
}

/// A place in the log: everything up to and including `(xact_id, id)` has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub xact_id: u64,
    pub id: EventId,
    /// Also require `id > min_id` (resuming after an id whose row is gone or unknown).
    pub min_id: EventId,
}

impl Position {
    pub const START: Position = Position {
        xact_id: 0,
        id: 0,
        min_id: 0,
    };

    /// Whether `e` comes after this position.
    pub fn precedes(&self, e: &Event) -> bool {
        (e.xact_id, e.id()) > (self.xact_id, self.id) && e.id() > self.min_id
    }
}

fn parse_xact(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

pub async fn insert(conn: &mut PgConnection, events: Vec<NewEvent>) -> sqlx::Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ws: Vec<Uuid> = events.iter().map(|e| e.workspace.0).collect();
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    let subjects: Vec<Uuid> = events.iter().map(|e| e.subject).collect();
    // Bound as text, stored as that json text, and kept as the stored event's payload.
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.get()).collect();
    let rows = sqlx::query_file!(
        "queries/events/insert.sql",
        &ws,
        &kinds as _,
        &subjects,
        &payloads as &[&str]
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .zip(events)
        .map(|(r, e)| Event {
            workspace_id: e.workspace,
            xact_id: 0,
            body: paddock_api::Event {
                id: r.id,
                kind: e.kind,
                subject_id: e.subject,
                occurred_at: r.occurred_at,
                payload: e.payload,
            },
            frame: Default::default(),
        })
        .collect())
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
        Some(x) => Position {
            xact_id: parse_xact(&x),
            id: after,
            min_id: 0,
        },
        None => Position {
            xact_id: 0,
            id: 0,
            min_id: after,
        },
    })
}

/// The position from which only events committed from now on are read.
pub async fn horizon(conn: &mut PgConnection) -> sqlx::Result<Position> {
    let xmin = sqlx::query_file_scalar!("queries/events/horizon.sql")
        .fetch_one(conn)
        .await?;
    // Rows of transactions below xmin have all committed (or aborted) already.
    Ok(Position {
        xact_id: parse_xact(&xmin).saturating_sub(1),
        id: i64::MAX,
        min_id: 0,
    })
}

macro_rules! event_from_row {
    ($r:expr) => {
        Event {
            workspace_id: $r.workspace_id,
            xact_id: parse_xact(&$r.xact_id),
            body: paddock_api::Event {
                id: $r.id,
                kind: $r.kind,
                subject_id: $r.subject_id,
                occurred_at: $r.occurred_at,
                payload: $r.payload.0,
            },
            frame: Default::default(),
        }
    };
}

/// A workspace's events after `pos`, below the commit horizon, in log order.
pub async fn list_after(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    pos: &Position,
    limit: i64,
) -> sqlx::Result<Vec<Event>> {
    let rows = sqlx::query_file!(
        "queries/events/list_after.sql",
        ws.0,
        pos.xact_id.to_string(),
        pos.id,
        pos.min_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| event_from_row!(r)).collect())
}

/// Every workspace's events after `pos`, below the commit horizon, in log order.
pub async fn feed_after(
    conn: &mut PgConnection,
    pos: &Position,
    limit: i64,
) -> sqlx::Result<Vec<Event>> {
    let rows = sqlx::query_file!(
        "queries/events/feed_after.sql",
        pos.xact_id.to_string(),
        pos.id,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| event_from_row!(r)).collect())
}
