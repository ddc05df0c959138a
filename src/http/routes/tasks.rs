//! `POST|GET /tasks`, `GET /tasks/{id}`, `POST /tasks/{id}/cancel` (member side).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use paddock_api::values::DurationMs;
use paddock_api::{
    BATCH_MAX_TASKS, BatchItem, BatchResults, CancelTasks, CancelledTasks, CreateTask,
    CreateTaskBatch, Page, Task, TaskStatus, TaskWithAttempts,
};
use serde::Deserialize;
use std::time::Duration;

use crate::config::Settings;

use crate::auth::Member;
use crate::db;
use crate::db::attempts::Attempt;
use crate::db::tasks::ListFilter;
use crate::domain::values::PageLimit;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Prefer, Query};
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
    let req = enqueue_of(&body, &state.settings)?;
    let (task, created) = service::tasks::enqueue(&state, ws, &req).await?;
    Ok((created_or_ok(created), axum::Json(task.into())))
}

/// Up to 1000 tasks in one transaction (DESIGN §13): one result per item, in request order, each what
/// `POST /tasks` would have answered for it. A body with a value `POST /tasks` would refuse with 422
/// refuses the whole batch, before anything is written.
#[utoipa::path(post, path = "/api/v1/tasks/batch", operation_id = "enqueue_tasks", tag = "member", request_body = CreateTaskBatch, params(("prefer" = Option<String>, Header, description = "`return=minimal` (RFC 7240): each result names its task by `task_id` instead of carrying it")), responses((status = 200, body = BatchResults, description = "One result per item, in request order", headers(("preference-applied" = String, description = "`return=minimal` when the results carry no tasks"))), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create_batch(
    Member(ws): Member,
    State(state): State<AppState>,
    prefer: Prefer,
    Json(body): Json<CreateTaskBatch>,
) -> ApiResult<impl IntoResponse> {
    let n = body.tasks.len();
    if !(1..=BATCH_MAX_TASKS).contains(&n) {
        return Err(ApiError::validation(format!(
            "tasks must hold 1 to {BATCH_MAX_TASKS} items (got {n})"
        )));
    }
    let reqs = body
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            enqueue_of(t, &state.settings).map_err(|e| match e {
                ApiError::Validation(msg) => ApiError::Validation(format!("tasks[{i}]: {msg}")),
                other => other,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let outcomes = service::tasks::enqueue_many(&state, ws, &reqs).await?;
    let results = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok((task, created)) => BatchItem {
                status: created_or_ok(created).as_u16(),
                task_id: Some(task.id),
                task: (!prefer.minimal).then(|| task.into()),
                error: None,
            },
            Err(e) => {
                let problem = ApiError::from(e).problem();
                BatchItem {
                    status: problem.status,
                    task_id: None,
                    task: None,
                    error: Some(problem),
                }
            }
        })
        .collect();
    Ok((prefer.applied(), axum::Json(BatchResults { results })))
}

/// A `POST /tasks` body as the enqueue use case takes it, once its values are checked.
fn enqueue_of<'a>(body: &'a CreateTask, settings: &Settings) -> ApiResult<Enqueue<'a>> {
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.chars().count() > 200)
    {
        return Err(ApiError::validation(
            "idempotency_key must be 1 to 200 characters",
        ));
    }
    if body.concurrency_limit.is_some() && body.concurrency_key.is_none() {
        return Err(ApiError::validation(
            "concurrency_limit needs a concurrency_key",
        ));
    }
    let bounded = |name: &str, d: Option<DurationMs>| -> ApiResult<Option<Duration>> {
        match d.map(DurationMs::duration) {
            Some(d) if d > settings.max_task_timeout => Err(ApiError::validation(format!(
                "{name} ({}) exceeds the server's max_task_timeout ({})",
                humantime::format_duration(d),
                humantime::format_duration(settings.max_task_timeout)
            ))),
            d => Ok(d),
        }
    };
    Ok(Enqueue {
        agent: body.agent_id,
        payload: &body.payload,
        priority: body.priority.get(),
        max_attempts: body.max_attempts.get(),
        idempotency_key: body.idempotency_key.as_deref(),
        concurrency_key: body.concurrency_key.as_ref().map(|k| k.as_str()),
        concurrency_limit: body.concurrency_limit.unwrap_or_default().get(),
        dispatch_timeout: bounded("dispatch_timeout", body.dispatch_timeout)?,
        running_timeout: bounded("running_timeout", body.running_timeout)?,
        queued_ttl: bounded("queued_ttl", body.queued_ttl)?,
    })
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
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
    let mut page = Page::from_rows(rows, limit, |t| t.seq.to_string()).map(Task::from);
    explain_waits(&mut conn, ws, &mut page.items).await?;
    Ok(axum::Json(page))
}

/// Fills `blocked` on the queued tasks among `tasks` (DESIGN §12), in one query.
async fn explain_waits(
    conn: &mut sqlx::PgConnection,
    ws: crate::ids::WorkspaceId,
    tasks: &mut [Task],
) -> ApiResult<()> {
    let queued: Vec<TaskId> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Queued)
        .map(|t| t.id)
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    let mut why: std::collections::HashMap<TaskId, paddock_api::Blocked> =
        db::tasks::blocked(conn, &queued, ws)
            .await?
            .into_iter()
            .collect();
    for t in tasks {
        t.blocked = why.remove(&t.id);
    }
    Ok(())
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
    let mut task = [Task::from(task)];
    explain_waits(&mut conn, ws, &mut task).await?;
    let [task] = task;
    Ok(axum::Json(TaskWithAttempts {
        task,
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

/// Cancels, in batches, every queued, dispatched or running task that matches all the filters
/// given (at least one of `agent_id`, `runtime_id`, `concurrency_key`; `status` narrows to some of
/// those three). Tasks enqueued while it runs are left alone.
#[utoipa::path(post, path = "/api/v1/tasks/cancel", operation_id = "cancel_tasks", tag = "member", request_body = CancelTasks, responses((status = 200, body = CancelledTasks, description = "How many tasks were cancelled"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn cancel_many(
    Member(ws): Member,
    State(state): State<AppState>,
    Json(body): Json<CancelTasks>,
) -> ApiResult<axum::Json<CancelledTasks>> {
    if body.agent_id.is_none() && body.runtime_id.is_none() && body.concurrency_key.is_none() {
        return Err(ApiError::validation(
            "give at least one of agent_id, runtime_id, concurrency_key",
        ));
    }
    const CANCELLABLE: [TaskStatus; 3] = [
        TaskStatus::Queued,
        TaskStatus::Dispatched,
        TaskStatus::Running,
    ];
    let statuses = body.status.clone().unwrap_or_else(|| CANCELLABLE.to_vec());
    if statuses.is_empty() {
        return Err(ApiError::validation("status must name at least one status"));
    }
    if let Some(s) = statuses.iter().find(|s| s.is_terminal()) {
        return Err(ApiError::validation(format!(
            "status: a {s} task cannot be cancelled (queued, dispatched, running)"
        )));
    }
    let filter = db::tasks::CancelFilter {
        statuses: &statuses,
        agent: body.agent_id,
        runtime: body.runtime_id,
        concurrency_key: body.concurrency_key.as_ref().map(|k| k.as_str()),
        up_to_seq: 0,
    };
    let cancelled = service::tasks::cancel_many(&state, ws, &filter).await?;
    Ok(axum::Json(CancelledTasks { cancelled }))
}
