//! Daemon endpoints: register, heartbeat, claim (long poll), deregister, definitions. Reports are in
//! `reports.rs`.

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
use crate::db::tasks::CancelNotice;
use crate::domain::values::{MaxConcurrency, MaxTasks, Name, WaitMs};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId};
use crate::service;
use crate::state::AppState;

/// Most runtimes one heartbeat or deregistration may name.
const MAX_RUNTIMES_PER_CALL: usize = 1000;

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
