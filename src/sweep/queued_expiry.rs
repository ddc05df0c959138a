//! Sweep 3: queued backlog older than `queued_ttl` fails with `queued_expired` (never retried), at
//! most `queued_expire_batch` rows per tick, oldest first, in one short statement.

use crate::db;
use crate::error::ApiResult;
use crate::events;
use crate::service;
use crate::state::AppState;

pub async fn run(state: &AppState) -> ApiResult<usize> {
    let mut tx = state.pool.begin().await?;
    let expired = db::sweeps::expire_queued(
        &mut tx,
        state.settings.queued_ttl,
        state.settings.queued_expire_batch,
    )
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let evs: Vec<_> = expired
        .iter()
        .map(|t| events::task("task.failed", t))
        .collect();
    service::commit(state, tx, evs).await?;
    Ok(expired.len())
}
