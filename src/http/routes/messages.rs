//! A task's transcript: `POST /tasks/{id}/messages` (daemon), `GET /tasks/{id}/messages` (member)
//! and the live `GET /tasks/{id}/messages/ws` (`transcript_ws.rs`).

use axum::extract::State;
use paddock_api::{
    MAX_MESSAGE_CONTENT, MAX_MESSAGES_PER_CALL, Message, Page, PostMessages, PostedMessages,
};
use serde::Deserialize;

use crate::auth::{Daemon, Member};
use crate::db;
use crate::domain::values::PageLimit;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Query};
use crate::ids::{TaskId, WorkspaceId};
use crate::service;
use crate::state::AppState;

/// Stores 1 to 500 messages of the attempt: 200 with what was stored; 409 `attempt_superseded`
/// (nothing stored) when the attempt is not the task's current one or was cancelled.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/messages", operation_id = "post_messages", tag = "daemon", request_body = PostMessages, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = PostedMessages, description = "What was stored"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn post(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<PostMessages>,
) -> ApiResult<axum::Json<PostedMessages>> {
    let n = body.messages.len();
    if n == 0 || n > MAX_MESSAGES_PER_CALL {
        return Err(ApiError::validation(format!(
            "messages must hold 1 to {MAX_MESSAGES_PER_CALL} entries, got {n}"
        )));
    }
    for (i, m) in body.messages.iter().enumerate() {
        if m.seq < 0 {
            return Err(ApiError::validation(format!(
                "messages[{i}].seq must be at least 0"
            )));
        }
        if m.content.len() > MAX_MESSAGE_CONTENT {
            return Err(ApiError::validation(format!(
                "messages[{i}].content is {} bytes, over the limit of {MAX_MESSAGE_CONTENT}",
                m.content.len()
            )));
        }
    }
    let posted =
        service::transcripts::post(&state, ws, id, body.attempt_id, &body.messages).await?;
    Ok(axum::Json(posted))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this attempt's messages.
    attempt: Option<i32>,
    /// With `attempt`: start after this seq.
    after_seq: Option<i64>,
    #[serde(default)]
    limit: PageLimit,
    /// The `next_cursor` of the page before (`<attempt>:<seq>`).
    cursor: Option<String>,
}

/// Where a transcript read starts, from `attempt`, `after_seq` and `cursor`.
pub(super) fn start_of(
    attempt: Option<i32>,
    after_seq: Option<i64>,
    cursor: Option<&str>,
) -> ApiResult<(i32, i64)> {
    if let Some(c) = cursor {
        return parse_cursor(c);
    }
    match (attempt, after_seq) {
        (Some(a), s) => Ok((a, s.unwrap_or(-1))),
        (None, Some(_)) => Err(ApiError::BadRequest(
            "after_seq needs attempt (use cursor to resume across attempts)".into(),
        )),
        (None, None) => Ok((0, -1)),
    }
}

fn parse_cursor(c: &str) -> ApiResult<(i32, i64)> {
    let parsed = c
        .split_once(':')
        .and_then(|(a, s)| Some((a.parse().ok()?, s.parse().ok()?)));
    parsed.ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// The task must exist in the caller's workspace (404 otherwise).
pub(super) async fn check_task(state: &AppState, ws: WorkspaceId, id: TaskId) -> ApiResult<()> {
    let mut conn = state.pool.acquire().await?;
    match db::transcripts::fence(&mut conn, ws, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound("task")),
    }
}

/// The transcript in `(attempt, seq)` order, a page at a time.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/messages", operation_id = "list_messages", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id"), ListQuery), responses((status = 200, body = Page<Message>, description = "A page of the transcript"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Message>>> {
    let after = start_of(q.attempt, q.after_seq, q.cursor.as_deref())?;
    check_task(&state, ws, id).await?;
    let limit = q.limit.get();
    let page = db::transcripts::Page {
        attempt: q.attempt,
        after,
        limit: limit + 1,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = db::transcripts::list(&mut conn, id, &page).await?;
    let page = Page::from_rows(rows, limit, |m| format!("{}:{}", m.attempt, m.seq));
    Ok(axum::Json(page.map(Into::into)))
}
