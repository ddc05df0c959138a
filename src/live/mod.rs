//! The liveness store: absorbs heartbeats so that the hot path touches no Postgres row.
//!
//! One key per runtime with a TTL of `stale_threshold` (Redis, or the in-process map for a single
//! replica). A key that exists means "heard within the threshold and not taken offline since"; the
//! stale sweep and the offline path `forget` keys. The store also carries a per-runtime flag "a
//! cancellation is waiting", so that a heartbeat only asks Postgres for cancellations when there are
//! some. Every runtime heard is remembered locally for the flusher, which writes `last_seen_at`.

pub mod flusher;
pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{RuntimeId, WorkspaceId};

/// What a heartbeat learned about one runtime from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// The key existed: the runtime was alive (and online) before this heartbeat.
    pub was_alive: bool,
    /// A cancellation is waiting for this runtime's daemon.
    pub cancel_waiting: bool,
}

pub enum Backend {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// The store plus the local record of runtimes heard since the last flush.
pub struct Liveness {
    backend: Backend,
    ttl: Duration,
    /// Keyed by workspace too: a heartbeat naming another workspace's runtime must not touch it.
    heard: Mutex<HashMap<(WorkspaceId, RuntimeId), DateTime<Utc>>>,
}

impl Liveness {
    pub fn new(backend: Backend, ttl: Duration) -> Self {
        Self {
            backend,
            ttl,
            heard: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Records heartbeats. On a store error the caller falls back to Postgres.
    pub async fn touch(&self, ws: WorkspaceId, ids: &[RuntimeId]) -> anyhow::Result<Vec<Touched>> {
        let now = Utc::now();
        {
            let mut heard = self.heard.lock().expect("heard lock");
            for id in ids {
                heard.insert((ws, *id), now);
            }
        }
        match &self.backend {
            Backend::Memory(m) => Ok(m.touch(ws, ids, self.ttl)),
            Backend::Redis(r) => r.touch(ws, ids, self.ttl).await,
        }
    }

    /// Whether each runtime was heard within the TTL.
    pub async fn alive(&self, ids: &[(WorkspaceId, RuntimeId)]) -> anyhow::Result<Vec<bool>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.alive(ids)),
            Backend::Redis(r) => r.alive(ids).await,
        }
    }

    /// Drops liveness keys (runtime offline, deregistered, or unknown to the workspace).
    pub async fn forget(&self, ids: &[(WorkspaceId, RuntimeId)]) -> anyhow::Result<()> {
        {
            let mut heard = self.heard.lock().expect("heard lock");
            for key in ids {
                heard.remove(key);
            }
        }
        match &self.backend {
            Backend::Memory(m) => {
                m.forget(ids);
                Ok(())
            }
            Backend::Redis(r) => r.forget(ids).await,
        }
    }

    /// Marks that a cancellation waits for this runtime's daemon.
    pub async fn flag_cancel(&self, ws: WorkspaceId, id: RuntimeId) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Memory(m) => {
                m.flag_cancel(ws, id);
                Ok(())
            }
            Backend::Redis(r) => r.flag_cancel(ws, id).await,
        }
    }

    /// Takes the runtimes heard since the last call (for the flusher).
    pub fn take_heard(&self) -> HashMap<(WorkspaceId, RuntimeId), DateTime<Utc>> {
        std::mem::take(&mut *self.heard.lock().expect("heard lock"))
    }

    /// Puts back runtimes whose flush failed, keeping the newer time where both exist.
    pub fn restore_heard(&self, batch: HashMap<(WorkspaceId, RuntimeId), DateTime<Utc>>) {
        let mut heard = self.heard.lock().expect("heard lock");
        for (id, at) in batch {
            heard
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await,
        }
    }
}
