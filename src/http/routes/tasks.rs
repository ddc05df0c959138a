//! `POST|GET /tasks`, `GET /tasks/{id}`, `POST /tasks/{id}/cancel` (member side).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Page;
use crate::auth::Member;
use crate::db;
use crate::db::tasks::{Attempt, ListFilter, Task};
use crate::domain::task::TaskStatus;
use crate::domain::values::{JsonObject, MaxAttempts, PageLimit, Priority};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Query};
use crate::ids::{AgentId, RuntimeId, TaskId};
use crate::service;
use crate::service::tasks::Enqueue;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    agent_id: AgentId,
    #[schema(value_type = Object)]
    payload: JsonObject,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    max_attempts: MaxAttempts,
    idempotency_key: Option<String>,
}

/// 201 with the new task, or 200 with the task an earlier call made with the same idempotency key.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "member", request_body = CreateTask, responses((status = 201, body = Task, description = "Enqueued"), (status = 200, body = Task, description = "The task an earlier call made with the same idempotency key"), crate::http::openapi::Errors), security(("bearer" = [])))]
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
    Ok((status, axum::Json(task)))
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

#[utoipa::path(get, path = "/api/v1/tasks", tag = "member", params(ListQuery), responses((status = 200, body = Page<Task>), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Task>>> {
    if let Some(s) = &q.status
        && TaskStatus::parse(s).is_none()
    {
        return Err(ApiError::BadRequest(format!("unknown status `{s}`")));
    }
    let before_seq = match &q.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        ),
        None => None,
    };
    let limit = q.limit.get();
    let filter = ListFilter {
        status: q.status,
        agent: q.agent_id,
        runtime: q.runtime_id,
        before_seq,
        limit: limit + 1,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = db::tasks::list(&mut conn, ws, &filter).await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |t| {
        t.seq.to_string()
    })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskWithAttempts {
    #[serde(flatten)]
    task: Task,
    attempts: Vec<Attempt>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = TaskWithAttempts), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn get(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
) -> ApiResult<axum::Json<TaskWithAttempts>> {
    let mut conn = state.pool.acquire().await?;
    let task = db::tasks::get(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    let mut attempts = db::tasks::attempts(&mut conn, id).await?;
    // The open attempt lives on the task row.
    if let (Some(attempt_id), Some(dispatched_at)) = (task.attempt_id, task.dispatched_at)
        && matches!(task.status.as_str(), "dispatched" | "running")
    {
        attempts.push(Attempt {
            attempt: task.attempt,
            attempt_id,
            runtime_id: task.runtime_id,
            dispatched_at,
            started_at: task.started_at,
            finished_at: None,
            outcome: None,
            failure_reason: None,
            error: None,
        });
    }
    Ok(axum::Json(TaskWithAttempts { task, attempts }))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn cancel(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
) -> ApiResult<axum::Json<Task>> {
    Ok(axum::Json(service::tasks::cancel(&state, ws, id).await?))
}
