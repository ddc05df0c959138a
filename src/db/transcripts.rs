//! Transcript messages: the set-wise fenced post, pages of a task's transcript, the live feed's
//! read, and the deletions.

use chrono::{DateTime, Utc};
use paddock_api::{MessageKind, NewMessage, TaskStatus};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::uuids;
use crate::ids::{AttemptId, TaskId, WorkspaceId};

/// What a post stored.
pub struct Posted {
    /// The attempt was the task's current one (nothing was stored otherwise).
    pub current: bool,
    pub accepted: i64,
    /// Messages within the cap: stored now, or before (duplicates).
    pub fitting: i64,
    pub last_seq: Option<i64>,
    pub truncated: bool,
}

/// Stores a batch of messages of one attempt, in one statement (see the query's comment).
pub async fn post(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    task: TaskId,
    attempt: AttemptId,
    messages: &[NewMessage],
    max_bytes: i64,
) -> sqlx::Result<Posted> {
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    let kinds: Vec<MessageKind> = messages.iter().map(|m| m.kind).collect();
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    let data: Vec<Option<String>> = messages
        .iter()
        .map(|m| {
            m.data
                .as_ref()
                .map(|d| serde_json::Value::Object(d.clone()).to_string())
        })
        .collect();
    sqlx::query_file_as!(
        Posted,
        "queries/transcripts/post.sql",
        task.0,
        ws.0,
        attempt.0,
        &seqs,
        &kinds as _,
        &contents as &[&str],
        &data as &[Option<String>],
        max_bytes,
    )
    .fetch_one(conn)
    .await
}

pub struct Fence {
    pub attempt_id: Option<AttemptId>,
    pub status: TaskStatus,
}

/// The task's current attempt and status (why a post was refused).
pub async fn fence(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    task: TaskId,
) -> sqlx::Result<Option<Fence>> {
    sqlx::query_file_as!(Fence, "queries/transcripts/fence.sql", task.0, ws.0)
        .fetch_optional(conn)
        .await
}

/// A stored message.
pub struct MessageRow {
    pub attempt: i32,
    pub seq: i64,
    pub kind: MessageKind,
    pub content: String,
    pub data: Option<Json<serde_json::Value>>,
    pub at: DateTime<Utc>,
}

impl From<MessageRow> for paddock_api::Message {
    fn from(m: MessageRow) -> Self {
        Self {
            attempt: m.attempt,
            seq: m.seq,
            kind: m.kind,
            content: m.content,
            data: m.data.map(|Json(d)| d),
            at: m.at,
        }
    }
}

/// Where a page starts: after `(attempt, seq)`, optionally within one attempt.
pub struct Page {
    pub attempt: Option<i32>,
    pub after: (i32, i64),
    pub limit: i64,
}

pub async fn list(
    conn: &mut PgConnection,
    task: TaskId,
    p: &Page,
) -> sqlx::Result<Vec<MessageRow>> {
    sqlx::query_file_as!(
        MessageRow,
        "queries/transcripts/list.sql",
        task.0,
        p.attempt,
        p.after.0,
        p.after.1,
        p.limit
    )
    .fetch_all(conn)
    .await
}

/// A message the live feed read, with its place in commit-horizon order.
pub struct FeedRow {
    pub task_id: TaskId,
    pub attempt: i32,
    pub seq: i64,
    pub kind: MessageKind,
    pub content: String,
    pub data: Option<Json<serde_json::Value>>,
    pub at: DateTime<Utc>,
    pub xact_id: String,
    /// Of a task this replica watches (otherwise `content` and `data` are left out).
    pub watched: bool,
}

impl FeedRow {
    /// The row's place in commit-horizon order.
    pub fn key(&self) -> (u64, uuid::Uuid, i32, i64) {
        (
            self.xact_id.parse().unwrap_or(0),
            self.task_id.0,
            self.attempt,
            self.seq,
        )
    }
}

/// A place in the feed: everything before `(xact_id, task, attempt, seq)` has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedPos {
    pub xact_id: u64,
    pub task: uuid::Uuid,
    pub attempt: i32,
    pub seq: i64,
}

impl FeedPos {
    /// Everything of transactions below `xact` has been read.
    pub fn floor(xact: u64) -> Self {
        Self {
            xact_id: xact.saturating_sub(1),
            task: uuid::Uuid::max(),
            attempt: i32::MAX,
            seq: i64::MAX,
        }
    }
}

/// The commit horizon now, and the next `limit` messages after `pos` of transactions below it;
/// those of `tasks` with their content.
pub async fn feed_after(
    conn: &mut PgConnection,
    pos: &FeedPos,
    tasks: &[TaskId],
    limit: i64,
) -> sqlx::Result<(u64, Vec<FeedRow>)> {
    let answer = sqlx::query_file!(
        "queries/transcripts/feed_after.sql",
        pos.xact_id.to_string(),
        pos.task,
        pos.attempt,
        pos.seq,
        &uuids(tasks),
        limit
    )
    .fetch_all(conn)
    .await?;
    let horizon = answer
        .first()
        .and_then(|r| r.horizon.parse().ok())
        .unwrap_or(0);
    let rows = answer
        .into_iter()
        .filter_map(|r| {
            Some(FeedRow {
                task_id: r.task_id?,
                attempt: r.attempt?,
                seq: r.seq?,
                kind: r.kind?,
                content: r.content?,
                data: r.data,
                at: r.at?,
                xact_id: r.xact_id?,
                watched: r.watched?,
            })
        })
        .collect::<Vec<_>>();
    let mut rows = rows;
    if !rows.is_sorted_by_key(FeedRow::key) {
        rows.sort_by_key(FeedRow::key);
    }
    Ok((horizon, rows))
}

/// The next transaction id: every transaction committed so far has a smaller one.
pub async fn next_xid(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let x = sqlx::query_file_scalar!("queries/transcripts/next_xid.sql")
        .fetch_one(conn)
        .await?;
    Ok(x.parse().unwrap_or(0))
}

/// Deletes whole attempt transcripts whose first message is older than `retention`: at most
/// `limit` transcripts and about `max_bytes` of content; returns the messages deleted.
pub async fn expire(
    conn: &mut PgConnection,
    retention: std::time::Duration,
    limit: i64,
    max_bytes: i64,
) -> sqlx::Result<i64> {
    sqlx::query_file_scalar!(
        "queries/transcripts/expire.sql",
        retention.as_secs_f64(),
        limit,
        max_bytes
    )
    .fetch_one(conn)
    .await
}

/// The commit horizon: every transaction below it has committed or aborted.
pub async fn horizon(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let x = sqlx::query_file_scalar!("queries/events/horizon.sql")
        .fetch_one(conn)
        .await?;
    Ok(x.parse().unwrap_or(0))
}
