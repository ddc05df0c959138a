//! `POST|GET /agents`, `GET|PATCH|DELETE /agents/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use paddock_api::{Agent, CreateAgent, Page, PatchAgent};
use serde::Deserialize;

use crate::auth::Member;
use crate::db;
use crate::db::agents::{AgentPatch, NewAgent};
use crate::domain::values::{MaxConcurrentTasks, Name, PageLimit};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path, Query};
use crate::ids::AgentId;
use crate::service;
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/agents", operation_id = "create_agent", tag = "member", request_body = CreateAgent, responses((status = 201, body = Agent, description = "Created"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    Member(ws): Member,
    State(state): State<AppState>,
    Json(body): Json<CreateAgent>,
) -> ApiResult<(StatusCode, axum::Json<Agent>)> {
    if body.runtime_id.is_some() == body.runtime_selector.is_some() {
        return Err(ApiError::validation(
            "give either runtime_id (an agent bound to one runtime) or runtime_selector (a pool)",
        ));
    }
    let new = NewAgent {
        workspace: ws,
        runtime: body.runtime_id,
        selector: body.runtime_selector.as_ref(),
        name: body.name.as_str(),
        max_concurrent_tasks: body.max_concurrent_tasks.get(),
        definition: &body.definition,
    };
    let agent = service::agents::create(&state, &new).await?;
    Ok((StatusCode::CREATED, axum::Json(agent.into())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    limit: PageLimit,
    cursor: Option<AgentId>,
    #[serde(default)]
    include_archived: bool,
}

#[utoipa::path(get, path = "/api/v1/agents", operation_id = "list_agents", tag = "member", params(ListQuery), responses((status = 200, body = Page<Agent>, description = "A page of agents"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Agent>>> {
    let mut conn = state.pool.acquire().await?;
    let limit = q.limit.get();
    let rows = db::agents::list(&mut conn, ws, q.cursor, limit + 1, q.include_archived).await?;
    let page = Page::from_rows(rows, limit, |a| a.id.to_string());
    Ok(axum::Json(page.map(Into::into)))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", operation_id = "get_agent", tag = "member", params(("id" = uuid::Uuid, Path, description = "Agent id")), responses((status = 200, body = Agent, description = "The agent"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn get(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
) -> ApiResult<axum::Json<Agent>> {
    let mut conn = state.pool.acquire().await?;
    let agent = db::agents::get(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    Ok(axum::Json(agent.into()))
}

#[utoipa::path(patch, path = "/api/v1/agents/{id}", operation_id = "update_agent", tag = "member", request_body = PatchAgent, params(("id" = uuid::Uuid, Path, description = "Agent id")), responses((status = 200, body = Agent, description = "The updated agent"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn update(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
    Json(body): Json<PatchAgent>,
) -> ApiResult<axum::Json<Agent>> {
    let patch = AgentPatch {
        name: body.name.as_ref().map(Name::as_str),
        max_concurrent_tasks: body.max_concurrent_tasks.map(MaxConcurrentTasks::get),
        definition: body.definition.as_ref(),
        paused: body.paused,
    };
    let agent = service::agents::update(&state, ws, id, &patch).await?;
    Ok(axum::Json(agent.into()))
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", operation_id = "archive_agent", tag = "member", params(("id" = uuid::Uuid, Path, description = "Agent id")), responses((status = 200, body = Agent, description = "The archived agent"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn archive(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<AgentId>,
) -> ApiResult<axum::Json<Agent>> {
    Ok(axum::Json(
        service::agents::archive(&state, ws, id).await?.into(),
    ))
}
