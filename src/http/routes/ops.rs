//! `GET /healthz` (process up) and `GET /readyz` (dependencies reachable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use serde_json::{Value, json};

use crate::state::AppState;

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// `postgres` and, when configured, `redis`: `up` or `down`.
    #[schema(value_type = Object)]
    checks: Value,
}

/// 200 when Postgres (and Redis, if configured) answer within a second; else 503 naming what is down.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let timeout = std::time::Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool)).await;
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let redis = if state.live.is_redis() {
        let r = tokio::time::timeout(timeout, state.live.ping()).await;
        Some(matches!(r, Ok(Ok(()))))
    } else {
        None
    };
    let ready = pg_ok && redis.unwrap_or(true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut checks = json!({ "postgres": if pg_ok { "up" } else { "down" } });
    if let Some(ok) = redis {
        checks["redis"] = json!(if ok { "up" } else { "down" });
    }
    let overall = if ready { "ready" } else { "unavailable" };
    (
        status,
        axum::Json(Readiness {
            status: overall,
            checks,
        }),
    )
}

/// `GET /`: the live dashboard, a static page compiled into the binary.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../dashboard.html"))
}
