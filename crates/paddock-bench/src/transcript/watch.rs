//! The watchers: WebSocket followers of `GET /tasks/{id}/messages/ws`. Each takes the time a frame
//! arrives, reads only its `type`, `seq` and `at`, records arrival − `at`, and keeps which seqs it
//! has seen, to count lost, duplicate and out-of-order frames once the posters have stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::setup::Attempt;
use crate::stats::Latencies;

pub type Socket = WebSocketStream<TcpStream>;

/// Once the posters have stopped, a watcher still short of frames gives up after this long without
/// one (and counts the rest as lost).
const TAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// A watcher closed by the server (e.g. 1013, too slow) reconnects with its cursor this many times.
const MAX_RECONNECTS: u64 = 20;

/// Opens a transcript socket for `attempt`, after `after_seq` if given; returns once the upgrade
/// succeeded.
pub async fn connect(
    addr: std::net::SocketAddr,
    token: &str,
    attempt: &Attempt,
    after_seq: Option<u64>,
) -> anyhow::Result<Socket> {
    let mut url = format!("ws://{addr}/api/v1/tasks/{}/messages/ws", attempt.task_id);
    if let Some(s) = after_seq {
        url.push_str(&format!("?attempt={}&after_seq={s}", attempt.attempt));
    }
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .with_context(|| format!("transcript socket of task {}", attempt.task_id))?;
    Ok(socket)
}

/// What every watcher shares.
pub struct Shared {
    pub addr: std::net::SocketAddr,
    pub token: String,
    /// Messages accepted so far per attempt (final once `done` is true).
    pub posted: Arc<[AtomicU64]>,
    /// Latencies are recorded for messages whose `at` falls in this window (the measured seconds).
    pub window: (DateTime<Utc>, DateTime<Utc>),
}

/// One watcher's count.
#[derive(Default)]
pub struct Watched {
    pub frames: u64,
    pub distinct: u64,
    pub expected: u64,
    pub duplicates: u64,
    /// A seq below one seen before (for one poster posting in order, none are expected).
    pub out_of_order: u64,
    /// Seen again in a replay after a reconnect (expected then, not a duplicate).
    pub resent: u64,
    pub reconnects: u64,
    pub latency: Latencies,
    /// Per second of the window the messages were stored in: frames, sum and max of their
    /// latency (µs) — whether the lag stays put or grows over the run.
    pub by_second: Vec<(u64, u64, u64)>,
    pub last_frame: Option<Instant>,
}

impl Watched {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.distinct)
    }

    pub fn merge(&mut self, o: &Watched) {
        self.frames += o.frames;
        self.distinct += o.distinct;
        self.expected += o.expected;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.resent += o.resent;
        self.reconnects += o.reconnects;
        self.latency.merge(&o.latency);
        if self.by_second.len() < o.by_second.len() {
            self.by_second.resize(o.by_second.len(), (0, 0, 0));
        }
        for (a, b) in self.by_second.iter_mut().zip(&o.by_second) {
            *a = (a.0 + b.0, a.1 + b.1, a.2.max(b.2));
        }
        self.last_frame = self.last_frame.max(o.last_frame);
    }
}

/// Only what the watcher needs of a frame; `content` and the rest are skipped unparsed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: Option<i64>,
    at: Option<DateTime<Utc>>,
}

struct Seen {
    seen: Vec<bool>,
    /// Every seq below it has been seen.
    prefix: u64,
    max: Option<u64>,
    /// The highest seq seen when the socket last reconnected.
    resumed_at: Option<u64>,
}

