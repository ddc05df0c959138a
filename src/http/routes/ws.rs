//! `GET /api/v1/ws`: the workspace's events, live, over a WebSocket.
//!
//! Authenticated with a member token (header, or `?token=` for browsers) before the upgrade. With
//! `?after=<event id>` the session first replays what it missed from the log, then goes live; it
//! subscribes before replaying and drops live events at or before the replay's last position, so there
//! is neither a gap nor a duplicate at the seam. Frames are `{id, type, occurred_at, subject_id,
//! payload}` in log order, each serialised once for all sockets. A client that falls more than
//! `SESSION_BACKLOG` events behind (or whose socket stalls for `SEND_TIMEOUT`, or whose queued frame
//! would pass the send budget: `http::sockets`) is closed with 1013 and reconnects with `after`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Caller, authenticate};
use crate::db;
use crate::db::events::{Event, Position};
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::sockets::{self, SendError};
use crate::ids::{EventId, WorkspaceId};
use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(20);
const REPLAY_PAGE: i64 = 500;

/// A member token from the `Authorization` header or the `token` query parameter.
pub struct WsMember(pub WorkspaceId, pub uuid::Uuid);

impl FromRequestParts<AppState> for WsMember {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(state, parts, true).await? {
            Caller::Member { workspace, token } => Ok(WsMember(workspace, token.0)),
            _ => Err(ApiError::Forbidden("the event stream needs a member token")),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    after: Option<EventId>,
    #[serde(rename = "token")]
    _token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/ws", operation_id = "events_websocket", tag = "member", params(WsQuery), responses((status = 101, description = "Switching to the WebSocket event stream: text frames {id, type, occurred_at, subject_id, payload}"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn ws(
    WsMember(ws, token): WsMember,
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let slot = state.sockets.open(ws, token)?;
    Ok(sockets::accept(upgrade, slot, move |socket| async move {
        session(&state, ws, token, q.after, socket).await
    }))
}

async fn send_event(state: &AppState, socket: &mut WebSocket, e: &Event) -> Result<(), SendError> {
    state.sockets.send_text(socket, e.frame()).await
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

async fn session(
    state: &AppState,
    ws: WorkspaceId,
    token: uuid::Uuid,
    after: Option<EventId>,
    mut socket: WebSocket,
) -> anyhow::Result<()> {
    let mut live = state.hub.subscribe();
    let mut revoked = state.hub.revoked.subscribe();
    let mut last: Option<Position> = None;
    if let Some(after) = after {
        let mut conn = state.pool.acquire().await?;
        let mut pos = db::events::position_after(&mut conn, ws, after).await?;
        loop {
            let page = db::events::list_after(&mut conn, ws, &pos, REPLAY_PAGE).await?;
            let n = page.len() as i64;
            for e in &page {
                if let Err(err) = send_event(state, &mut socket, e).await {
                    close(socket, close_code::AGAIN, err.reason()).await;
                    return Ok(());
                }
                pos = Position {
                    min_id: pos.min_id,
                    ..e.position()
                };
            }
            if n < REPLAY_PAGE {
                break;
            }
        }
        last = Some(pos);
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            msg = live.recv() => match msg {
                Ok(e) => {
                    if e.workspace_id != ws || last.is_some_and(|p| !p.precedes(&e)) {
                        continue;
                    }
                    if let Err(err) = send_event(state, &mut socket, &e).await {
                        close(socket, close_code::AGAIN, err.reason()).await;
                        return Ok(());
                    }
                    last = Some(Position { min_id: 0, ..e.position() });
                }
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!("paddock_websocket_dropped_total", "reason" => "lagged").increment(1);
                    close(socket, close_code::AGAIN, "client too slow; reconnect with ?after=<last id>").await;
                    return Ok(());
                }
                Err(RecvError::Closed) => {
                    close(socket, close_code::AWAY, "server shutting down").await;
                    return Ok(());
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => awaiting_pong = false,
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    close(socket, close_code::POLICY, "no pong").await;
                    return Ok(());
                }
                awaiting_pong = true;
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return Ok(());
                }
            }
            r = revoked.recv() => {
                if matches!(r, Ok(t) if t == token) || matches!(r, Err(RecvError::Lagged(_))) {
                    close(socket, close_code::POLICY, "token revoked").await;
                    return Ok(());
                }
            }
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "server shutting down").await;
                return Ok(());
            }
        }
    }
}
