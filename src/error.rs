//! The one API error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers return `Result<_, ApiError>`; this is the only place an HTTP status is chosen for an error.
//! Use a specific variant for anything the client can act on; `Internal` (from `sqlx::Error`,
//! `anyhow::Error`, …) answers 500 with a body that says nothing internal, while the cause chain goes
//! to the log. Unique-constraint violations are mapped to `Conflict` in one place, `From<sqlx::Error>`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    /// Malformed request (syntax): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid values: 422.
    #[error("{0}")]
    Validation(String),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("runtime {0} is offline")]
    RuntimeOffline(String),
    #[error("attempt {0} is no longer the current attempt of this task")]
    AttemptSuperseded(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("too many requests for this token; retry in {}s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `not_found`, `validation_failed`,
    /// `payload_too_large`, `runtime_offline`, `attempt_superseded`, `invalid_transition`, `conflict`,
    /// `rate_limited`, `unavailable`.
    pub code: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RuntimeOffline(_)
            | Self::AttemptSuperseded(_)
            | Self::InvalidTransition(_)
            | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of DESIGN §2.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest(_) | Self::Validation(_) => "validation_failed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RuntimeOffline(_) => "runtime_offline",
            Self::AttemptSuperseded(_) => "attempt_superseded",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::BadRequest(_) => "Bad request",
            Self::Validation(_) => "Validation failed",
            Self::PayloadTooLarge(_) => "Payload too large",
            Self::RuntimeOffline(_) => "Runtime offline",
            Self::AttemptSuperseded(_) => "Attempt superseded",
            Self::InvalidTransition(_) => "Invalid transition",
            Self::Conflict(_) => "Conflict",
            Self::Unavailable(_) => "Service unavailable",
            Self::RateLimited(_) => "Too many requests",
            Self::Internal(_) => "Internal server error",
        }
    }

    pub fn problem(&self) -> Problem {
        let detail = match self {
            Self::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        Problem {
            type_: format!(
                "https://paddock.dev/problems/{}",
                self.code().replace('_', "-")
            ),
            title: self.title().to_owned(),
            status: self.status().as_u16(),
            detail,
            code: self.code().to_owned(),
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Self::Validation(msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "request failed");
        }
        let problem = self.problem();
        let mut res = (self.status(), axum::Json(problem)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::RateLimited(wait) = self {
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        res
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.code().as_deref() {
                // unique_violation
                Some("23505") => {
                    return Self::Conflict("a resource with these values already exists".into());
                }
                // check_violation, not_null_violation, string/numeric out of range
                Some("23514") | Some("23502") | Some("22001") | Some("22003") => {
                    return Self::Validation(format!("value rejected: {}", db.message()));
                }
                // untranslatable_character (\u0000 in jsonb), character_not_in_repertoire (NUL in text)
                Some("22P05") | Some("22021") => {
                    return Self::Validation(
                        "text and JSON values may not contain NUL (\\u0000) characters".into(),
                    );
                }
                _ => {}
            }
        }
        // The server is gone, restarting or full, or this pooled connection died with it (pooled
        // connections are pinged only after a second idle, src/db/mod.rs): retrying will do.
        let connection_lost = match &err {
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
            }),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        };
        if connection_lost {
            tracing::warn!(error = %err, "database unavailable");
            return Self::Unavailable("the database is unavailable; retry shortly".into());
        }
        Self::Internal(err.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Whole seconds to wait, at least one (`Retry-After` has a resolution of seconds).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}
