//! What WebSockets may hold, across all of a replica's sockets (event stream and transcripts).
//!
//! - **Caps**: at most `ws_max_per_token` open sockets per token and `ws_max_per_workspace` per
//!   workspace; one more is refused with 429 `rate_limited` before the upgrade.
//! - **Send budget**: a frame the peer does not take at once (its socket is full) stays queued in
//!   the server, one copy per socket; all such frames together may hold `ws_send_budget` bytes. A
//!   socket whose frame would exceed it is closed with 1013 (reconnect and resume). A socket that
//!   takes its frames within `FAST_SEND` never touches the budget, so slow readers cannot get fast
//!   ones dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;

use crate::config::Settings;
use crate::http::error::ApiError;
use crate::ids::WorkspaceId;

/// How long a send may take before its frame counts against the send budget.
const FAST_SEND: Duration = Duration::from_millis(50);
/// A send not done in this long closes the socket (1013).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer may send: pongs, pings and a close, nothing large.
const MAX_INBOUND: usize = 64 << 10;

/// Completes an upgrade whose place in the caps is `slot`: the socket gets a small read buffer
/// (tungstenite's default is 128 KiB per socket, allocated up front, for peers that only ever send
/// pongs) and a cap on inbound messages; `session` runs on it, counted in
/// `paddock_websocket_connections`, and the slot is given back when it ends.
pub fn accept<F, Fut>(upgrade: WebSocketUpgrade, slot: Slot, session: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    upgrade
        .read_buffer_size(4 << 10)
        .max_message_size(MAX_INBOUND)
        .max_frame_size(MAX_INBOUND)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            metrics::gauge!("paddock_websocket_connections").increment(1.0);
            if let Err(e) = session(socket).await {
                tracing::debug!(error = %e, "websocket session ended");
            }
            metrics::gauge!("paddock_websocket_connections").decrement(1.0);
        })
}

/// Why a frame was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the send budget is spent")]
    Budget,
    #[error("send timed out")]
    Timeout,
    #[error(transparent)]
    Socket(#[from] axum::Error),
}

impl SendError {
    /// The close reason the peer is told.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Budget => "server send budget spent; reconnect and resume",
            _ => "client too slow; reconnect and resume",
        }
    }
}

pub struct Sockets {
    per_token: Counts<uuid::Uuid>,
    per_workspace: Counts<WorkspaceId>,
    max_per_token: usize,
    max_per_workspace: usize,
    budget: usize,
    queued: AtomicUsize,
}

impl Sockets {
    pub fn new(s: &Settings) -> Self {
        Sockets {
            per_token: Counts::default(),
            per_workspace: Counts::default(),
            max_per_token: s.ws_max_per_token,
            max_per_workspace: s.ws_max_per_workspace,
            budget: s.ws_send_budget,
            queued: AtomicUsize::new(0),
        }
    }

    /// A place for one more socket of this token, or 429.
    pub fn open(self: &Arc<Self>, ws: WorkspaceId, token: uuid::Uuid) -> Result<Slot, ApiError> {
        let refused = |what: &str, max: usize| {
            metrics::counter!("paddock_websocket_refused_total", "reason" => what.to_owned())
                .increment(1);
            ApiError::TooManySockets(format!(
                "at most {max} open WebSockets per {what}; close one first"
            ))
        };
        if !self.per_token.add(token, self.max_per_token) {
            return Err(refused("token", self.max_per_token));
        }
        if !self.per_workspace.add(ws, self.max_per_workspace) {
            self.per_token.remove(&token);
            return Err(refused("workspace", self.max_per_workspace));
        }
        Ok(Slot {
            sockets: self.clone(),
            ws,
            token,
        })
    }

