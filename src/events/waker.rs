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
use crate::ids::RuntimeId;

pub struct Waker {
    runtimes: Mutex<HashMap<RuntimeId, Arc<Notify>>>,
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
    pub fn subscribe(&self, id: RuntimeId) -> Arc<Notify> {
        self.runtimes
            .lock()
            .expect("waker lock")
            .entry(id)
            .or_default()
            .clone()
    }

    pub fn wake(&self, id: RuntimeId) {
        let notify = self.runtimes.lock().expect("waker lock").get(&id).cloned();
        if let Some(n) = notify {
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

    /// Reacts to committed events.
    pub fn on_event(&self, e: &Event) {
        use paddock_api::EventType as T;
        let kind = e.kind();
        if !kind.is_task() || matches!(kind, T::TaskUpdated | T::TaskDispatched | T::TaskRunning) {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            runtime_id: Option<RuntimeId>,
            run_after: Option<DateTime<Utc>>,
        }
        let Ok(Fields {
            runtime_id: Some(rt),
            run_after,
        }) = serde_json::from_str(e.body.payload.get())
        else {
            return;
        };
        match (kind, run_after) {
            (T::TaskRequeued, Some(at)) => self.wake_at(rt, at),
            _ => self.wake(rt),
        }
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
