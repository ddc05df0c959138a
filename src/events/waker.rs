//! Wakes long-poll claims of a runtime when something it could claim appears: a task enqueued or
//! requeued (at its `run_after`), or a slot freed by a task that ended. Fed by committed events —
//! from this replica's own writes, and (when several replicas run) from the cross-replica listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::db::events::Event;
use crate::ids::{RuntimeId, WorkspaceId};

/// Whose long polls an event wakes.
enum Wake {
    Now(RuntimeId),
    At(RuntimeId, DateTime<Utc>),
}

pub struct Waker {
    runtimes: Mutex<HashMap<RuntimeId, (WorkspaceId, Arc<Notify>)>>,
    timers: mpsc::UnboundedSender<(RuntimeId, Duration)>,
    timer_rx: Mutex<Option<mpsc::UnboundedReceiver<(RuntimeId, Duration)>>>,
}

impl Default for Waker {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            runtimes: Mutex::default(),
            timers: tx,
            timer_rx: Mutex::new(Some(rx)),
        }
    }
}

impl Waker {
    /// The notifier of a runtime. Create the `notified()` future and `enable()` it *before* looking
    /// for work, so a wake-up between the look and the wait is not lost.
    pub fn subscribe(&self, ws: WorkspaceId, id: RuntimeId) -> Arc<Notify> {
        self.runtimes
            .lock()
            .expect("waker lock")
            .entry(id)
            .or_insert_with(|| (ws, Arc::default()))
            .1
            .clone()
    }

    pub fn wake(&self, id: RuntimeId) {
        let notify = self
            .runtimes
            .lock()
            .expect("waker lock")
            .get(&id)
            .map(|(_, n)| n.clone());
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// Wakes the claims of every runtime of the workspace (a concurrency key's slot freed: its
    /// waiting tasks may belong to any runtime's agents).
    pub fn wake_workspace(&self, ws: WorkspaceId) {
        let notifies: Vec<Arc<Notify>> = self
            .runtimes
            .lock()
            .expect("waker lock")
            .values()
            .filter(|(w, _)| *w == ws)
            .map(|(_, n)| n.clone())
            .collect();
        for n in notifies {
            n.notify_waiters();
        }
    }

    /// Wakes the runtime's claims at `at` (a retry's `run_after`).
    pub fn wake_at(&self, id: RuntimeId, at: DateTime<Utc>) {
        match (at - Utc::now()).to_std() {
            Ok(delay) if !delay.is_zero() => {
                let _ = self.timers.send((id, delay));
            }
            _ => self.wake(id),
        }
    }

    /// Reacts to a committed event.
    pub fn on_event(&self, e: &Event) {
        self.on_events(std::slice::from_ref(e));
    }

    /// Reacts to the events of one commit: each runtime (and workspace) they concern is woken once
    /// (a batch of 1000 enqueued tasks wakes its runtime's claims once, not 1000 times).
    pub fn on_events(&self, events: &[Event]) {
        let mut now: Vec<RuntimeId> = Vec::new();
        let mut workspaces: Vec<WorkspaceId> = Vec::new();
        for e in events {
            let (wake, workspace) = Self::wake_of(e);
            match wake {
                Some(Wake::At(rt, at)) => self.wake_at(rt, at),
                Some(Wake::Now(rt)) => now.push(rt),
                None => {}
            }
            if workspace {
                workspaces.push(e.workspace_id);
            }
        }
        workspaces.sort_unstable();
        workspaces.dedup();
        for ws in workspaces {
            self.wake_workspace(ws);
        }
        now.sort_unstable();
        now.dedup();
        for rt in now {
            self.wake(rt);
        }
    }

    /// Whose claims an event may give claimable work to: a task enqueued or requeued (at its
    /// `run_after`), a slot freed by a task that ended (every runtime of the workspace when the
    /// task had a concurrency key, or belongs to a pool), an agent updated (resumed, or given more
    /// slots), a runtime undrained.
    /// Also says whether to wake the whole workspace.
    fn wake_of(e: &Event) -> (Option<Wake>, bool) {
        use paddock_api::EventType as T;
        let kind = e.kind();
        let relevant = match kind {
            T::AgentUpdated | T::RuntimeUndrained => true,
            k => k.is_task() && !matches!(k, T::TaskUpdated | T::TaskDispatched | T::TaskRunning),
        };
        if !relevant {
            return (None, false);
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            runtime_id: Option<RuntimeId>,
            run_after: Option<DateTime<Utc>>,
            concurrency_key: Option<String>,
        }
        let Ok(Fields {
            runtime_id,
            run_after,
            concurrency_key,
        }) = serde_json::from_str(e.body.payload.get())
        else {
            return (None, false);
        };
        // A key's slot freed, or work for a pool (no runtime of its own): any runtime of the
        // workspace may be the one to claim.
        let workspace =
            (concurrency_key.is_some() && kind != T::TaskQueued) || runtime_id.is_none();
        let wake = runtime_id.map(|rt| match run_after {
            Some(at) if kind == T::TaskRequeued => Wake::At(rt, at),
            _ => Wake::Now(rt),
        });
        (wake, workspace)
    }

    /// Runs the delayed wake-ups until shutdown.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut rx) = self.timer_rx.lock().expect("waker lock").take() else {
            return;
        };
        let mut queue: DelayQueue<RuntimeId> = DelayQueue::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((id, delay)) = rx.recv() => { queue.insert(id, delay); }
                Some(expired) = futures::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                    self.wake(expired.into_inner());
                }
            }
        }
    }
}
