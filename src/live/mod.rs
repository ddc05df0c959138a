//! The liveness store: absorbs heartbeats so that the hot path touches no Postgres row.
//!
//! One key per runtime with a TTL of `stale_threshold` (Redis, or the in-process map for a single
//! replica). A key that exists means "heard within the threshold and not taken offline since"; the
//! stale sweep and the offline path `forget` keys. The key's value ([`Value`]) carries flags — "a
//! cancellation (or another server-side end of an attempt) is waiting", "the attempts listed last
//! time included revoked ones" — so that a heartbeat asks Postgres only when there is something to
//! tell, and, for a daemon that lists its attempts (DESIGN §10), its latest listing, which the
//! attempt-lost sweep compares with the active attempts. Every runtime heard is remembered locally
//! for the flusher, which writes `last_seen_at`.

pub mod flusher;
pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::breaker::Breaker;
use crate::ids::{AttemptId, RuntimeId, WorkspaceId};

/// What a heartbeat learned about one runtime from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// The key existed: the runtime was alive (and online) before this heartbeat.
    pub was_alive: bool,
    /// A cancellation is waiting for this runtime's daemon.
    pub cancel_waiting: bool,
    /// The attempts listed last time included revoked ones: check the listing again.
    pub recheck: bool,
    /// This heartbeat lists attempts, and not the ones the last did.
    pub listing_changed: bool,
}

/// A reconciling daemon's latest list of the attempts it holds, and when it sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub at: DateTime<Utc>,
    /// Sorted.
    pub attempts: Vec<AttemptId>,
}

impl Listing {
    pub fn new(at: DateTime<Utc>, attempts: &[AttemptId]) -> Self {
        let mut attempts = attempts.to_vec();
        attempts.sort();
        attempts.dedup();
        Self { at, attempts }
    }
}

/// What a runtime's live key holds. Stored as text: the flags (`1` for none, else any of `c`
/// cancellation waiting, `r` recheck), then, when the daemon lists attempts,
/// `|<unix ms>|<attempt id>,…`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Value {
    pub cancel: bool,
    pub recheck: bool,
    pub listing: Option<Listing>,
}

impl Value {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if self.cancel {
            out.push('c');
        }
        if self.recheck {
            out.push('r');
        }
        if out.is_empty() {
            out.push('1');
        }
        if let Some(l) = &self.listing {
            out.push('|');
            out.push_str(&l.at.timestamp_millis().to_string());
            out.push('|');
            let ids: Vec<String> = l.attempts.iter().map(|a| a.to_string()).collect();
            out.push_str(&ids.join(","));
        }
        out
    }

    /// A value read back; anything unreadable in it is dropped (a listing that does not parse
    /// counts as none, so no attempt is failed on its account).
    pub fn decode(s: &str) -> Self {
        let mut parts = s.splitn(3, '|');
        let flags = parts.next().unwrap_or("");
        let listing = match (parts.next(), parts.next()) {
            (Some(ms), Some(ids)) => ms
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .and_then(|at| {
                    let attempts: Option<Vec<AttemptId>> = ids
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| x.parse().ok())
                        .collect();
                    attempts.map(|a| Listing::new(at, &a))
                }),
            _ => None,
        };
        Self {
            cancel: flags.contains('c'),
            recheck: flags.contains('r'),
            listing,
        }
    }

    /// What a heartbeat that writes `listing` learns from the value it replaces (`None`: no key).
    pub fn touched(previous: Option<&Value>, listing: Option<&Listing>) -> Touched {
        let prev_attempts = previous
            .and_then(|v| v.listing.as_ref())
            .map(|l| &l.attempts);
        Touched {
            was_alive: previous.is_some(),
            cancel_waiting: previous.is_some_and(|v| v.cancel),
            recheck: previous.is_some_and(|v| v.recheck),
            listing_changed: listing.is_some_and(|l| Some(&l.attempts) != prev_attempts),
        }
    }
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
    /// Fails Redis calls fast while Redis is down (`crate::breaker`).
    pub breaker: Arc<Breaker>,
}

impl Liveness {
    pub fn new(backend: Backend, ttl: Duration) -> Self {
        Self {
            backend,
            ttl,
            heard: Mutex::new(HashMap::new()),
            breaker: Arc::new(Breaker::new("redis")),
        }
    }

    /// A Redis call through the breaker: refused at once while it is open, its outcome recorded.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        if self.breaker.is_open() {
            return Err(anyhow::anyhow!("redis circuit open (a recent call failed)"));
        }
        let res = call.await;
        self.breaker.record(&res);
        res
    }

    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Records heartbeats (and the daemon's listing of its attempts, if it sent one). On a store
    /// error the caller falls back to Postgres.
    pub async fn touch(
        &self,
        ws: WorkspaceId,
        ids: &[RuntimeId],
        listing: Option<&Listing>,
    ) -> anyhow::Result<Vec<Touched>> {
        let now = Utc::now();
        {
            let mut heard = self.heard.lock().expect("heard lock");
            for id in ids {
                heard.insert((ws, *id), now);
            }
        }
        match &self.backend {
            Backend::Memory(m) => Ok(m.touch(ws, ids, self.ttl, listing)),
            Backend::Redis(r) => self.guarded(r.touch(ws, ids, self.ttl, listing)).await,
        }
    }

    /// The latest listing of each runtime (`None`: not alive, or its daemon lists no attempts).
    pub async fn listings(
        &self,
        ids: &[(WorkspaceId, RuntimeId)],
    ) -> anyhow::Result<Vec<Option<Listing>>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.listings(ids)),
            Backend::Redis(r) => self.guarded(r.listings(ids)).await,
        }
    }

    /// Marks that the runtimes' daemon listed revoked attempts, so that its next heartbeat that
    /// lists them is answered with them again (`listing` is what that heartbeat wrote).
    pub async fn flag_recheck(
        &self,
        ws: WorkspaceId,
        ids: &[RuntimeId],
        listing: &Listing,
    ) -> anyhow::Result<()> {
        let value = Value {
            cancel: false,
            recheck: true,
            listing: Some(listing.clone()),
        };
        match &self.backend {
            Backend::Memory(m) => {
                m.set_existing(ws, ids, &value);
                Ok(())
            }
            Backend::Redis(r) => self.guarded(r.set_existing(ws, ids, &value)).await,
        }
    }

    /// Whether each runtime was heard within the TTL.
    pub async fn alive(&self, ids: &[(WorkspaceId, RuntimeId)]) -> anyhow::Result<Vec<bool>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.alive(ids)),
            Backend::Redis(r) => self.guarded(r.alive(ids)).await,
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
            Backend::Redis(r) => self.guarded(r.forget(ids)).await,
        }
    }

    /// Marks that a cancellation waits for this runtime's daemon.
    pub async fn flag_cancel(&self, ws: WorkspaceId, id: RuntimeId) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Memory(m) => {
                m.flag_cancel(ws, id);
                Ok(())
            }
            Backend::Redis(r) => self.guarded(r.flag_cancel(ws, id)).await,
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
            Backend::Redis(r) => {
                let res = r.ping().await;
                self.breaker.record(&res);
                res
            }
        }
    }
}
