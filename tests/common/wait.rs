//! Waiting on conditions (besides [`super::eventually`]): awaiting a value, and checking that a
//! condition keeps holding.

use std::time::{Duration, Instant};

use super::eventually;

/// Awaits `f` returning `Some`, polling as [`eventually`] does, up to `within`; returns what it
/// returned. Panics with `what` on time-out.
pub async fn eventually_some<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let slot = std::sync::Mutex::new(None);
    eventually(within, what, || {
        let fut = f();
        let slot = &slot;
        async move {
            let v = fut.await;
            let found = v.is_some();
            *slot.lock().unwrap() = v;
            found
        }
    })
    .await;
    slot.into_inner().unwrap().unwrap()
}

/// Checks `check` every 50 ms for `dur`; panics the first time it does not hold. Returns how many
/// times it was checked.
pub async fn holds_for<F, Fut>(dur: Duration, what: &str, check: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    holds_for_every(dur, Duration::from_millis(50), what, check).await
}

/// Checks `check` every `every` for `dur`; panics the first time it does not hold. Returns how
/// many times it was checked.
pub async fn holds_for_every<F, Fut>(
    dur: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < dur {
        assert!(
            check().await,
            "{what} stopped holding after {:?}",
            start.elapsed()
        );
        polls += 1;
        tokio::time::sleep(every).await;
    }
    polls
}
