//! Live transcripts: the per-replica hub that hands each new message to the sockets watching its
//! task, and the feed that reads new messages from Postgres (`feed.rs`).
//!
//! A message is delivered through the feed only — also on the replica that stored it — so there is
//! one order (commit-horizon order, as for events) and one path to test. A session subscribes
//! before it replays the stored transcript and drops a live frame it has sent already, so there is
//! neither a gap nor a duplicate at the seam. Each frame is serialised once, by the feed, and shared
//! by every socket of its task. A socket whose queue is full is dropped (it reconnects with its
//! cursor), so a slow reader cannot grow the server's memory.

pub mod feed;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, watch};

use crate::ids::TaskId;

/// Frames a socket may have queued before it is dropped as too slow (the frames are shared, so a
/// full queue costs a pointer each).
pub const SOCKET_QUEUE: usize = 4096;

/// A message frame as sockets send it: the JSON text, serialised once, and its key.
#[derive(Debug)]
pub struct Frame {
    /// The transaction that stored it: frames come in this order.
    pub xact: u64,
    pub attempt: i32,
    pub seq: i64,
    /// Cheap to clone: every socket of the task sends the same bytes.
    pub text: axum::extract::ws::Utf8Bytes,
}

struct Watcher {
    id: u64,
    tx: mpsc::Sender<Arc<Frame>>,
}

/// The watched tasks of this replica and the feed's progress.
pub struct TranscriptHub {
    watchers: Mutex<HashMap<TaskId, Vec<Watcher>>>,
    next_id: AtomicU64,
    /// Bumped by every subscription: the feed does not skip ahead while one is being set up.
    version: AtomicU64,
    /// Wakes the feed (a local post committed, another replica notified, a session waits).
    pub nudge: Notify,
    /// Every message of a transaction below this id, of a watched task, has been handed out.
    delivered: watch::Sender<u64>,
    /// Newest local post, for the cross-replica notifier.
    pub committed: watch::Sender<u64>,
}

impl Default for TranscriptHub {
    fn default() -> Self {
        Self {
            watchers: Mutex::default(),
            next_id: AtomicU64::new(1),
            version: AtomicU64::new(0),
            nudge: Notify::new(),
            delivered: watch::channel(0).0,
            committed: watch::channel(0).0,
        }
    }
}

/// A socket's subscription to a task's new messages; unsubscribes when dropped.
pub struct Subscription<'a> {
    hub: &'a TranscriptHub,
    task: TaskId,
    id: u64,
    pub rx: mpsc::Receiver<Arc<Frame>>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.hub.remove(self.task, self.id);
    }
}

impl TranscriptHub {
    pub fn subscribe(&self, task: TaskId) -> Subscription<'_> {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::AcqRel);
        self.watchers
            .lock()
            .expect("transcript hub lock")
            .entry(task)
            .or_default()
            .push(Watcher { id, tx });
        Subscription {
            hub: self,
            task,
            id,
            rx,
        }
    }

    fn remove(&self, task: TaskId, id: u64) {
        let mut w = self.watchers.lock().expect("transcript hub lock");
        if let Some(list) = w.get_mut(&task) {
            list.retain(|x| x.id != id);
            if list.is_empty() {
                w.remove(&task);
            }
        }
    }

    /// The watched tasks, and the subscription version they were read at.
    pub fn watched(&self) -> (Vec<TaskId>, u64) {
        let version = self.version.load(Ordering::Acquire);
        let tasks = self
            .watchers
            .lock()
            .expect("transcript hub lock")
            .keys()
            .copied()
            .collect();
        (tasks, version)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Hands a frame to every socket watching `task`; drops those whose queue is full.
    pub fn deliver(&self, task: TaskId, frame: Arc<Frame>) {
        let mut w = self.watchers.lock().expect("transcript hub lock");
        if let Some(list) = w.get_mut(&task) {
            list.retain(|x| match x.tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("paddock_websocket_dropped_total", "reason" => "transcript_lagged")
                        .increment(1);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    /// Everything of transactions below `xact` has been handed out.
    pub fn advance(&self, xact: u64) {
        self.delivered.send_if_modified(|cur| {
            let newer = xact > *cur;
            if newer {
                *cur = xact;
            }
            newer
        });
    }

    /// Waits until everything of transactions below `xact` has been handed out.
    pub async fn delivered_past(&self, xact: u64) {
        let mut rx = self.delivered.subscribe();
        loop {
            if *rx.borrow_and_update() >= xact {
                return;
            }
            self.nudge.notify_one();
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A post committed on this replica.
    pub fn posted(&self) {
        self.committed.send_modify(|n| *n += 1);
        self.nudge.notify_one();
    }
}
