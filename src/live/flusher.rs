//! Writes `runtimes.last_seen_at` for every runtime heard since the last flush, in one statement,
//! every `heartbeat_flush_interval`, and once more at shutdown.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Liveness;
use crate::db;

pub async fn flush_once(pool: &PgPool, live: &Liveness) -> anyhow::Result<u64> {
    let batch = live.take_heard();
    if batch.is_empty() {
        return Ok(0);
    }
    let mut ws = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    let mut seen = Vec::with_capacity(batch.len());
    for (&(w, id), &at) in &batch {
        ws.push(w);
        ids.push(id);
        seen.push(at);
    }
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => {
            live.restore_heard(batch);
            return Err(e.into());
        }
    };
    match db::runtimes::flush_last_seen(&mut conn, &ws, &ids, &seen).await {
        Ok(n) => Ok(n),
        Err(e) => {
            live.restore_heard(batch);
            Err(e.into())
        }
    }
}

pub async fn run(pool: PgPool, live: Arc<Liveness>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        match flush_once(&pool, &live).await {
            Ok(n) => tracing::debug!(rows = n, "flushed heartbeats"),
            Err(e) => tracing::warn!(error = %e, "heartbeat flush failed; will retry"),
        }
    }
    match flush_once(&pool, &live).await {
        Ok(n) => tracing::info!(rows = n, "final heartbeat flush"),
        Err(e) => tracing::warn!(error = %e, "final heartbeat flush failed"),
    }
}
