//! Workspaces (tenants).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::ids::WorkspaceId;

/// A `workspaces` row.
#[derive(Debug)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: WorkspaceId,
    name: &str,
    slug: &str,
) -> sqlx::Result<Workspace> {
    sqlx::query_file_as!(Workspace, "queries/workspaces/insert.sql", id.0, name, slug)
        .fetch_one(conn)
        .await
}

pub async fn exists(conn: &mut PgConnection, id: WorkspaceId) -> sqlx::Result<bool> {
    sqlx::query_file_scalar!("queries/workspaces/exists.sql", id.0)
        .fetch_one(conn)
        .await
}

impl From<Workspace> for paddock_api::Workspace {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            slug: w.slug,
            created_at: w.created_at,
        }
    }
}
