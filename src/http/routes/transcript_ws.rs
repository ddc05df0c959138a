//! `GET /api/v1/tasks/{id}/messages/ws`: a task's transcript, live, over a WebSocket (DESIGN §9).
//!
//! The session subscribes to the task's new messages first, then replays the stored transcript
//! after the cursor, then sends each new message as the feed reads it (commit-horizon order, on
//! whichever replica it was written); a message the replay sent is not sent again (only messages of
//! transactions older than the end of the replay can be both, so the replay's keys are kept until
//! the feed passes that point). Frames that are queued together go out in one write. Once the task is
//! terminal, the session waits until everything committed before it saw that has been read, sends
//! `{"type": "end", "status"}` and closes with 1000. A socket that falls `SOCKET_QUEUE` frames
//! behind is closed with 1013 and reconnects with its cursor.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures::SinkExt;
use paddock_api::{EventType, TaskStatus, TranscriptFrame};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::messages::{check_task, start_of};
use super::ws::WsMember;
use crate::db;
use crate::http::error::ApiResult;
use crate::http::extract::{Path, Query};
use crate::http::sockets::{self, SendError};
use crate::ids::{TaskId, WorkspaceId};
use crate::state::AppState;
use crate::transcripts::Frame;

const REPLAY_PAGE: i64 = 500;
/// Most frames written to the socket before one flush.
const SEND_BATCH: usize = 256;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// Only this attempt's messages (without it the session follows the task across attempts).
    attempt: Option<i32>,
    /// With `attempt`: start after this seq.
    after_seq: Option<i64>,
    /// Resume after `<attempt>:<seq>` (across attempts).
    cursor: Option<String>,
    #[serde(rename = "token")]
    _token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/messages/ws", operation_id = "transcript_websocket", tag = "member", params(("id" = uuid::Uuid, Path, description = "Task id"), TranscriptQuery), responses((status = 101, description = "Switching to the WebSocket transcript: text frames {type: message, attempt, seq, kind, content, data, at}, then {type: end, status}"), crate::http::openapi::Errors), security(("bearer" = [])))]
pub async fn transcript_ws(
    WsMember(ws, token): WsMember,
    State(state): State<AppState>,
    Path(id): Path<TaskId>,
    Query(q): Query<TranscriptQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let after = start_of(q.attempt, q.after_seq, q.cursor.as_deref())?;
    check_task(&state, ws, id).await?;
    let slot = state.sockets.open(ws, token)?;
    let follow = Follow {
        ws,
        task: id,
        token,
        attempt: q.attempt,
        after,
    };
    Ok(sockets::accept(upgrade, slot, move |socket| async move {
        follow.run(&state, socket).await
    }))
}

/// One transcript session.
struct Follow {
    ws: WorkspaceId,
    task: TaskId,
    token: uuid::Uuid,
    attempt: Option<i32>,
    after: (i32, i64),
}

