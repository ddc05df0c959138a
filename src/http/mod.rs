//! The HTTP surface: routes, middleware, and how errors leave the process.

pub mod error;
pub mod exact_numbers;
pub mod extract;
pub mod listen;
pub mod openapi;
pub mod routes;
pub mod sockets;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::routing::get;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::state::AppState;
use routes::{
    agents, daemon, events, messages, ops, reports, runtimes, tasks, transcript_ws, workspaces, ws,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface, and the OpenAPI document generated from the same route table.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let api: OpenApiRouter<AppState> = OpenApiRouter::new()
        .routes(routes!(workspaces::create))
        .routes(routes!(workspaces::create_token))
        .routes(routes!(workspaces::revoke_token))
        .routes(routes!(runtimes::list))
        .routes(routes!(runtimes::get))
        .routes(routes!(runtimes::drain))
        .routes(routes!(runtimes::undrain))
        .routes(routes!(agents::create, agents::list))
        .routes(routes!(agents::get, agents::update, agents::archive))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::create_batch))
        .routes(routes!(tasks::cancel_many))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(reports::start))
        .routes(routes!(reports::progress))
        .routes(routes!(reports::complete))
        .routes(routes!(reports::fail))
        .routes(routes!(messages::post, messages::list))
        .routes(routes!(transcript_ws::transcript_ws))
        .routes(routes!(events::list))
        .routes(routes!(ws::ws))
        .routes(routes!(daemon::register))
        .routes(routes!(daemon::heartbeat))
        .routes(routes!(daemon::claim))
        .routes(routes!(reports::report))
        .routes(routes!(daemon::deregister))
        .routes(routes!(daemon::definition))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz));
    let (api_router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .split_for_parts();
    let doc_json = Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );

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

    let router = api_router
        .route("/", get(ops::dashboard))
        .route("/metrics", get(crate::telemetry::metrics_endpoint))
        .route(
            "/openapi.json",
            get(openapi::openapi_json).with_state::<AppState>(doc_json),
        )
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.settings.max_request_body))
        .route_layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(axum::middleware::from_fn_with_state(
            Gate {
                max_body: state.settings.max_request_body,
                db_health: state.db_health.clone(),
            },
            gate,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state);
    (router, doc)
}

/// What `gate` checks before a request reaches its route.
#[derive(Clone)]
struct Gate {
    max_body: usize,
    db_health: Arc<crate::breaker::Breaker>,
}

/// Two refusals before any route runs (one layer, so requests pay one hop for both):
///
/// - A body whose `Content-Length` already exceeds `max_request_body` is refused before any of it
///   is read and before the token is checked: reading it would only be waiting for bytes to
///   discard.
/// - While PostgreSQL's breaker is open, API calls answer `503 unavailable` at once instead of
///   waiting out the pool's acquire timeout. Heartbeats pass (a runtime the liveness store vouches
///   for needs no database: its own lookups check the breaker); so do the routes outside `/api/`.
///   A response that found the database unreachable has the breaker's prober check it at once.
async fn gate(
    axum::extract::State(g): axum::extract::State<Gate>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > g.max_body as u64) {
        return ApiError::PayloadTooLarge(g.max_body).into_response();
    }
    let path = req.uri().path();
    let gated = path.starts_with("/api/") && path != "/api/v1/daemon/heartbeat";
    if gated && g.db_health.is_open() {
        return ApiError::DatabaseUnavailable.into_response();
    }
    let res = next.run(req).await;
    if res.extensions().get::<error::DatabaseDown>().is_some() {
        g.db_health.suspect();
    }
    res
}

pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// How long graceful shutdown waits for in-flight requests (long polls end at once on shutdown).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
