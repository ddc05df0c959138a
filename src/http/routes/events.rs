//! `GET /events?after=|cursor=&limit=`: a workspace's event log, for catch-up.

use axum::extract::State;
use paddock_api::{Event, Page};
use serde::Deserialize;

use crate::auth::Member;
use crate::db;
use crate::db::events::Position;
use crate::domain::values::PageLimit;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Query;
use crate::ids::EventId;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The id of the last event the client has.
    after: Option<EventId>,
    /// The `next_cursor` of the page before: the same position as `after` (give one of the two).
    cursor: Option<EventId>,
    #[serde(default)]
    limit: PageLimit,
}

/// Events after `after` (the id of the last event the client has), in log order, never skipping
/// one that commits late. `next_cursor` is the id to pass as `cursor` (or `after`) next time; null
/// when the page is empty (nothing new yet).
#[utoipa::path(get, path = "/api/v1/events", operation_id = "list_events", tag = "member", params(ListQuery), responses((status = 200, body = Page<Event>, description = "A page of events in log order"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    Member(ws): Member,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Event>>> {
    let after = match (q.after, q.cursor) {
        (Some(a), Some(c)) if a != c => {
            return Err(ApiError::BadRequest(
                "`after` and `cursor` name the same position: give one of them".into(),
            ));
        }
        (a, c) => a.or(c),
    };
    let mut conn = state.pool.acquire().await?;
    let pos = match after {
        Some(after) if after > 0 => db::events::position_after(&mut conn, ws, after).await?,
        _ => Position::START,
    };
    let rows = db::events::list_after(&mut conn, ws, &pos, q.limit.get()).await?;
    let next_cursor = rows.last().map(|e| e.id().to_string());
    Ok(axum::Json(Page {
        items: rows.into_iter().map(|e| e.body).collect(),
        next_cursor,
    }))
}
