//! Tenancy use cases: create a workspace, mint and revoke its tokens.

use paddock_api::TokenKind;

use super::{Error, Result};
use crate::auth;
use crate::db;
use crate::db::tokens::Token;
use crate::db::workspaces::Workspace;
use crate::ids::{TokenId, WorkspaceId};
use crate::state::App;

/// Creates a workspace; a slug already taken is a conflict that names it.
pub async fn create(app: &App, name: &str, slug: &str) -> Result<Workspace> {
    let mut conn = app.pool.acquire().await?;
    db::workspaces::insert(&mut conn, WorkspaceId::new(), name, slug)
        .await
        .map_err(|e| match Error::from(e) {
            Error::Conflict(_) => Error::Conflict(format!("slug `{slug}` is taken")),
            other => other,
        })
}

/// Mints a token of the workspace; returns it with its secret (shown once, stored as a digest).
pub async fn mint_token(
    app: &App,
    ws: WorkspaceId,
    kind: TokenKind,
    name: &str,
) -> Result<(Token, String)> {
    let mut conn = app.pool.acquire().await?;
    if !db::workspaces::exists(&mut conn, ws).await? {
        return Err(Error::NotFound("workspace"));
    }
    let secret = auth::generate_token();
    let digest = auth::digest(&secret);
    let token = db::tokens::insert(&mut conn, TokenId::new(), ws, kind, name, &digest).await?;
    Ok((token, secret))
}

/// Revokes a token (`scope`: only within that workspace), at once on every replica.
pub async fn revoke_token(app: &App, id: TokenId, scope: Option<WorkspaceId>) -> Result<()> {
    let mut conn = app.pool.acquire().await?;
    if !db::tokens::revoke(&mut conn, id, scope).await? {
        return Err(Error::NotFound("token"));
    }
    crate::events::feed::announce_revocation(&app.pool, &app.hub, id.0).await;
    Ok(())
}
