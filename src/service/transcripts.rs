//! Transcript use cases: a daemon posts a batch of its attempt's messages (one statement, fenced,
//! idempotent, capped); the feed then hands them to the sockets watching the task on any replica.

use paddock_api::{NewMessage, PostedMessages};

use super::{Error, Refusal, Result};
use crate::db;
use crate::ids::{AttemptId, TaskId, WorkspaceId};
use crate::state::App;

/// Stores the messages of `attempt` (see `queries/transcripts/post.sql`). Refused with nothing
/// stored when the task is not in the workspace (404) or the attempt is not its current one, or
/// was cancelled (409 `attempt_superseded`).
pub async fn post(
    app: &App,
    ws: WorkspaceId,
    task: TaskId,
    attempt: AttemptId,
    messages: &[NewMessage],
) -> Result<PostedMessages> {
    let cap = i64::try_from(app.settings.transcript_max_bytes).unwrap_or(i64::MAX);
    let mut conn = app.pool.acquire().await?;
    let posted = db::transcripts::post(&mut conn, ws, task, attempt, messages, cap).await?;
    if !posted.current {
        // Another attempt is current, or this one was cancelled: either way it is superseded.
        return Err(match db::transcripts::fence(&mut conn, ws, task).await? {
            None => Error::NotFound("task"),
            Some(_) => Refusal::Superseded(attempt).into(),
        });
    }
    drop(conn);
    if posted.accepted > 0 {
        app.hub.transcripts.posted();
    }
    metrics::counter!("paddock_transcript_messages_total").increment(posted.accepted as u64);
    Ok(PostedMessages {
        accepted: u32::try_from(posted.accepted).unwrap_or(u32::MAX),
        duplicates: u32::try_from(posted.fitting - posted.accepted).unwrap_or(0),
        last_seq: posted.last_seq,
        truncated: posted.truncated,
    })
}