/// Why a session ends.
enum Ending {
    /// The task is terminal and everything was sent.
    Done(TaskStatus),
    Closed(u16, &'static str),
    Gone,
}

impl Follow {
    async fn run(self, state: &AppState, mut socket: WebSocket) -> anyhow::Result<()> {
        let mut sub = state.hub.transcripts.subscribe(self.task);
        let mut events = state.hub.subscribe();
        let mut revoked = state.hub.revoked.subscribe();
        let mut seam = Seam::default();
        if let Err(why) = self.replay(state, &mut socket, &mut seam.replayed).await? {
            return close(socket, close_code::AGAIN, why).await;
        }
        seam.xact = {
            let mut conn = state.pool.acquire().await?;
            db::transcripts::next_xid(&mut conn).await?
        };
        let mut ending = None;
        let mut terminal = self.status_if_terminal(state).await?;
        loop {
            if let Some(status) = terminal.take() {
                // Everything committed before the task was seen to end is sent, then `end`.
                let horizon = {
                    let mut conn = state.pool.acquire().await?;
                    db::transcripts::next_xid(&mut conn).await?
                };
                ending = Some((status, horizon));
            }
            let wait_end = async {
                match ending {
                    Some((_, h)) => state.hub.transcripts.delivered_past(h).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                frame = sub.rx.recv() => match frame {
                    Some(f) => {
                        match self.send_live(state, &mut socket, f, &mut sub.rx, &mut seam).await {
                            Err(err) => Some(Ending::Closed(close_code::AGAIN, err.reason())),
                            Ok(()) => None,
                        }
                    }
                    None => Some(Ending::Closed(close_code::AGAIN, "client too slow; reconnect with ?cursor=<attempt>:<seq>")),
                },
                e = events.recv() => match e {
                    Ok(e) if e.body.subject_id == self.task.0 && ending.is_none() => {
                        terminal = terminal_of(e.kind());
                        None
                    }
                    Ok(_) => None,
                    Err(RecvError::Lagged(_)) => {
                        terminal = self.status_if_terminal(state).await?;
                        None
                    }
                    Err(RecvError::Closed) => Some(Ending::Closed(close_code::AWAY, "server shutting down")),
                },
                () = wait_end => {
                    // Frames the feed handed out up to the horizon are queued: send them first.
                    while let Ok(f) = sub.rx.try_recv() {
                        self.send_live(state, &mut socket, f, &mut sub.rx, &mut seam).await?;
                    }
                    ending.map(|(s, _)| Ending::Done(s))
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Some(Ending::Gone),
                    Some(Ok(_)) => None,
                },
                r = revoked.recv() => match r {
                    Ok(t) if t == self.token => Some(Ending::Closed(close_code::POLICY, "token revoked")),
                    Err(RecvError::Lagged(_)) => Some(Ending::Closed(close_code::POLICY, "token revoked")),
                    _ => None,
                },
                _ = state.shutdown.cancelled() => Some(Ending::Closed(close_code::AWAY, "server shutting down")),
            };
            match outcome {
                None => {}
                Some(Ending::Gone) => return Ok(()),
                Some(Ending::Closed(code, why)) => return close(socket, code, why).await,
                Some(Ending::Done(status)) => {
                    let end = serde_json::to_string(&TranscriptFrame::End { status })?;
                    send(state, &mut socket, end).await?;
                    return close(socket, close_code::NORMAL, "task ended").await;
                }
            }
        }
    }

    /// Whether a live frame is one this session follows: of its attempt (if it keeps to one),
    /// after its cursor, and not sent by the replay.
    fn wants(&self, f: &Frame, seam: &mut Seam) -> bool {
        self.attempt.is_none_or(|a| a == f.attempt)
            && (f.attempt, f.seq) > self.after
            && seam.is_new(f)
    }

    /// Writes `first` and whatever else is queued already (up to `SEND_BATCH`), then flushes once.
    async fn send_live(
        &self,
        state: &AppState,
        socket: &mut WebSocket,
        first: Arc<Frame>,
        rx: &mut mpsc::Receiver<Arc<Frame>>,
        seam: &mut Seam,
    ) -> Result<(), SendError> {
        let written = std::sync::atomic::AtomicUsize::new(0);
        let write = async {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(f) = next.take() {
                if self.wants(&f, seam) {
                    written.fetch_add(f.text.len(), std::sync::atomic::Ordering::Relaxed);
                    socket.feed(Message::Text(f.text.clone())).await?;
                    n += 1;
                }
                if n < SEND_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            socket.flush().await
        };
        state
            .sockets
            .send(|| written.load(std::sync::atomic::Ordering::Relaxed), write)
            .await
    }

    /// Sends the stored transcript after the cursor; `Err(reason)` when the socket is too slow.
    async fn replay(
        &self,
        state: &AppState,
        socket: &mut WebSocket,
        sent: &mut HashSet<(i32, i64)>,
    ) -> anyhow::Result<Result<(), &'static str>> {
        let mut page = db::transcripts::Page {
            attempt: self.attempt,
            after: self.after,
            limit: REPLAY_PAGE,
        };
        loop {
            let rows = {
                let mut conn = state.pool.acquire().await?;
                db::transcripts::list(&mut conn, self.task, &page).await?
            };
            let n = rows.len() as i64;
            for row in rows {
                page.after = (row.attempt, row.seq);
                sent.insert(page.after);
                let text = serde_json::to_string(&TranscriptFrame::Message(row.into()))?;
                if let Err(err) = send(state, socket, text).await {
                    return Ok(Err(err.reason()));
                }
            }
            if n < REPLAY_PAGE {
                return Ok(Ok(()));
            }
        }
    }

    async fn status_if_terminal(&self, state: &AppState) -> anyhow::Result<Option<TaskStatus>> {
        let mut conn = state.pool.acquire().await?;
        let fence = db::transcripts::fence(&mut conn, self.ws, self.task).await?;
        Ok(fence.map(|f| f.status).filter(|s| s.is_terminal()))
    }
}

/// Where the replay ends and the live stream begins: the keys the replay sent, and the next
/// transaction id read after it. A message of a transaction at or past `xact` started after the
/// replay's reads, so it cannot have been replayed; frames come in transaction order, so once one
/// such frame arrives no frame can repeat the replay, and the keys are let go.
#[derive(Default)]
struct Seam {
    replayed: HashSet<(i32, i64)>,
    xact: u64,
}

impl Seam {
    fn is_new(&mut self, f: &Frame) -> bool {
        if self.replayed.is_empty() {
            return true;
        }
        if f.xact >= self.xact {
            self.replayed = HashSet::new();
            return true;
        }
        !self.replayed.contains(&(f.attempt, f.seq))
    }
}

fn terminal_of(kind: EventType) -> Option<TaskStatus> {
    match kind {
        EventType::TaskCompleted => Some(TaskStatus::Completed),
        EventType::TaskFailed => Some(TaskStatus::Failed),
        EventType::TaskCancelled => Some(TaskStatus::Cancelled),
        _ => None,
    }
}

async fn send(
    state: &AppState,
    socket: &mut WebSocket,
    text: impl Into<Utf8Bytes>,
) -> Result<(), SendError> {
    state.sockets.send_text(socket, text.into()).await
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) -> anyhow::Result<()> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    Ok(())
}
