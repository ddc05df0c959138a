//! Sweep 2: tasks dispatched longer than `dispatch_timeout` fail with `dispatch_timeout`, tasks
//! running longer than `running_timeout` fail with `running_timeout` — retried like any failure.

use crate::db;
use crate::db::tasks::Task;
use crate::domain::task::FailureReason;
use crate::error::ApiResult;
use crate::service;
use crate::state::AppState;

pub async fn run_dispatched(state: &AppState) -> ApiResult<usize> {
    let timeout = state.settings.dispatch_timeout;
    let mut tx = state.pool.begin().await?;
    let tasks = db::sweeps::stale_dispatched(&mut tx, timeout, super::SWEEP_BATCH).await?;
    fail_all(state, tx, tasks, FailureReason::DispatchTimeout).await
}

pub async fn run_running(state: &AppState) -> ApiResult<usize> {
    let timeout = state.settings.running_timeout;
    let mut tx = state.pool.begin().await?;
    let tasks = db::sweeps::stale_running(&mut tx, timeout, super::SWEEP_BATCH).await?;
    fail_all(state, tx, tasks, FailureReason::RunningTimeout).await
}

async fn fail_all(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tasks: Vec<Task>,
    reason: FailureReason,
) -> ApiResult<usize> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let mut ch = service::Changes::default();
    for task in &tasks {
        service::tasks::fail_active(&mut tx, state.backoff(), task, reason, None, true, &mut ch)
            .await?;
    }
    service::commit(state, tx, ch).await?;
    Ok(tasks.len())
}
