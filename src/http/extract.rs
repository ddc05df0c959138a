//! Extractors whose rejections are `ApiError`s, so every 400/413/422 has the problem+json shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;
use crate::state::AppState;

/// A JSON body. Syntax errors answer 400, wrong types or out-of-range values 422, an oversized body
/// 413 — all `validation_failed` (or `payload_too_large`), with serde's message as the detail.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej, state.settings.max_request_body)),
        }
    }
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
