//! The error body of every refusal: RFC 9457 `application/problem+json` with a stable `code`.

use serde::{Deserialize, Serialize};

crate::wire_enum! {
    /// Stable machine-readable error codes (DESIGN §2).
    ErrorCode {
        Unauthorized = "unauthorized",
        Forbidden = "forbidden",
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
        ValidationFailed = "validation_failed",
        PayloadTooLarge = "payload_too_large",
        RequestTimeout = "request_timeout",
        RuntimeOffline = "runtime_offline",
        AttemptSuperseded = "attempt_superseded",
        InvalidTransition = "invalid_transition",
        Conflict = "conflict",
        RateLimited = "rate_limited",
        Unavailable = "unavailable",
        Internal = "internal",
    }
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}
