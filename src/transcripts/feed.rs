//! The live transcript feed of one replica, and its cross-replica wake-ups.
//!
//! * The **reader** keeps one position in the messages' commit-horizon order and, while sockets
//!   watch some tasks, reads the new messages below the commit horizon
//!   (`queries/transcripts/feed_after.sql`, content only for the watched tasks), serialises each
//!   frame once and hands it to the hub. It has a connection of its own ([`db::Dedicated`]), so it
//!   never queues behind the posts it follows. It reads when nudged — a local post committed, another replica notified, a session waits for its
//!   end — and every second regardless. With nobody watching it only moves its position up to the
//!   horizon, so a first watcher does not start a scan of what came before (its session replays
//!   that from the table).
//! * The **notifier** coalesces this replica's posts into one `NOTIFY paddock_transcripts` every
//!   few milliseconds, sent after the commits; the events listener nudges the reader on it.

use std::sync::Arc;
use std::time::Duration;

use paddock_api::{Message, TranscriptFrame};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Frame;
use crate::db;
use crate::db::transcripts::{FeedPos, FeedRow};
use crate::events::Hub;

pub const CHANNEL: &str = "paddock_transcripts";
const COALESCE: Duration = Duration::from_millis(2);
const READ_BATCH: i64 = 2000;
/// After a nudge, how long the reader waits for more commits before it reads.
const READ_COALESCE: Duration = Duration::from_millis(2);
const SAFETY_POLL: Duration = Duration::from_secs(1);

pub async fn notifier(pool: PgPool, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut rx = hub.transcripts.committed.subscribe();
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        tokio::time::sleep(COALESCE).await;
        rx.borrow_and_update();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "could not notify other replicas of new transcript messages");
        }
    }
}

/// Follows the feed from `from`, a horizon read before any socket could subscribe.
pub async fn reader(pool: PgPool, hub: Arc<Hub>, from: u64, shutdown: CancellationToken) {
    let t = &hub.transcripts;
    let mut pos = FeedPos::floor(from);
    t.advance(from);
    let mut conn = db::Dedicated::new(&pool);
    loop {
        match read_once(&mut conn, &hub, &mut pos).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                conn.reset();
                tracing::warn!(error = %e, "transcript feed read failed");
            }
        }
        tokio::select! {
            _ = t.nudge.notified() => tokio::time::sleep(READ_COALESCE).await,
            _ = tokio::time::sleep(SAFETY_POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One read; true when it was full (read again at once).
async fn read_once(conn: &mut db::Dedicated, hub: &Hub, pos: &mut FeedPos) -> anyhow::Result<bool> {
    let t = &hub.transcripts;
    let (tasks, version) = t.watched();
    let conn = conn.get().await?;
    if tasks.is_empty() {
        let horizon = db::transcripts::horizon(conn).await?;
        // Nobody watches: skip ahead, unless a subscription began meanwhile (its replay may not
        // have seen what lies between the old position and this horizon).
        if t.version() == version {
            *pos = FeedPos::floor(horizon);
            t.advance(horizon);
        }
        return Ok(false);
    }
    let (horizon, rows) = db::transcripts::feed_after(conn, pos, &tasks, READ_BATCH).await?;
    let full = rows.len() as i64 == READ_BATCH;
    for row in rows {
        *pos = position(&row);
        if row.watched {
            let task = row.task_id;
            t.deliver(task, Arc::new(frame(row)?));
        }
    }
    if !full {
        // Every row below the horizon was in this read.
        *pos = FeedPos::floor(horizon);
        t.advance(horizon);
    }
    Ok(full)
}

fn position(row: &FeedRow) -> FeedPos {
    FeedPos {
        xact_id: row.xact_id.parse().unwrap_or(0),
        task: row.task_id.0,
        attempt: row.attempt,
        seq: row.seq,
    }
}

fn frame(row: FeedRow) -> anyhow::Result<Frame> {
    let (attempt, seq) = (row.attempt, row.seq);
    let xact = row.xact_id.parse().unwrap_or(0);
    let message = Message {
        attempt,
        seq,
        kind: row.kind,
        content: row.content,
        data: row.data.map(|d| d.0),
        at: row.at,
    };
    Ok(Frame {
        xact,
        attempt,
        seq,
        text: serde_json::to_string(&TranscriptFrame::Message(message))?.into(),
    })
}
