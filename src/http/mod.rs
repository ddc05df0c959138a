//! The HTTP surface: routes, middleware, and how errors leave the process.

pub mod extract;
pub mod routes;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::routing::{delete, get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;
use routes::{agents, daemon, events, ops, runtimes, tasks, workspaces, ws};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/workspaces", post(workspaces::create))
        .route("/workspaces/{id}/tokens", post(workspaces::create_token))
        .route("/tokens/{id}", delete(workspaces::revoke_token))
        .route("/runtimes", get(runtimes::list))
        .route("/runtimes/{id}", get(runtimes::get))
        .route("/agents", post(agents::create).get(agents::list))
        .route(
            "/agents/{id}",
            get(agents::get)
                .patch(agents::update)
                .delete(agents::archive),
        )
        .route("/tasks", post(tasks::create).get(tasks::list))
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/start", post(daemon::start))
        .route("/tasks/{id}/progress", post(daemon::progress))
        .route("/tasks/{id}/complete", post(daemon::complete))
        .route("/tasks/{id}/fail", post(daemon::fail))
        .route("/events", get(events::list))
        .route("/ws", get(ws::ws))
        .route("/daemon/register", post(daemon::register))
        .route("/daemon/heartbeat", post(daemon::heartbeat))
        .route("/daemon/claim", post(daemon::claim))
        .route("/daemon/report", post(daemon::report))
        .route("/daemon/deregister", post(daemon::deregister))
        .route("/daemon/agents/{id}/definition", get(daemon::definition));

    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!("http", method = %req.method(), route, request_id)
    });

    Router::new()
        .nest("/api/v1", api)
        .route("/", get(ops::dashboard))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(crate::telemetry::metrics_endpoint))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(state.settings.max_request_body))
        .route_layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// How long graceful shutdown waits for in-flight requests (long polls end at once on shutdown).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
