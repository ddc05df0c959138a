//! `GET /healthz` and `GET /readyz` bodies.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `postgres` and, when configured, `redis`: `up` or `down`.
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}
