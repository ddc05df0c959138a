//! The heartbeat flusher: every `heartbeat_flush_interval`, and once more at shutdown, writes
//! `runtimes.last_seen_at` for every runtime heard since the last flush, in one statement
//! (`service::runtimes::flush_heard`).

use tokio_util::sync::CancellationToken;

use crate::service;
use crate::state::AppState;

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.settings.heartbeat_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        match service::runtimes::flush_heard(&state).await {
            Ok(n) => tracing::debug!(rows = n, "flushed heartbeats"),
            Err(e) => tracing::warn!(error = %e, "heartbeat flush failed; will retry"),
        }
    }
    match service::runtimes::flush_heard(&state).await {
        Ok(n) => tracing::info!(rows = n, "final heartbeat flush"),
        Err(e) => tracing::warn!(error = %e, "final heartbeat flush failed"),
    }
}
