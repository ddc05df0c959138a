//! Daemon reports about one attempt: `POST /tasks/{id}/start|progress|complete|fail` and the batched
//! `POST /daemon/report`. Every report is fenced by its attempt id (`domain::task::decide`).

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::auth::Daemon;
use crate::db;
use crate::db::tasks::Task;
use crate::domain::values::JsonObject;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{AttemptId, TaskId, WorkspaceId};
use crate::service;
use crate::service::tasks::{Report, ReportItem};
use crate::state::AppState;

/// Most updates one `/daemon/report` may carry.
const MAX_UPDATES_PER_REPORT: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptOnly {
    attempt_id: AttemptId,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    attempt_id: AttemptId,
    #[schema(value_type = Object)]
    progress: JsonObject,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    attempt_id: AttemptId,
    #[schema(value_type = Object)]
    result: JsonObject,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    attempt_id: AttemptId,
    error: String,
    #[serde(default = "yes")]
    retryable: bool,
}

fn yes() -> bool {
    true
}

/// Longest error text a daemon may report.
const MAX_ERROR_CHARS: usize = 16 * 1024;

fn fail_report(error: String, retryable: bool) -> ApiResult<Report> {
    crate::domain::values::bounded_text(&error, MAX_ERROR_CHARS)
        .map_err(|m| ApiError::validation(format!("error {m}")))?;
    Ok(Report::Fail { error, retryable })
}

async fn report_one(
    state: &AppState,
    ws: WorkspaceId,
    id: TaskId,
    attempt: AttemptId,
    report: Report,
) -> ApiResult<axum::Json<Task>> {
    let action = report.action().as_str();
    let item = ReportItem {
        task: id,
        attempt,
        report,
    };
    let mut tx = db::begin_hot(&state.pool).await?;
    let mut ch = service::Changes::default();
    let res = service::tasks::apply_reports(&mut tx, state.backoff(), ws, &[item], &mut ch)
        .await
        .and_then(|mut r| r.pop().unwrap_or_else(|| Err(ApiError::NotFound("task"))));
    count_report(action, &res);
    let task = res?;
    service::commit(state, tx, ch).await?;
    Ok(axum::Json(task))
}

fn count_report<T>(action: &'static str, res: &ApiResult<T>) {
    let outcome = match res {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("paddock_reports_total", "action" => action, "outcome" => outcome)
        .increment(1);
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/start", tag = "daemon", request_body = AttemptOnly, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn start(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<AttemptOnly>,
) -> ApiResult<axum::Json<Task>> {
    report_one(&state, ws, id, body.attempt_id, Report::Start).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/progress", tag = "daemon", request_body = ProgressBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn progress(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<ProgressBody>,
) -> ApiResult<axum::Json<Task>> {
    report_one(
        &state,
        ws,
        id,
        body.attempt_id,
        Report::Progress(body.progress),
    )
    .await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "daemon", request_body = CompleteBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn complete(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<CompleteBody>,
) -> ApiResult<axum::Json<Task>> {
    report_one(
        &state,
        ws,
        id,
        body.attempt_id,
        Report::Complete(body.result),
    )
    .await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/fail", tag = "daemon", request_body = FailBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn fail(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<FailBody>,
) -> ApiResult<axum::Json<Task>> {
    let report = fail_report(body.error, body.retryable)?;
    report_one(&state, ws, id, body.attempt_id, report).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Progress,
    Complete,
    Fail,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    task_id: TaskId,
    attempt_id: AttemptId,
    action: Action,
    #[schema(value_type = Option<Object>)]
    progress: Option<JsonObject>,
    #[schema(value_type = Option<Object>)]
    result: Option<JsonObject>,
    error: Option<String>,
    retryable: Option<bool>,
}

impl Update {
    fn report(self) -> ApiResult<Report> {
        Ok(match self.action {
            Action::Start => Report::Start,
            Action::Progress => Report::Progress(
                self.progress
                    .ok_or_else(|| ApiError::validation("progress needs a `progress` object"))?,
            ),
            Action::Complete => Report::Complete(
                self.result
                    .ok_or_else(|| ApiError::validation("complete needs a `result` object"))?,
            ),
            Action::Fail => fail_report(
                self.error
                    .ok_or_else(|| ApiError::validation("fail needs an `error`"))?,
                self.retryable.unwrap_or(true),
            )?,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    updates: Vec<Update>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportReply {
    results: Vec<ReportResult>,
}

/// One update's outcome: `status` 200 with the task, or 404/409 with the problem (nothing changed).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportResult {
    task_id: TaskId,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<crate::error::Problem>,
}

/// One result per update, in order: `{task_id, status, task}` or `{task_id, status, error}`.
#[utoipa::path(post, path = "/api/v1/daemon/report", tag = "daemon", request_body = ReportBody, responses((status = 200, body = ReportReply), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn report(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<ReportBody>,
) -> ApiResult<axum::Json<ReportReply>> {
    if body.updates.is_empty() || body.updates.len() > MAX_UPDATES_PER_REPORT {
        return Err(ApiError::validation(format!(
            "updates must hold 1 to {MAX_UPDATES_PER_REPORT} entries"
        )));
    }
    // Validate every update before writing any.
    let mut items = Vec::with_capacity(body.updates.len());
    for u in body.updates {
        let (task, attempt) = (u.task_id, u.attempt_id);
        items.push(ReportItem {
            task,
            attempt,
            report: u.report()?,
        });
    }
    let mut tx = db::begin_hot(&state.pool).await?;
    let mut ch = service::Changes::default();
    let outcomes =
        service::tasks::apply_reports(&mut tx, state.backoff(), ws, &items, &mut ch).await?;
    let mut results = Vec::with_capacity(items.len());
    for (item, res) in items.iter().zip(outcomes) {
        count_report(item.report.action().as_str(), &res);
        results.push(match res {
            Ok(task) => ReportResult {
                task_id: item.task,
                status: 200,
                task: Some(task),
                error: None,
            },
            // Refusals change nothing; anything else aborts the whole batch.
            Err(
                e @ (ApiError::AttemptSuperseded(_)
                | ApiError::InvalidTransition(_)
                | ApiError::NotFound(_)),
            ) => ReportResult {
                task_id: item.task,
                status: e.status().as_u16(),
                task: None,
                error: Some(e.problem()),
            },
            Err(e) => return Err(e),
        });
    }
    service::commit(&state, tx, ch).await?;
    Ok(axum::Json(ReportReply { results }))
}
