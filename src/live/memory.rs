//! In-process liveness store: valid for a single replica only (logged at start).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Touched;
use crate::ids::{RuntimeId, WorkspaceId};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    expires: HashMap<(WorkspaceId, RuntimeId), Instant>,
    cancels: HashSet<(WorkspaceId, RuntimeId)>,
}

impl MemoryStore {
    pub fn touch(&self, ws: WorkspaceId, ids: &[RuntimeId], ttl: Duration) -> Vec<Touched> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("liveness lock");
        ids.iter()
            .map(|&id| {
                let key = (ws, id);
                let was_alive = inner
                    .expires
                    .insert(key, now + ttl)
                    .is_some_and(|exp| exp > now);
                let cancel_waiting = inner.cancels.remove(&key);
                Touched {
                    was_alive,
                    cancel_waiting,
                }
            })
            .collect()
    }

    pub fn alive(&self, ids: &[(WorkspaceId, RuntimeId)]) -> Vec<bool> {
        let now = Instant::now();
        let inner = self.inner.lock().expect("liveness lock");
        ids.iter()
            .map(|key| inner.expires.get(key).is_some_and(|&exp| exp > now))
            .collect()
    }

    pub fn forget(&self, ids: &[(WorkspaceId, RuntimeId)]) {
        let mut inner = self.inner.lock().expect("liveness lock");
        for key in ids {
            inner.expires.remove(key);
            inner.cancels.remove(key);
        }
    }

    pub fn flag_cancel(&self, ws: WorkspaceId, id: RuntimeId) {
        self.inner
            .lock()
            .expect("liveness lock")
            .cancels
            .insert((ws, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_reports_previous_liveness_and_takes_cancel_flags() {
        let s = MemoryStore::default();
        let (ws, rt) = (WorkspaceId::new(), RuntimeId::new());
        let ttl = Duration::from_secs(60);
        assert_eq!(s.touch(ws, &[rt], ttl), vec![Touched::default()]);
        s.flag_cancel(ws, rt);
        assert_eq!(
            s.touch(ws, &[rt], ttl),
            vec![Touched {
                was_alive: true,
                cancel_waiting: true
            }]
        );
        assert!(!s.touch(ws, &[rt], ttl)[0].cancel_waiting);
        assert_eq!(
            s.alive(&[(ws, rt), (WorkspaceId::new(), rt)]),
            vec![true, false]
        );
        s.forget(&[(ws, rt)]);
        assert_eq!(s.alive(&[(ws, rt)]), vec![false]);
    }
}
