//! `GET /runtimes`, `GET /runtimes/{id}`, `POST /runtimes/{id}/drain|undrain`.

use axum::extract::State;
use paddock_api::{Page, Runtime};
use serde::Deserialize;

use crate::auth::Member;
use crate::db;
use crate::domain::values::PageLimit;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Path, Query};
use crate::ids::RuntimeId;
use crate::service;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    limit: PageLimit,
    cursor: Option<RuntimeId>,
}

#[utoipa::path(get, path = "/api/v1/runtimes", operation_id = "list_runtimes", tag = "member", params(ListQuery), responses((status = 200, body = Page<Runtime>, description = "A page of runtimes"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Runtime>>> {
    let mut conn = state.pool.acquire().await?;
    let limit = q.limit.get();
    let rows = db::runtimes::list(&mut conn, ws, q.cursor, limit + 1).await?;
    let page = Page::from_rows(rows, limit, |r| r.id.to_string());
    Ok(axum::Json(page.map(Into::into)))
}

#[utoipa::path(get, path = "/api/v1/runtimes/{id}", operation_id = "get_runtime", tag = "member", params(("id" = uuid::Uuid, Path, description = "Runtime id")), responses((status = 200, body = Runtime, description = "The runtime"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn get(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<RuntimeId>,
) -> ApiResult<axum::Json<Runtime>> {
    let mut conn = state.pool.acquire().await?;
    let rt = db::runtimes::get(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("runtime"))?;
    Ok(axum::Json(rt.into()))
}

/// Drains the runtime: its claims answer an empty list until it is undrained; its dispatched and
/// running tasks finish. Draining a draining runtime answers it again.
#[utoipa::path(post, path = "/api/v1/runtimes/{id}/drain", operation_id = "drain_runtime", tag = "member", params(("id" = uuid::Uuid, Path, description = "Runtime id")), responses((status = 200, body = Runtime, description = "The runtime, draining"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn drain(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<RuntimeId>,
) -> ApiResult<axum::Json<Runtime>> {
    let rt = service::runtimes::set_draining(&state, ws, id, true).await?;
    Ok(axum::Json(rt.into()))
}

/// Ends a drain: the runtime's claims get tasks again.
#[utoipa::path(post, path = "/api/v1/runtimes/{id}/undrain", operation_id = "undrain_runtime", tag = "member", params(("id" = uuid::Uuid, Path, description = "Runtime id")), responses((status = 200, body = Runtime, description = "The runtime, not draining"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn undrain(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<RuntimeId>,
) -> ApiResult<axum::Json<Runtime>> {
    let rt = service::runtimes::set_draining(&state, ws, id, false).await?;
    Ok(axum::Json(rt.into()))
}
