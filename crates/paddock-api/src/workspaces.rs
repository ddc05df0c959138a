//! Workspaces and tokens (admin).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::TokenKind;
use crate::ids::{TokenId, WorkspaceId};
use crate::values::{Name, Slug};

/// `POST /workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: Name,
    /// Derived from the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /workspaces/{id}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub kind: TokenKind,
    pub name: Name,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: TokenId,
    pub workspace_id: WorkspaceId,
    /// The secret, shown only in this response.
    pub token: String,
    pub kind: TokenKind,
    pub name: String,
    pub created_at: DateTime<Utc>,
}
