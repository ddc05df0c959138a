//! The HTTP error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers return `Result<_, ApiError>`; this is the only place an HTTP status is chosen for an error.
//! Services fail with `service::Error` (and refuse reports with `service::Refusal`); the one
//! translation of those is `From<service::Error> for ApiError` below, and database errors of the
//! read routes go through the same mapping (`From<sqlx::Error>` → `service::Error` → `ApiError`).
//! `Internal` answers 500 with a body that says nothing internal, while the cause chain goes to the
//! log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use paddock_api::{ErrorCode, Problem};

use crate::service::{self, Refusal};

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
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    RequestTimeout(std::time::Duration),
    #[error("{0}")]
    RuntimeOffline(String),
    #[error("attempt {0} is no longer the current attempt of this task")]
    AttemptSuperseded(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// PostgreSQL is unreachable: 503, and the breaker checks the database at once.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    #[error("too many requests for this token; retry in {}s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    /// A cap on open WebSockets: 429.
    #[error("{0}")]
    TooManySockets(String),
    #[error(transparent)]
    Internal(anyhow::Error),
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
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RuntimeOffline(_)
            | Self::AttemptSuperseded(_)
            | Self::InvalidTransition(_)
            | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) | Self::TooManySockets(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of DESIGN §2.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::BadRequest(_) | Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::RuntimeOffline(_) => ErrorCode::RuntimeOffline,
            Self::AttemptSuperseded(_) => ErrorCode::AttemptSuperseded,
            Self::InvalidTransition(_) => ErrorCode::InvalidTransition,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unavailable(_) | Self::DatabaseUnavailable => ErrorCode::Unavailable,
            Self::RateLimited(_) | Self::TooManySockets(_) => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
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
            Self::RequestTimeout(_) => "Request timeout",
            Self::RuntimeOffline(_) => "Runtime offline",
            Self::AttemptSuperseded(_) => "Attempt superseded",
            Self::InvalidTransition(_) => "Invalid transition",
            Self::Conflict(_) => "Conflict",
            Self::Unavailable(_) | Self::DatabaseUnavailable => "Service unavailable",
            Self::RateLimited(_) | Self::TooManySockets(_) => "Too many requests",
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
                self.code().as_str().replace('_', "-")
            ),
            title: self.title().to_owned(),
            status: self.status().as_u16(),
            detail,
            code: self.code(),
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
        if let Self::DatabaseUnavailable = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res.extensions_mut().insert(DatabaseDown);
        }
        res
    }
}

/// Marks a response that found PostgreSQL unreachable (`http::gate` has the breaker check the database).
#[derive(Clone, Copy, Debug)]
pub struct DatabaseDown;

impl From<service::Error> for ApiError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::NotFound(what) => Self::NotFound(what),
            E::Conflict(msg) => Self::Conflict(msg),
            E::InvalidTransition(msg) => Self::InvalidTransition(msg),
            E::RuntimeOffline(msg) => Self::RuntimeOffline(msg),
            E::Refused(refusal) => refusal.into(),
            E::Invalid(msg) => Self::Validation(msg),
            E::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::DatabaseUnavailable
            }
            E::DatabaseDown => Self::DatabaseUnavailable,
            E::Database(e) => Self::Internal(e.into()),
            E::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound => Self::NotFound("task"),
            Refusal::Superseded(attempt) => Self::AttemptSuperseded(attempt.to_string()),
            r @ Refusal::InvalidTransition { .. } => Self::InvalidTransition(r.to_string()),
        }
    }
}

/// Database errors of the read routes take the services' mapping.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        service::Error::from(err).into()
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
