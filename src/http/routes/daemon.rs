//! Daemon endpoints: register, heartbeat, claim (long poll), reports, deregister, definitions.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::auth::Daemon;
use crate::db;
use crate::db::runtimes::NewRuntime;
use crate::db::tasks::{CancelNotice, Task};
use crate::domain::values::{JsonObject, MaxConcurrency, MaxTasks, Name, WaitMs};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};
use crate::service;
use crate::service::tasks::Report;
use crate::state::AppState;

/// Most runtimes one heartbeat or deregistration may name.
const MAX_RUNTIMES_PER_CALL: usize = 1000;
/// Most updates one `/daemon/report` may carry.
const MAX_UPDATES_PER_REPORT: usize = 500;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    daemon_id: Name,
    provider: Name,
    name: Option<Name>,
    version: Option<Name>,
    max_concurrency: Option<MaxConcurrency>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    runtime_id: RuntimeId,
    status: String,
    heartbeat_interval_ms: u64,
}

/// 201 when the runtime was created, 200 when it already existed (idempotent).
#[utoipa::path(post, path = "/api/v1/daemon/register", tag = "daemon", request_body = Register, responses((status = 201, body = Registered, description = "Created"), (status = 200, body = Registered, description = "Already registered"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn register(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<Register>,
) -> ApiResult<(StatusCode, axum::Json<Registered>)> {
    let new = NewRuntime {
        workspace: ws,
        daemon_id: body.daemon_id.as_str(),
        provider: body.provider.as_str(),
        name: body.name.as_ref().map(Name::as_str),
        version: body.version.as_ref().map(Name::as_str),
        max_concurrency: body.max_concurrency.map(MaxConcurrency::get),
    };
    let (reg, created) = service::runtimes::register(&state, &new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Registered {
            runtime_id: reg.id,
            status: reg.status,
            heartbeat_interval_ms: state.settings.heartbeat_interval.as_millis() as u64,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeIds {
    runtime_ids: Vec<RuntimeId>,
}

impl RuntimeIds {
    fn checked(&self) -> ApiResult<Vec<RuntimeId>> {
        if self.runtime_ids.is_empty() || self.runtime_ids.len() > MAX_RUNTIMES_PER_CALL {
            return Err(ApiError::validation(format!(
                "runtime_ids must hold 1 to {MAX_RUNTIMES_PER_CALL} ids"
            )));
        }
        let mut ids = self.runtime_ids.clone();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

#[utoipa::path(post, path = "/api/v1/daemon/heartbeat", tag = "daemon", request_body = RuntimeIds, responses((status = 200, body = service::runtimes::HeartbeatReply), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn heartbeat(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<RuntimeIds>,
) -> ApiResult<axum::Json<service::runtimes::HeartbeatReply>> {
    let ids = body.checked()?;
    Ok(axum::Json(
        service::runtimes::heartbeat(&state, ws, &ids).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/daemon/deregister", tag = "daemon", request_body = RuntimeIds, responses((status = 200, body = Deregistered), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn deregister(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<RuntimeIds>,
) -> ApiResult<axum::Json<Deregistered>> {
    let ids = body.checked()?;
    let offline = service::runtimes::deregister(&state, ws, &ids).await?;
    Ok(axum::Json(Deregistered { offline }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deregistered {
    /// The runtimes that were online and are offline now.
    offline: Vec<RuntimeId>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    runtime_id: RuntimeId,
    #[serde(default)]
    max_tasks: MaxTasks,
    #[serde(default)]
    wait_ms: WaitMs,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimedTask {
    task_id: TaskId,
    attempt_id: AttemptId,
    attempt: i32,
    agent_id: AgentId,
    definition_version: i32,
    #[schema(value_type = Object)]
    payload: Value,
    priority: i32,
    enqueued_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimReply {
    tasks: Vec<ClaimedTask>,
    cancel: Vec<CancelNotice>,
}

/// Claims up to `max_tasks`; with nothing to claim, waits up to `wait_ms` and is woken as soon as
/// a task for one of the runtime's agents becomes claimable.
#[utoipa::path(post, path = "/api/v1/daemon/claim", tag = "daemon", request_body = Claim, responses((status = 200, body = ClaimReply), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn claim(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<Claim>,
) -> ApiResult<axum::Json<ClaimReply>> {
    let deadline = Instant::now() + Duration::from_millis(body.wait_ms.get());
    let notify = state.hub.waker.subscribe(body.runtime_id);
    let mut waited = false;
    loop {
        // Enabled before looking, so a wake-up between the look and the wait is kept.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let res = service::tasks::claim(&state, ws, body.runtime_id, body.max_tasks.get()).await?;
        let done = !res.tasks.is_empty()
            || !res.cancel.is_empty()
            || Instant::now() >= deadline
            || state.shutdown.is_cancelled();
        if done {
            metrics::counter!("paddock_claims_total", "outcome" => if res.tasks.is_empty() { "empty" } else { "tasks" })
                .increment(1);
            metrics::histogram!("paddock_claim_tasks").record(res.tasks.len() as f64);
            if waited && !res.tasks.is_empty() {
                metrics::counter!("paddock_long_poll_wakeups_total").increment(1);
            }
            return Ok(axum::Json(ClaimReply {
                tasks: res
                    .tasks
                    .into_iter()
                    .map(|c| ClaimedTask {
                        task_id: c.id,
                        attempt_id: c.attempt_id,
                        attempt: c.attempt,
                        agent_id: c.agent_id,
                        definition_version: c.definition_version,
                        payload: c.payload,
                        priority: c.priority,
                        enqueued_at: c.enqueued_at,
                    })
                    .collect(),
                cancel: res.cancel,
            }));
        }
        waited = true;
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

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
    let mut tx = state.pool.begin().await?;
    let mut ch = service::Changes::default();
    let res =
        service::tasks::apply_report(&mut tx, state.backoff(), ws, id, attempt, &report, &mut ch)
            .await;
    count_report(report.action().as_str(), &res);
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
    let mut reports = Vec::with_capacity(body.updates.len());
    for u in body.updates {
        let (task_id, attempt_id) = (u.task_id, u.attempt_id);
        reports.push((task_id, attempt_id, u.report()?));
    }
    let mut tx = state.pool.begin().await?;
    let mut ch = service::Changes::default();
    let mut results = Vec::with_capacity(reports.len());
    for (task_id, attempt_id, report) in &reports {
        let res = service::tasks::apply_report(
            &mut tx,
            state.backoff(),
            ws,
            *task_id,
            *attempt_id,
            report,
            &mut ch,
        )
        .await;
        count_report(report.action().as_str(), &res);
        results.push(match res {
            Ok(task) => ReportResult {
                task_id: *task_id,
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
                task_id: *task_id,
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

/// The agent's definition with an `ETag` of its version; `If-None-Match` answers 304.
#[utoipa::path(get, path = "/api/v1/daemon/agents/{id}/definition", tag = "daemon", params(("id" = uuid::Uuid, Path, description = "Agent id")), responses((status = 200, body = DefinitionReply, headers(("etag" = String, description = "\"v<version>\""))), (status = 304, description = "Not modified (If-None-Match matched)"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn definition(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut conn = state.pool.acquire().await?;
    let def = db::agents::definition(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    let etag = format!("\"v{}\"", def.definition_version);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.into()))?;
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let body = DefinitionReply {
        agent_id: id,
        version: def.definition_version,
        definition: def.definition,
    };
    Ok(([(header::ETAG, etag_value)], axum::Json(body)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefinitionReply {
    agent_id: AgentId,
    version: i32,
    #[schema(value_type = Object)]
    definition: Value,
}
