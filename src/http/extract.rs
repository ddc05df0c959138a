//! Extractors whose rejections are `ApiError`s, so every 400/413/422 has the problem+json shape.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;
use crate::http::exact_numbers;
use crate::state::AppState;

/// A JSON body. Syntax errors answer 400, wrong types or out-of-range values 422, an oversized body
/// 413 — all `validation_failed` (or `payload_too_large`), with serde's message as the detail. A body
/// that has not arrived whole within `body_read_timeout` answers 408 `request_timeout`; a number that
/// would not be stored exactly, 422 (`http::exact_numbers`).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::BadRequest(
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        let limit = state.settings.body_read_timeout;
        let bytes = match tokio::time::timeout(limit, Bytes::from_request(req, state)).await {
            Ok(Ok(b)) => b,
            Ok(Err(rej)) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge(state.settings.max_request_body));
            }
            Ok(Err(rej)) => return Err(ApiError::BadRequest(rej.body_text())),
            Err(_) => return Err(ApiError::RequestTimeout(limit)),
        };
        let v = axum::Json::<T>::from_bytes(&bytes)
            .map_err(|rej| json_rejection(rej, state.settings.max_request_body))?;
        if let Some(lit) = exact_numbers::first_inexact(&bytes) {
            return Err(ApiError::Validation(format!(
                "the number {lit} cannot be stored exactly (an integer beyond ±2^64 or more \
                 significant digits than a 64-bit float holds); send it as a string"
            )));
        }
        Ok(Json(v.0))
    }
}

/// `application/json` or `application/<anything>+json`, as axum's `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(rej: JsonRejection, limit: usize) -> ApiError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(limit),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Validation(rej.body_text()),
        _ => match rej {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("expected a body with Content-Type: application/json".into())
            }
            other => ApiError::BadRequest(other.body_text()),
        },
    }
}

/// Path parameters; a malformed id answers 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej @ PathRejection::FailedToDeserializePathParams(_)) => Err(
                ApiError::BadRequest(format!("invalid path parameter: {}", rej.body_text())),
            ),
            Err(rej) => Err(ApiError::Internal(anyhow::anyhow!(rej.body_text()))),
        }
    }
}

/// Query parameters; bad values answer 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::BadRequest(
                format!("invalid query: {}", e.body_text()),
            )),
            Err(rej) => Err(ApiError::BadRequest(rej.body_text())),
        }
    }
}

/// The `Prefer: return=minimal` preference of RFC 7240 §4.2, which the batch endpoints
/// (`POST /tasks/batch`, `POST /daemon/report`) honour: each result then names its task by id
/// instead of carrying the whole task. Any other preference, or none, leaves the full answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefer {
    pub minimal: bool,
}

impl Prefer {
    /// Whether any `Prefer` header asks for `return=minimal` (names are case-insensitive, the
    /// value may be quoted, parameters after `;` are ignored).
    pub fn of(headers: &axum::http::HeaderMap) -> Self {
        let minimal = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|pref| {
                let token = pref.split(';').next().unwrap_or("");
                let (name, value) = token.split_once('=').unwrap_or((token, ""));
                name.trim().eq_ignore_ascii_case("return")
                    && value
                        .trim()
                        .trim_matches('"')
                        .eq_ignore_ascii_case("minimal")
            });
        Self { minimal }
    }

    /// The `Preference-Applied` header an answer carries when it honoured the preference.
    pub fn applied(self) -> Option<[(&'static str, &'static str); 1]> {
        self.minimal
            .then_some([("preference-applied", "return=minimal")])
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Prefer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.headers))
    }
}

#[cfg(test)]
mod prefer_tests {
    use super::Prefer;
    use axum::http::HeaderMap;

    fn of(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("prefer", v.parse().unwrap());
        }
        Prefer::of(&h).minimal
    }

    #[test]
    fn reads_return_minimal_among_other_preferences() {
        assert!(of(&["return=minimal"]));
        assert!(of(&["respond-async, Return = \"minimal\"; foo=bar"]));
        assert!(of(&["wait=5", "return=minimal"]));
        assert!(!of(&[]));
        assert!(!of(&["return=representation"]));
        assert!(!of(&["minimal"]));
        assert!(!of(&["returns=minimal"]));
    }
}
