//! Sweep 4: runtimes offline longer than `offline_runtime_ttl`, with no live agent and no open task,
//! are deleted (their archived agents first).

use serde_json::json;

use crate::db;
use crate::error::ApiResult;
use crate::events;
use crate::service;
use crate::state::AppState;

pub async fn run(state: &AppState) -> ApiResult<usize> {
    let mut tx = state.pool.begin().await?;
    let gone = db::sweeps::collect_runtimes(
        &mut tx,
        state.settings.offline_runtime_ttl,
        super::SWEEP_BATCH,
    )
    .await?;
    if gone.is_empty() {
        return Ok(0);
    }
    let evs: Vec<_> = gone
        .iter()
        .map(|r| events::runtime("runtime.deleted", r.workspace_id, r.id, json!({})))
        .collect();
    service::commit(state, tx, evs).await?;
    Ok(gone.len())
}
