//! Daemon endpoints: register, heartbeat, claim (long poll), deregister, definitions. Reports are in
//! `reports.rs`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paddock_api::{
    Claim, ClaimReply, DefinitionReply, Deregistered, Heartbeat, HeartbeatReply, Register,
    Registered, RuntimeIds,
};
use tokio::time::Instant;

use crate::auth::Daemon;
use crate::db;
use crate::db::runtimes::NewRuntime;
use crate::domain::values::{MaxConcurrency, Name};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{AgentId, RuntimeId};
use crate::service;
use crate::state::AppState;

static NO_LABELS: std::sync::LazyLock<paddock_api::values::Labels> =
    std::sync::LazyLock::new(Default::default);

/// Most runtimes one heartbeat or deregistration may name.
const MAX_RUNTIMES_PER_CALL: usize = 1000;

/// 201 when the runtime was created, 200 when it already existed (idempotent).
#[utoipa::path(post, path = "/api/v1/daemon/register", operation_id = "register_runtime", tag = "daemon", request_body = Register, responses((status = 201, body = Registered, description = "Created"), (status = 200, body = Registered, description = "Already registered"), crate::http::openapi::Errors), security(("bearer" = [])))]
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
        labels: body.labels.as_ref().unwrap_or(&NO_LABELS),
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
            heartbeat_interval_ms: u64::try_from(state.settings.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        }),
    ))
}

/// Most attempts one heartbeat may list.
const MAX_ATTEMPTS_PER_HEARTBEAT: usize = 10_000;

/// The runtimes a call names: 1 to `MAX_RUNTIMES_PER_CALL`, deduplicated.
fn checked(ids: &[RuntimeId]) -> ApiResult<Vec<RuntimeId>> {
    if ids.is_empty() || ids.len() > MAX_RUNTIMES_PER_CALL {
        return Err(ApiError::validation(format!(
            "runtime_ids must hold 1 to {MAX_RUNTIMES_PER_CALL} ids"
        )));
    }
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[utoipa::path(post, path = "/api/v1/daemon/heartbeat", operation_id = "heartbeat", tag = "daemon", request_body = Heartbeat, responses((status = 200, body = HeartbeatReply, description = "Each runtime's state, and the cancellations to act on"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn heartbeat(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<Heartbeat>,
) -> ApiResult<axum::Json<HeartbeatReply>> {
    let ids = checked(&body.runtime_ids)?;
    if body
        .attempts
        .as_ref()
        .is_some_and(|a| a.len() > MAX_ATTEMPTS_PER_HEARTBEAT)
    {
        return Err(ApiError::validation(format!(
            "attempts may list at most {MAX_ATTEMPTS_PER_HEARTBEAT} ids"
        )));
    }
    let reply = service::runtimes::heartbeat(&state, ws, &ids, body.attempts.as_deref()).await?;
    Ok(axum::Json(reply))
}

#[utoipa::path(post, path = "/api/v1/daemon/deregister", operation_id = "deregister_runtimes", tag = "daemon", request_body = RuntimeIds, responses((status = 200, body = Deregistered, description = "The runtimes taken offline"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn deregister(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<RuntimeIds>,
) -> ApiResult<axum::Json<Deregistered>> {
    let ids = checked(&body.runtime_ids)?;
    let offline = service::runtimes::deregister(&state, ws, &ids).await?;
    Ok(axum::Json(Deregistered { offline }))
}

/// Claims up to `max_tasks`; with nothing to claim, waits up to `wait_ms` and is woken as soon as
/// a task for one of the runtime's agents becomes claimable.
#[utoipa::path(post, path = "/api/v1/daemon/claim", operation_id = "claim_tasks", tag = "daemon", request_body = Claim, responses((status = 200, body = ClaimReply, description = "The tasks dispatched to the runtime (possibly none), and cancellations"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn claim(
    Daemon(ws): Daemon,
    State(state): State<AppState>,
    Json(body): Json<Claim>,
) -> ApiResult<axum::Json<ClaimReply>> {
    let deadline = Instant::now() + long_poll_wait(body.wait_ms.get());
    let notify = state.hub.waker.subscribe(ws, body.runtime_id);
    let mut waited = false;
    loop {
        // Enabled before looking, so a wake-up between the look and the wait is kept.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Boxed: the claim's future (its queries' state) is large, and a long poll that then waits
        // would carry its size for the whole wait; 10k waiting daemons are 10k of them.
        let res = Box::pin(service::tasks::claim(
            &state,
            ws,
            body.runtime_id,
            body.max_tasks.get(),
        ))
        .await?;
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
                tasks: res.tasks.into_iter().map(Into::into).collect(),
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
#[utoipa::path(get, path = "/api/v1/daemon/agents/{id}/definition", operation_id = "get_agent_definition", tag = "daemon", params(("id" = uuid::Uuid, Path, description = "Agent id")), responses((status = 200, body = DefinitionReply, description = "The definition and its version", headers(("etag" = String, description = "\"v<version>\""))), (status = 304, description = "Not modified (If-None-Match matched)"), crate::http::openapi::Errors), security(("bearer" = [])))]
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

/// How long a long poll with nothing to claim waits: `wait_ms`, less a random tenth of it. Daemons
/// started together (a deploy, a fleet restart, a replica's sockets coming back) would otherwise
/// time out together and re-claim in one burst every `wait_ms`; the jitter spreads them out a
/// little more each round.
fn long_poll_wait(wait_ms: u64) -> Duration {
    let jitter = if wait_ms >= 1000 {
        rand::random_range(0..=wait_ms / 10)
    } else {
        0
    };
    Duration::from_millis(wait_ms - jitter)
}
