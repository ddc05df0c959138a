//! `POST /workspaces`, `POST /workspaces/{id}/tokens`, `DELETE /tokens/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::{self, Admin, Caller};
use crate::db;
use crate::domain::values::{Name, Slug, TokenKind};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{TokenId, WorkspaceId};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    name: Name,
    slug: Option<Slug>,
}

#[utoipa::path(post, path = "/api/v1/workspaces", tag = "admin", request_body = CreateWorkspace, responses((status = 201, body = crate::db::workspaces::Workspace), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, axum::Json<db::workspaces::Workspace>)> {
    let slug = match body.slug {
        Some(s) => s,
        None => Slug::from_name(body.name.as_str())
            .ok_or_else(|| ApiError::validation("cannot derive a slug from this name; give one"))?,
    };
    let mut conn = state.pool.acquire().await?;
    let ws = db::workspaces::insert(
        &mut conn,
        WorkspaceId::new(),
        body.name.as_str(),
        slug.as_str(),
    )
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!("slug `{}` is taken", slug.as_str())),
        other => other,
    })?;
    Ok((StatusCode::CREATED, axum::Json(ws)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    kind: TokenKind,
    name: Name,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    id: TokenId,
    workspace_id: WorkspaceId,
    /// The secret, shown only in this response.
    token: String,
    kind: String,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The admin, or a member of the workspace, mints a token.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/tokens", tag = "admin", request_body = CreateToken, params(("id" = uuid::Uuid, Path, description = "Workspace id")), responses((status = 201, body = CreatedToken), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(ws): Path<WorkspaceId>,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    match caller {
        Caller::Admin => {}
        Caller::Member { workspace, .. } if workspace == ws => {}
        Caller::Member { .. } => return Err(ApiError::NotFound("workspace")),
        Caller::Daemon { .. } => {
            return Err(ApiError::Forbidden("daemon tokens cannot mint tokens"));
        }
    }
    let mut conn = state.pool.acquire().await?;
    if !db::workspaces::exists(&mut conn, ws).await? {
        return Err(ApiError::NotFound("workspace"));
    }
    let secret = auth::generate_token();
    let digest = auth::digest(&secret);
    let t = db::tokens::insert(
        &mut conn,
        TokenId::new(),
        ws,
        body.kind.as_str(),
        body.name.as_str(),
        &digest,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            id: t.id,
            workspace_id: t.workspace_id,
            token: secret,
            kind: t.kind,
            name: t.name,
            created_at: t.created_at,
        }),
    ))
}

/// The admin, or a member of the token's workspace, revokes a token. Takes effect at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin", params(("id" = uuid::Uuid, Path, description = "Token id")), responses((status = 204, description = "Revoked"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<TokenId>,
) -> ApiResult<StatusCode> {
    let scope = match caller {
        Caller::Admin => None,
        Caller::Member { workspace, .. } => Some(workspace),
        Caller::Daemon { .. } => {
            return Err(ApiError::Forbidden("daemon tokens cannot revoke tokens"));
        }
    };
    let mut conn = state.pool.acquire().await?;
    if db::tokens::revoke(&mut conn, id, scope).await? {
        crate::events::feed::announce_revocation(&state.pool, &state.hub, id.0).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("token"))
    }
}