/// Follows attempt `idx` on `socket` until the posters are `done` and every message they posted
/// for it has come (or none came for `TAIL_TIMEOUT`).
pub async fn watch(
    shared: Arc<Shared>,
    idx: usize,
    attempt: Attempt,
    mut socket: Socket,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Watched> {
    let mut w = Watched::default();
    let mut s = Seen {
        seen: Vec::with_capacity(16 * 1024),
        prefix: 0,
        max: None,
        resumed_at: None,
    };
    let mut posting_done = false;
    loop {
        if posting_done && w.distinct >= shared.posted[idx].load(Ordering::Acquire) {
            break;
        }
        let msg = if posting_done {
            match tokio::time::timeout(TAIL_TIMEOUT, socket.next()).await {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                m = socket.next() => m,
                _ = done.changed() => {
                    posting_done = true;
                    continue;
                }
            }
        };
        let arrived = Utc::now();
        match msg {
            Some(Ok(Message::Text(text))) => {
                let head: Head = serde_json::from_str(text.as_str())
                    .with_context(|| format!("unexpected frame {}", text.as_str()))?;
                if head.kind != "message" {
                    bail!(
                        "task {}: unexpected {:?} frame while it runs",
                        attempt.task_id,
                        head.kind
                    );
                }
                let (Some(seq), Some(at)) = (head.seq, head.at) else {
                    bail!("message frame without seq or at: {}", text.as_str());
                };
                w.last_frame = Some(Instant::now());
                record(&mut w, &mut s, u64::try_from(seq)?);
                if at >= shared.window.0 && at < shared.window.1 {
                    let lag = arrived - at;
                    w.latency.record_chrono(lag);
                    let us = lag.num_microseconds().unwrap_or(0).max(0) as u64;
                    let sec = (at - shared.window.0).num_seconds() as usize;
                    if sec >= w.by_second.len() {
                        w.by_second.resize(sec + 1, (0, 0, 0));
                    }
                    let b = &mut w.by_second[sec];
                    *b = (b.0 + 1, b.1 + us, b.2.max(us));
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                w.reconnects += 1;
                if w.reconnects > MAX_RECONNECTS {
                    bail!(
                        "the transcript socket of task {} closed {} times",
                        attempt.task_id,
                        w.reconnects
                    );
                }
                s.resumed_at = s.max;
                let after = s.prefix.checked_sub(1);
                socket = connect(shared.addr, &shared.token, &attempt, after).await?;
            }
            Some(Ok(_)) => {}
        }
    }
    w.expected = shared.posted[idx].load(Ordering::Acquire);
    let _ = socket.close(None).await;
    Ok(w)
}

fn record(w: &mut Watched, s: &mut Seen, seq: u64) {
    w.frames += 1;
    let i = seq as usize;
    if i >= s.seen.len() {
        s.seen.resize((i + 1).max(s.seen.len() * 2), false);
    }
    if s.seen[i] {
        if s.resumed_at.is_some_and(|r| seq <= r) {
            w.resent += 1;
        } else {
            w.duplicates += 1;
        }
        return;
    }
    s.seen[i] = true;
    w.distinct += 1;
    if s.max.is_some_and(|m| seq < m) {
        w.out_of_order += 1;
    }
    s.max = s.max.max(Some(seq));
    while s.seen.get(s.prefix as usize).copied().unwrap_or(false) {
        s.prefix += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            seen: Vec::new(),
            prefix: 0,
            max: None,
            resumed_at: None,
        }
    }

    #[test]
    fn counts_duplicates_gaps_and_order() {
        let (mut w, mut s) = (Watched::default(), seen());
        for seq in [0, 1, 2, 2, 5, 4] {
            record(&mut w, &mut s, seq);
        }
        w.expected = 6;
        assert_eq!((w.frames, w.distinct, w.duplicates), (6, 5, 1));
        assert_eq!((w.out_of_order, w.lost(), s.prefix), (1, 1, 3));
        // A replay after a reconnect resends what lies past the cursor: not duplicates.
        s.resumed_at = s.max;
        for seq in [3, 4, 5, 6] {
            record(&mut w, &mut s, seq);
        }
        assert_eq!((w.duplicates, w.resent, w.distinct, s.prefix), (1, 2, 7, 7));
    }
}
