//! After a transaction commits, its events are published here: the waker reacts and subscribers
//! (WebSocket sessions) receive them.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Waker;
use crate::db::events::Event;

pub struct Hub {
    pub waker: Arc<Waker>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Hub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            waker: Arc::default(),
            tx,
        }
    }
}

impl Hub {
    /// Publishes events that have committed.
    pub fn publish(&self, events: Vec<crate::db::events::Event>) {
        for e in events {
            self.waker.on_event(&e);
            let _ = self.tx.send(Arc::new(e));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
