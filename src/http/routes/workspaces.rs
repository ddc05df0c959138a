//! `POST /workspaces`, `POST /workspaces/{id}/tokens`, `DELETE /tokens/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use paddock_api::{CreateToken, CreateWorkspace, CreatedToken, Workspace};

use crate::auth::{Admin, Caller};
use crate::domain::values::Slug;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Json, Path};
use crate::ids::{TokenId, WorkspaceId};
use crate::service;
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/workspaces", operation_id = "create_workspace", tag = "admin", request_body = CreateWorkspace, responses((status = 201, body = Workspace, description = "Created"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, axum::Json<Workspace>)> {
    let slug = match body.slug {
        Some(s) => s,
        None => Slug::from_name(body.name.as_str())
            .ok_or_else(|| ApiError::validation("cannot derive a slug from this name; give one"))?,
    };
    let ws = service::workspaces::create(&state, body.name.as_str(), slug.as_str()).await?;
    Ok((StatusCode::CREATED, axum::Json(ws.into())))
}

/// The admin, or a member of the workspace, mints a token.
#[utoipa::path(post, path = "/api/v1/workspaces/{id}/tokens", operation_id = "create_token", tag = "admin", request_body = CreateToken, params(("id" = uuid::Uuid, Path, description = "Workspace id")), responses((status = 201, body = CreatedToken, description = "Created; the secret is shown only here"), crate::http::openapi::Errors), security(("bearer" = [])))]
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
    let (t, secret) =
        service::workspaces::mint_token(&state, ws, body.kind, body.name.as_str()).await?;
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
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", operation_id = "revoke_token", tag = "admin", params(("id" = uuid::Uuid, Path, description = "Token id")), responses((status = 204, description = "Revoked"), crate::http::openapi::Errors), security(("bearer" = [])))]
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
    service::workspaces::revoke_token(&state, id, scope).await?;
    Ok(StatusCode::NO_CONTENT)
}
