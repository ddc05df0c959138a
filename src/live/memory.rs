//! In-process liveness store: valid for a single replica only (logged at start).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Listing, Touched, Value};
use crate::ids::{RuntimeId, WorkspaceId};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<HashMap<(WorkspaceId, RuntimeId), Entry>>,
}

struct Entry {
    expires: Instant,
    value: Value,
}

impl MemoryStore {
    pub fn touch(
        &self,
        ws: WorkspaceId,
        ids: &[RuntimeId],
        ttl: Duration,
        listing: Option<&Listing>,
    ) -> Vec<Touched> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("liveness lock");
        ids.iter()
            .map(|&id| {
                let value = Value {
                    listing: listing.cloned(),
                    ..Value::default()
                };
                let entry = Entry {
                    expires: now + ttl,
                    value,
                };
                let old = inner.insert((ws, id), entry).filter(|e| e.expires > now);
                Value::touched(old.as_ref().map(|e| &e.value), listing)
            })
            .collect()
    }

    pub fn alive(&self, ids: &[(WorkspaceId, RuntimeId)]) -> Vec<bool> {
        let now = Instant::now();
        let inner = self.inner.lock().expect("liveness lock");
        ids.iter()
            .map(|key| inner.get(key).is_some_and(|e| e.expires > now))
            .collect()
    }

    pub fn listings(&self, ids: &[(WorkspaceId, RuntimeId)]) -> Vec<Option<Listing>> {
        let now = Instant::now();
        let inner = self.inner.lock().expect("liveness lock");
        ids.iter()
            .map(|key| {
                inner
                    .get(key)
                    .filter(|e| e.expires > now)
                    .and_then(|e| e.value.listing.clone())
            })
            .collect()
    }

    pub fn forget(&self, ids: &[(WorkspaceId, RuntimeId)]) {
        let mut inner = self.inner.lock().expect("liveness lock");
        for key in ids {
            inner.remove(key);
        }
    }

    pub fn flag_cancel(&self, ws: WorkspaceId, id: RuntimeId) {
        if let Some(e) = self.inner.lock().expect("liveness lock").get_mut(&(ws, id)) {
            e.value.cancel = true;
        }
    }

    /// Replaces the values of keys that exist (keeping their expiry).
    pub fn set_existing(&self, ws: WorkspaceId, ids: &[RuntimeId], value: &Value) {
        let mut inner = self.inner.lock().expect("liveness lock");
        for &id in ids {
            if let Some(e) = inner.get_mut(&(ws, id)) {
                e.value = value.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AttemptId;

    #[test]
    fn touch_reports_previous_liveness_and_takes_cancel_flags() {
        let s = MemoryStore::default();
        let (ws, rt) = (WorkspaceId::new(), RuntimeId::new());
        let ttl = Duration::from_secs(60);
        assert_eq!(s.touch(ws, &[rt], ttl, None), vec![Touched::default()]);
        s.flag_cancel(ws, rt);
        let t = s.touch(ws, &[rt], ttl, None);
        assert!(t[0].was_alive && t[0].cancel_waiting);
        assert!(!s.touch(ws, &[rt], ttl, None)[0].cancel_waiting);
        assert_eq!(
            s.alive(&[(ws, rt), (WorkspaceId::new(), rt)]),
            vec![true, false]
        );
        s.forget(&[(ws, rt)]);
        assert_eq!(s.alive(&[(ws, rt)]), vec![false]);
    }

    #[test]
    fn listings_are_kept_and_a_change_is_noticed() {
        let s = MemoryStore::default();
        let (ws, rt) = (WorkspaceId::new(), RuntimeId::new());
        let ttl = Duration::from_secs(60);
        let a = Listing::new(chrono::Utc::now(), &[AttemptId::new()]);
        assert!(s.touch(ws, &[rt], ttl, Some(&a))[0].listing_changed);
        assert!(!s.touch(ws, &[rt], ttl, Some(&a))[0].listing_changed);
        assert_eq!(s.listings(&[(ws, rt)]), vec![Some(a.clone())]);
        s.set_existing(
            ws,
            &[rt],
            &Value {
                recheck: true,
                listing: Some(a.clone()),
                ..Value::default()
            },
        );
        assert!(s.touch(ws, &[rt], ttl, Some(&a))[0].recheck);
    }
}
