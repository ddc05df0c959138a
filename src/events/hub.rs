//! The in-process side of event fan-out.
//!
//! * `committed` is called by the writer right after its transaction commits: the waker reacts at
//!   once (local long polls), the feed reader is nudged, and the notifier is told the newest id so it
//!   can wake the other replicas.
//! * The feed reader (`feed.rs`) reads the log in order below the commit horizon and `deliver`s each
//!   event once per replica to the WebSocket sessions (and to the waker, for events written by other
//!   replicas).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{Notify, broadcast, watch};

use super::Waker;
use crate::db::events::Event;

/// Events a slow WebSocket session may fall behind before it is dropped.
pub const SESSION_BACKLOG: usize = 4096;

pub struct Hub {
    pub waker: Arc<Waker>,
    sessions: broadcast::Sender<Arc<Event>>,
    /// Nudges the feed reader (local commits, notifications from other replicas).
    pub feed_nudge: Notify,
    /// Highest event id known to be committed somewhere (local commits and notifications).
    pub known_max_id: AtomicI64,
    /// Newest id committed by this replica, for the notifier.
    pub committed_id: watch::Sender<i64>,
    /// Tokens revoked (on any replica): open WebSocket sessions of these tokens close at once.
    pub revoked: broadcast::Sender<uuid::Uuid>,
    /// Authenticated tokens, evicted on revocation (see `auth::TokenCache`).
    pub tokens: crate::auth::TokenCache,
    /// Live transcripts: the tasks this replica's sockets watch (see `crate::transcripts`).
    pub transcripts: crate::transcripts::TranscriptHub,
}

impl Default for Hub {
    fn default() -> Self {
        let (sessions, _) = broadcast::channel(SESSION_BACKLOG);
        let (committed_id, _) = watch::channel(0);
        let (revoked, _) = broadcast::channel(256);
        Self {
            waker: Arc::default(),
            sessions,
            feed_nudge: Notify::new(),
            known_max_id: AtomicI64::new(0),
            committed_id,
            revoked,
            tokens: Default::default(),
            transcripts: Default::default(),
        }
    }
}

impl Hub {
    /// A transaction that wrote these events has committed.
    pub fn committed(&self, events: Vec<Event>) {
        let Some(max) = events.iter().map(|e| e.id()).max() else {
            return;
        };
        self.waker.on_events(&events);
        self.known(max);
        self.committed_id.send_if_modified(|cur| {
            let newer = max > *cur;
            if newer {
                *cur = max;
            }
            newer
        });
    }

    /// Some replica committed events up to `id`.
    pub fn known(&self, id: i64) {
        self.known_max_id.fetch_max(id, Ordering::AcqRel);
        self.feed_nudge.notify_one();
    }

    /// The feed reader hands over one event, in log order.
    pub fn deliver(&self, e: Event) {
        self.waker.on_event(&e);
        let _ = self.sessions.send(Arc::new(e));
    }

    /// A token was revoked (here or on another replica).
    pub fn revoke(&self, token: uuid::Uuid) {
        self.tokens.evict(token);
        let _ = self.revoked.send(token);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sessions.subscribe()
    }
}
