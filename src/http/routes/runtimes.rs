//! `GET /runtimes`, `GET /runtimes/{id}`.

use axum::extract::State;
use serde::Deserialize;

use super::Page;
use crate::auth::Member;
use crate::db;
use crate::db::runtimes::Runtime;
use crate::domain::values::PageLimit;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Path, Query};
use crate::ids::RuntimeId;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    limit: PageLimit,
    cursor: Option<RuntimeId>,
}

#[utoipa::path(get, path = "/api/v1/runtimes", tag = "member", params(ListQuery), responses((status = 200, body = Page<Runtime>), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Runtime>>> {
    let mut conn = state.pool.acquire().await?;
    let limit = q.limit.get();
    let rows = db::runtimes::list(&mut conn, ws, q.cursor, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(rows, limit, |r| {
        r.id.to_string()
    })))
}

#[utoipa::path(get, path = "/api/v1/runtimes/{id}", tag = "member", params(("id" = uuid::Uuid, Path, description = "Runtime id")), responses((status = 200, body = Runtime), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn get(
    Member(ws): Member,
    State(state): State<AppState>,
    Path(id): Path<RuntimeId>,
) -> ApiResult<axum::Json<Runtime>> {
    let mut conn = state.pool.acquire().await?;
    let rt = db::runtimes::get(&mut conn, id, ws)
        .await?
        .ok_or(ApiError::NotFound("runtime"))?;
    Ok(axum::Json(rt))
}
