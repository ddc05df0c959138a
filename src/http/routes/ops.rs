//! `GET /healthz` (process up) and `GET /readyz` (dependencies reachable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use paddock_api::{Health, Readiness};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "ops", responses((status = 200, body = Health, description = "The process is up")))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// 200 when Postgres (and Redis, if configured) answer within a second; else 503 naming what is down.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "ops", responses((status = 200, body = Readiness, description = "Every dependency answers"), (status = 503, body = Readiness, description = "A dependency is down")))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let timeout = std::time::Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool)).await;
    let pg_ok = matches!(pg, Ok(Ok(_)));
    if pg_ok {
        state.db_health.reset();
    } else {
        state.db_health.trip();
    }
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
            status: overall.into(),
            checks,
        }),
    )
}

/// `GET /`: the live dashboard, a static page compiled into the binary.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../dashboard.html"))
}
