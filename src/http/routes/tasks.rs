//! `POST|GET /tasks`, `GET /tasks/{id}`, `POST /tasks/{id}/cancel` (member side).

use axum::extract::State;
use axum::http::StatusCode;
use paddock_api::{CreateTask, Page, Task, TaskStatus, TaskWithAttempts};
use serde::Deserialize;

use crate::auth::Member;
use crate::db;
use crate::db::attempts::Attempt;
use crate::db::tasks::ListFilter;
use crate::domain::values::PageLimit;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Query};
use crate::ids::{AgentId, RuntimeId, TaskId};
use crate::service;
use crate::service::tasks::Enqueue;
use crate::state::AppState;

/// 201 with the new task, or 200 with the task an earlier call made with the same idempotency key.
#[utoipa::path(post, path = "/api/v1/tasks", operation_id = "enqueue_task", tag = "member", request_body = CreateTask, responses((status = 201, body = Task, description = "Enqueued"), (status = 200, body = Task, description = "The task an earlier call made with the same idempotency key"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    Member(ws): Member,
    State(state): State<AppState>,
    Json(body): Json<CreateTask>,
) -> ApiResult<(StatusCode, axum::Json<Task>)> {
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.chars().count() > 200)
    {
        return Err(ApiError::validation(
            "idempotency_key must be 1 to 200 characters",
        ));
    }
    let req = Enqueue {
        agent: body.agent_id,
        payload: &body.payload,
        priority: body.priority.get(),
        max_attempts: body.max_attempts.get(),
        idempotency_key: body.idempotency_key.as_deref(),
    };
    let (task, created) = service::tasks::enqueue(&state, ws, &req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(task.into())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    status: Option<String>,
    agent_id: Option<AgentId>,
    runtime_id: Option<RuntimeId>,
    #[serde(default)]
    limit: PageLimit,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "member", params(ListQuery), responses((status = 200, body = Page<Task>, description = "A page of tasks, newest first"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Task>>> {
    let status = match &q.status {
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|_| ApiError::BadRequest(format!("unknown status `{s}`")))?,
        ),
        None => None,
    };
    let before_seq = match &q.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        ),
        None => None,
    };
    let limit = q.limit.get();
    let filter = ListFilter {
        status,
        agent: q.agent_id,
        runtime: q.runtime_id,
        before_seq,
        limit: limit + 1,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = db::tasks::list(&mut conn, ws, &filter).await?;
    let page = Page::from_rows(rows, limit, |t| t.seq.to_string());
    Ok(axum::Json(page.map(Into::into)))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", operation_id = "get_task", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = TaskWithAttempts, description = "The task and its attempts"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn get(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
) -> ApiResult<axum::Json<TaskWithAttempts>> {
    let mut conn = state.pool.acquire().await?;
    let task = db::tasks::get(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    let mut attempts = db::attempts::of_task(&mut conn, id).await?;
    // The open attempt lives on the task row.
    attempts.extend(Attempt::open_of(&task));
    Ok(axum::Json(TaskWithAttempts {
        task: task.into(),
        attempts: attempts.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", operation_id = "cancel_task", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task, description = "The task, cancelled"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn cancel(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(
        service::tasks::cancel(&state, ws, id).await?.into(),
    ))
}
