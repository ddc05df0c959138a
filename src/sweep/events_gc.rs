//! Sweep 5: events older than `event_retention` are deleted in batches (at most a few per tick, so a
//! large backlog drains over several ticks without one long statement).

use crate::db;
use crate::error::ApiResult;
use crate::state::AppState;

const BATCH: i64 = 5000;
const BATCHES_PER_TICK: usize = 10;

pub async fn run(state: &AppState) -> ApiResult<usize> {
    let mut total = 0;
    let mut conn = state.pool.acquire().await?;
    for _ in 0..BATCHES_PER_TICK {
        let n = db::sweeps::delete_old_events(&mut conn, state.settings.event_retention, BATCH)
            .await? as usize;
        total += n;
        if n < BATCH as usize {
            break;
        }
    }
    Ok(total)
}
