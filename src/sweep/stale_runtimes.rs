//! Sweep 1: online runtimes not seen for `stale_threshold` — minus those the liveness store says are
//! alive (if the store is down, the database is trusted) — go offline; their dispatched/running tasks
//! fail with `runtime_offline` (retried when attempts are left); their agents go offline.

use crate::db;
use crate::error::ApiResult;
use crate::ids::{RuntimeId, WorkspaceId};
use crate::service;
use crate::state::AppState;

pub async fn run(state: &AppState) -> ApiResult<usize> {
    let threshold = state.settings.stale_threshold;
    let candidates = {
        let mut conn = state.pool.acquire().await?;
        db::sweeps::stale_runtime_candidates(&mut conn, threshold, super::SWEEP_BATCH).await?
    };
    if candidates.is_empty() {
        return Ok(0);
    }
    let keys: Vec<(WorkspaceId, RuntimeId)> =
        candidates.iter().map(|c| (c.workspace_id, c.id)).collect();
    // Heartbeats land in the store; last_seen_at lags by up to one flush interval.
    let stale: Vec<RuntimeId> = match state.live.alive(&keys).await {
        Ok(alive) => candidates
            .iter()
            .zip(alive)
            .filter(|(_, a)| !a)
            .map(|(c, _)| c.id)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "liveness store unavailable: the stale sweep trusts the database");
            metrics::counter!("paddock_liveness_errors_total", "op" => "alive").increment(1);
            metrics::counter!("paddock_liveness_fallbacks_total", "op" => "stale_sweep")
                .increment(1);
            candidates.iter().map(|c| c.id).collect()
        }
    };
    if stale.is_empty() {
        return Ok(0);
    }
    let mut tx = state.pool.begin().await?;
    let changed = db::sweeps::mark_stale_offline(&mut tx, &stale, threshold).await?;
    let mut ch = service::Changes::default();
    service::runtimes::after_offline(&mut tx, state, &changed, &mut ch).await?;
    service::runtimes::forget(state, &changed).await;
    service::commit(state, tx, ch).await?;
    Ok(changed.len())
}
