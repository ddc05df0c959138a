//! API tokens, stored as SHA-256 digests.

use chrono::{DateTime, Utc};
use paddock_api::TokenKind;
use sqlx::PgConnection;

use crate::ids::{TokenId, WorkspaceId};

/// A `tokens` row, without its digest.
#[derive(Debug)]
pub struct Token {
    pub id: TokenId,
    pub workspace_id: WorkspaceId,
    pub kind: TokenKind,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct TokenAuth {
    pub id: TokenId,
    pub workspace_id: WorkspaceId,
    pub kind: TokenKind,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: TokenId,
    workspace: WorkspaceId,
    kind: TokenKind,
    name: &str,
    digest: &[u8],
) -> sqlx::Result<Token> {
    sqlx::query_file_as!(
        Token,
        "queries/tokens/insert.sql",
        id.0,
        workspace.0,
        kind as _,
        name,
        digest
    )
    .fetch_one(conn)
    .await
}

pub async fn find_by_digest(
    conn: &mut PgConnection,
    digest: &[u8],
) -> sqlx::Result<Option<TokenAuth>> {
    sqlx::query_file_as!(TokenAuth, "queries/tokens/find_by_digest.sql", digest)
        .fetch_optional(conn)
        .await
}

/// Revokes a token; `workspace` limits it to one workspace. Returns whether it exists.
pub async fn revoke(
    conn: &mut PgConnection,
    id: TokenId,
    workspace: Option<WorkspaceId>,
) -> sqlx::Result<bool> {
    let row = sqlx::query_file_scalar!("queries/tokens/revoke.sql", id.0, workspace.map(|w| w.0))
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}
