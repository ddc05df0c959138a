//! Daemon reports about one attempt: `POST /tasks/{id}/start|progress|complete|fail` and the batched
//! `POST /daemon/report`. Every report is fenced by its attempt id (`domain::task::decide`); the
//! service plans, writes and commits them (`service::reports`).

use axum::extract::State;
use axum::response::IntoResponse;
use paddock_api::{
    AttemptOnly, CompleteBody, ErrorCode, FailBody, ProgressBody, ReportAction, ReportBody,
    ReportReply, ReportResult, Session, Task, Update, Usage,
};

use crate::auth::Daemon;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Prefer};
use crate::ids::{AttemptId, TaskId, WorkspaceId};
use crate::service;
use crate::service::reports::{Report, ReportItem};
use crate::state::AppState;

/// Most updates one `/daemon/report` may carry.
const MAX_UPDATES_PER_REPORT: usize = 500;

/// Longest error text a daemon may report.
const MAX_ERROR_CHARS: usize = 16 * 1024;

fn fail_report(error: String, retryable: bool) -> ApiResult<Report> {
    crate::domain::values::bounded_text(&error, MAX_ERROR_CHARS)
        .map_err(|m| ApiError::validation(format!("error {m}")))?;
    Ok(Report::Fail { error, retryable })
}

/// The usage and session a report carries, refused (422) when they cannot be stored.
fn extras(
    usage: Option<Usage>,
    session: Option<Session>,
) -> ApiResult<(Option<Usage>, Option<Session>)> {
    if let Some(why) = usage.as_ref().and_then(Usage::invalid) {
        return Err(ApiError::validation(why));
    }
    if let Some(why) = session.as_ref().and_then(Session::invalid) {
        return Err(ApiError::validation(why));
    }
    Ok((usage, session))
}

/// One report of one attempt, as the single routes and the batch's updates carry it.
fn item(
    task: TaskId,
    attempt: AttemptId,
    report: Report,
    (usage, session): (Option<Usage>, Option<Session>),
) -> ReportItem {
    ReportItem {
        task,
        attempt,
        report,
        usage,
        session,
    }
}

async fn report_one(
    state: &AppState,
    ws: WorkspaceId,
    item: ReportItem,
) -> ApiResult<axum::Json<Task>> {
    let action = item.report.action();
    let res = service::reports::report_one(state, ws, item)
        .await
        .map_err(ApiError::from);
    count_report(action, res.as_ref().err().map(ApiError::code));
    Ok(axum::Json(res?.into()))
}

fn count_report(action: ReportAction, error: Option<ErrorCode>) {
    let outcome = error.map_or("ok", ErrorCode::as_str);
    metrics::counter!("paddock_reports_total", "action" => action.as_str(), "outcome" => outcome)
        .increment(1);
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/start", operation_id = "start_task", tag = "daemon", request_body = AttemptOnly, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task, description = "The task, running"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn start(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<AttemptOnly>,
) -> ApiResult<axum::Json<Task>> {
    let item = item(id, body.attempt_id, Report::Start, (None, None));
    report_one(&state, ws, item).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/progress", operation_id = "report_progress", tag = "daemon", request_body = ProgressBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task, description = "The task with its new progress"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn progress(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<ProgressBody>,
) -> ApiResult<axum::Json<Task>> {
    let extras = extras(body.usage, body.session)?;
    let item = item(id, body.attempt_id, Report::Progress(body.progress), extras);
    report_one(&state, ws, item).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", operation_id = "complete_task", tag = "daemon", request_body = CompleteBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task, description = "The task, completed"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn complete(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<CompleteBody>,
) -> ApiResult<axum::Json<Task>> {
    let extras = extras(body.usage, body.session)?;
    let item = item(id, body.attempt_id, Report::Complete(body.result), extras);
    report_one(&state, ws, item).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/fail", operation_id = "fail_task", tag = "daemon", request_body = FailBody, params(("id" = uuid::Uuid, Path, description = "Task id")), responses((status = 200, body = Task, description = "The task, failed or queued again for a retry"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn fail(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Json(body): Json<FailBody>,
) -> ApiResult<axum::Json<Task>> {
    let report = fail_report(body.error, body.retryable)?;
    let extras = extras(body.usage, body.session)?;
    report_one(&state, ws, item(id, body.attempt_id, report, extras)).await
}

/// The report an update carries; an update missing the field its action needs is refused.
fn report_of(u: Update) -> ApiResult<ReportItem> {
    let (task, attempt) = (u.task_id, u.attempt_id);
    let extras = extras(u.usage, u.session)?;
    if u.action == ReportAction::Start && (extras.0.is_some() || extras.1.is_some()) {
        return Err(ApiError::validation("start carries no usage or session"));
    }
    let report = match u.action {
        ReportAction::Start => Report::Start,
        ReportAction::Progress => Report::Progress(
            u.progress
                .ok_or_else(|| ApiError::validation("progress needs a `progress` object"))?,
        ),
        ReportAction::Complete => Report::Complete(
            u.result
                .ok_or_else(|| ApiError::validation("complete needs a `result` object"))?,
        ),
        ReportAction::Fail => fail_report(
            u.error
                .ok_or_else(|| ApiError::validation("fail needs an `error`"))?,
            u.retryable.unwrap_or(true),
        )?,
    };
    Ok(item(task, attempt, report, extras))
}

/// One result per update, in order: `{task_id, status, task}` or `{task_id, status, error}`.
#[utoipa::path(post, path = "/api/v1/daemon/report", operation_id = "report_batch", tag = "daemon", request_body = ReportBody, params(("prefer" = Option<String>, Header, description = "`return=minimal` (RFC 7240): each result names its task by `task_id` instead of carrying it")), responses((status = 200, body = ReportReply, description = "One result per update, in order", headers(("preference-applied" = String, description = "`return=minimal` when the results carry no tasks"))), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn report(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    prefer: Prefer,
    Json(body): Json<ReportBody>,
) -> ApiResult<impl IntoResponse> {
    if body.updates.is_empty() || body.updates.len() > MAX_UPDATES_PER_REPORT {
        return Err(ApiError::validation(format!(
            "updates must hold 1 to {MAX_UPDATES_PER_REPORT} entries"
        )));
    }
    // Validate every update before writing any.
    let mut items = Vec::with_capacity(body.updates.len());
    for u in body.updates {
        items.push(report_of(u)?);
    }
    let named: Vec<_> = items.iter().map(|i| (i.task, i.report.action())).collect();
    let answers = state.reports.submit(ws, items).await?;
    let results = named
        .into_iter()
        .zip(answers)
        .map(|((task_id, action), answer)| match answer {
            Ok(task) => {
                count_report(action, None);
                ReportResult {
                    task_id,
                    status: 200,
                    task: (!prefer.minimal).then(|| task.into()),
                    error: None,
                }
            }
            Err(refusal) => {
                let e = ApiError::from(refusal);
                count_report(action, Some(e.code()));
                ReportResult {
                    task_id,
                    status: e.status().as_u16(),
                    task: None,
                    error: Some(e.problem()),
                }
            }
        })
        .collect();
    Ok((prefer.applied(), axum::Json(ReportReply { results })))
}