    /// Runs `send` (one frame, or a batch then a flush): at once if the peer takes it within
    /// `FAST_SEND`; otherwise its `bytes()` are charged to the send budget until it is done (or
    /// refused with `Budget` when they do not fit), for at most `SEND_TIMEOUT` in all.
    pub async fn send<F>(&self, bytes: impl Fn() -> usize, send: F) -> Result<(), SendError>
    where
        F: Future<Output = Result<(), axum::Error>>,
    {
        let mut send = std::pin::pin!(send);
        if let Ok(r) = tokio::time::timeout(FAST_SEND, send.as_mut()).await {
            return Ok(r?);
        }
        let n = bytes();
        let fits = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.budget).then_some(q + n)
            })
            .is_ok();
        if !fits {
            metrics::counter!("paddock_websocket_dropped_total", "reason" => "budget").increment(1);
            return Err(SendError::Budget);
        }
        metrics::gauge!("paddock_websocket_queued_bytes").increment(n as f64);
        let r = tokio::time::timeout(SEND_TIMEOUT - FAST_SEND, send).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        metrics::gauge!("paddock_websocket_queued_bytes").decrement(n as f64);
        match r {
            Ok(r) => Ok(r?),
            Err(_) => {
                metrics::counter!("paddock_websocket_dropped_total", "reason" => "timeout")
                    .increment(1);
                Err(SendError::Timeout)
            }
        }
    }

    /// Sends one text frame through `send`'s budget.
    pub async fn send_text(
        &self,
        socket: &mut WebSocket,
        text: Utf8Bytes,
    ) -> Result<(), SendError> {
        let len = text.len();
        self.send(|| len, socket.send(Message::Text(text))).await
    }
}

/// One open socket's place in the caps; given back on drop.
pub struct Slot {
    sockets: Arc<Sockets>,
    ws: WorkspaceId,
    token: uuid::Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sockets.per_token.remove(&self.token);
        self.sockets.per_workspace.remove(&self.ws);
    }
}

struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Copy> Counts<K> {
    fn add(&self, k: K, max: usize) -> bool {
        let mut m = self.0.lock().expect("socket counts lock");
        let n = m.entry(k).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn remove(&self, k: &K) {
        let mut m = self.0.lock().expect("socket counts lock");
        if let Entry::Occupied(mut e) = m.entry(*k) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets(budget: usize) -> Arc<Sockets> {
        Arc::new(Sockets::new(&Settings {
            ws_send_budget: budget,
            ws_max_per_token: 2,
            ws_max_per_workspace: 3,
            ..Settings::default()
        }))
    }

    fn stuck() -> impl Future<Output = Result<(), axum::Error>> {
        std::future::pending()
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_frames_share_the_budget_and_the_one_past_it_is_refused() {
        let s = sockets(1500);
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.send(|| 1000, stuck()).await }
        });
        tokio::time::sleep(FAST_SEND * 2).await;
        assert_eq!(
            s.queued.load(Ordering::Acquire),
            1000,
            "the stuck frame is charged"
        );
        let second = s.send(|| 1000, stuck()).await;
        assert!(matches!(second, Err(SendError::Budget)), "{second:?}");
        // A peer that takes its frame at once is never charged, budget full or not.
        s.send(|| 10_000, async { Ok(()) }).await.unwrap();
        // The stuck one times out and gives its bytes back.
        let first = first.await.unwrap();
        assert!(matches!(first, Err(SendError::Timeout)), "{first:?}");
        assert_eq!(s.queued.load(Ordering::Acquire), 0);
        s.send(|| 1000, async {
            tokio::time::sleep(FAST_SEND * 2).await;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            s.queued.load(Ordering::Acquire),
            0,
            "a slow send that ends gives back"
        );
    }

    #[test]
    fn sockets_are_capped_per_token_and_per_workspace() {
        let s = sockets(1);
        let (ws, other_ws) = (WorkspaceId::new(), WorkspaceId::new());
        let (t1, t2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let a = s.open(ws, t1).unwrap();
        let _b = s.open(ws, t1).unwrap();
        assert!(s.open(ws, t1).is_err(), "a third socket of the token");
        let _c = s.open(ws, t2).unwrap();
        assert!(s.open(ws, t2).is_err(), "a fourth socket of the workspace");
        assert!(
            s.open(other_ws, uuid::Uuid::new_v4()).is_ok(),
            "other workspaces are apart"
        );
        drop(a);
        s.open(ws, t2).expect("a place freed");
    }
}
