//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request/response types (`utoipa-axum` collects them while the router is built, so the document
//! cannot drift from the routes). Served at `GET /openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::domain::values;
use crate::http::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Paddock",
        description = "Control plane for AI-agent runtimes: workspaces, tokens, runtimes, agents, tasks with fenced attempts, and the event log.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    // Hand-written schemas (bounded values) are registered here; derived ones register themselves.
    components(schemas(
        Problem, values::Priority, values::MaxAttempts, values::MaxTasks, values::WaitMs,
        values::MaxConcurrentTasks, values::MaxConcurrency, values::PageLimit, values::Name, values::Slug
    )),
    tags(
        (name = "admin", description = "Workspaces and tokens"),
        (name = "member", description = "People and the front end: agents, tasks, events"),
        (name = "daemon", description = "Daemons on users' machines: register, heartbeat, claim, report"),
        (name = "ops", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pdk_…")
                    .build(),
            ),
        );
    }
}

/// The problem+json answers any authenticated route may give.
#[derive(utoipa::IntoResponses)]
pub enum Errors {
    /// Malformed JSON, a bad id in the path, or a bad query parameter.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, unknown or revoked token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token's kind may not use this route.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such resource in the caller's workspace.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// `runtime_offline`, `attempt_superseded`, `invalid_transition` or `conflict`.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body did not arrive whole within `body_read_timeout` (`request_timeout`).
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(Problem),
    /// The body exceeds the configured limit (also refused from `Content-Length` alone).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Wrong types, unknown fields, out-of-range values, or a number that would not be kept exactly.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// Over the per-token rate limit (`Retry-After` says when to try again), or over a WebSocket cap.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// The database is unreachable, or the replica holds `max_connections` connections.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Serves the generated document.
pub async fn openapi_json(
    axum::extract::State(doc): axum::extract::State<std::sync::Arc<String>>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        (*doc).clone(),
    )
}
