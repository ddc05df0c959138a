//! Circuit breakers around the two stores, so an outage answers at once instead of after each
//! call's timeout.
//!
//! - **PostgreSQL** (`App::db_health`): opened when `/readyz` finds the database unreachable, or
//!   when a request (or the event listener) loses its connection and a fresh one fails too (one
//!   terminated backend is not an outage). While it is open, API routes that need the database answer `503 unavailable`
//!   at once (`http::gate`), and a prober dials the database every `PROBE_EVERY`; the first
//!   answer closes it.
//! - **Redis** (`live::Liveness`): tripped by a failed liveness call. While it is open, calls fail at
//!   once (heartbeats fall back to Postgres, as they do on any liveness error) and a prober pings
//!   Redis every `PROBE_EVERY`; the first answer closes it. No request is a trial: none waits on a
//!   store that is down.
//!
//! The closed state is one atomic load, so the hot paths pay nothing while the stores are up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often an open breaker's prober tries the store.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Breaker {
    /// `store` label of the `paddock_breaker_open` gauge.
    store: &'static str,
    open: AtomicBool,
    /// Woken when the breaker opens (the prober waits on it).
    opened: tokio::sync::Notify,
    /// Woken when a caller suspects the store is down: the prober checks at once.
    suspected: tokio::sync::Notify,
}

impl Breaker {
    pub fn new(store: &'static str) -> Self {
        metrics::gauge!("paddock_breaker_open", "store" => store).set(0.0);
        Breaker {
            store,
            open: AtomicBool::new(false),
            opened: tokio::sync::Notify::new(),
            suspected: tokio::sync::Notify::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The store failed to answer: open (once; later failures keep it open).
    pub fn trip(&self) {
        if !self.open.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                store = self.store,
                "circuit open: failing fast until the store answers"
            );
            metrics::gauge!("paddock_breaker_open", "store" => self.store).set(1.0);
            self.opened.notify_waiters();
        }
    }

    /// A call failed in a way one connection can (a terminated backend) as well as an outage:
    /// the prober checks the store at once and opens the breaker only if it does not answer.
    pub fn suspect(&self) {
        if !self.is_open() {
            self.suspected.notify_one();
        }
    }

    /// The store answered: close.
    pub fn reset(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!(
                store = self.store,
                "circuit closed: the store answers again"
            );
            metrics::gauge!("paddock_breaker_open", "store" => self.store).set(0.0);
        }
    }

    /// Records a call's outcome.
    pub fn record<T, E>(&self, r: &Result<T, E>) {
        match r {
            Ok(_) => self.reset(),
            Err(_) => self.trip(),
        }
    }

    /// Resolves once the breaker is open.
    pub async fn until_open(&self) {
        loop {
            let opened = self.opened.notified();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }
}

/// Checks the store with `check` when a caller suspects it is down (opening the breaker if it does
/// not answer), and every `PROBE_EVERY` while the breaker is open (closing it on the first answer).
/// Runs until `shutdown`.
pub async fn probe<F, Fut>(
    breaker: std::sync::Arc<Breaker>,
    shutdown: tokio_util::sync::CancellationToken,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let answers =
        || async { matches!(tokio::time::timeout(PROBE_TIMEOUT, check()).await, Ok(true)) };
    loop {
        tokio::select! {
            () = breaker.until_open() => {}
            () = breaker.suspected.notified() => {
                if answers().await {
                    continue;
                }
                breaker.trip();
            }
            () = shutdown.cancelled() => return,
        }
        while breaker.is_open() {
            if answers().await {
                breaker.reset();
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Whether a fresh connection to PostgreSQL answers `SELECT 1`.
pub async fn postgres_answers(opts: &sqlx::postgres::PgConnectOptions) -> bool {
    use sqlx::Connection;
    let dial = async {
        let mut conn = sqlx::PgConnection::connect_with(opts).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    dial.await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_probed_until_the_store_answers() {
        let b = std::sync::Arc::new(Breaker::new("test"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let prober = tokio::spawn(probe(b.clone(), shutdown.clone(), {
            let probes = probes.clone();
            move || {
                let n = probes.fetch_add(1, Ordering::AcqRel);
                async move { n >= 2 }
            }
        }));
        b.record(&Ok::<(), ()>(()));
        assert!(!b.is_open());
        b.record(&Err::<(), ()>(()));
        assert!(b.is_open(), "a failure opens it");
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert!(!b.is_open(), "the third probe answered");
        assert_eq!(probes.load(Ordering::Acquire), 3);
        tokio::time::sleep(PROBE_EVERY * 3).await;
        assert_eq!(probes.load(Ordering::Acquire), 3, "no probe while closed");
        // A suspicion opens it only if the check fails: the next probe answers, so it stays closed.
        b.suspect();
        tokio::time::sleep(PROBE_EVERY).await;
        assert!(
            !b.is_open(),
            "a suspicion the store disproves leaves it closed"
        );
        assert_eq!(probes.load(Ordering::Acquire), 4);
        shutdown.cancel();
        prober.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspicion_the_store_confirms_opens_the_breaker() {
        let b = std::sync::Arc::new(Breaker::new("test"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let prober = tokio::spawn(probe(b.clone(), shutdown.clone(), || async { false }));
        tokio::task::yield_now().await;
        b.suspect();
        tokio::time::sleep(PROBE_EVERY / 2).await;
        assert!(b.is_open(), "the store did not answer the check");
        shutdown.cancel();
        prober.await.unwrap();
    }
}
