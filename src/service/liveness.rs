//! The attempt-liveness sweep (DESIGN §10): active attempts that a reconciling daemon has left out
//! of its listings for `attempt_lost_grace` fail with `attempt_lost`; active tasks of runtimes
//! offline for longer than `offline_grace` fail with `runtime_offline`; old revocations go.
//!
//! The heartbeat stays O(1) Postgres work: it only leaves the daemon's listing in the liveness
//! store. This sweep reads the active attempts (bounded by the active set, `tasks_active_runtime`),
//! the listings of their runtimes, and writes only where they disagree: `unlisted_since` when a
//! listing first leaves an attempt out (cleared when one lists it again), then the failure. An
//! attempt is judged only by a listing sent after it was dispatched, so a claim the daemon has not
//! listed yet is not counted against it; a runtime without a listing (a daemon that does not
//! reconcile, or the store is down) is not judged at all.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::tasks::{Failure, fail_active};
use super::{Changes, Result, commit};
use crate::db;
use crate::db::liveness::ActiveAttempt;
use crate::domain::task::FailureReason;
use crate::ids::{RuntimeId, TaskId, WorkspaceId};
use crate::live::Listing;
use crate::state::App;

/// Active attempts compared per tick.
const ACTIVE_BATCH: i64 = 10_000;
/// Tasks failed per tick by the offline grace.
const OFFLINE_BATCH: i64 = 500;
/// How long a revocation is kept: a daemon lists a revoked attempt for a heartbeat or two.
const REVOCATIONS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Sweep 8 (attempt liveness): returns the attempts failed.
pub async fn attempt_liveness(app: &App) -> Result<usize> {
    let mut n = lost_attempts(app).await?;
    n += offline_tasks(app).await?;
    let mut conn = app.pool.acquire().await?;
    db::liveness::forget_revoked(&mut conn, REVOCATIONS_KEPT, 5000).await?;
    Ok(n)
}

async fn lost_attempts(app: &App) -> Result<usize> {
    let active = {
        let mut conn = app.pool.acquire().await?;
        db::liveness::active_attempts(&mut conn, ACTIVE_BATCH).await?
    };
    if active.is_empty() {
        return Ok(0);
    }
    let mut runtimes: Vec<(WorkspaceId, RuntimeId)> = active
        .iter()
        .map(|a| (a.workspace_id, a.runtime_id))
        .collect();
    runtimes.dedup();
    let listings = match app.live.listings(&runtimes).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "liveness store unavailable: attempts are not judged this tick");
            return Ok(0);
        }
    };
    let by_runtime: HashMap<(WorkspaceId, RuntimeId), &Listing> = runtimes
        .iter()
        .zip(&listings)
        .filter_map(|(r, l)| Some((*r, l.as_ref()?)))
        .collect();
    let grace = chrono::Duration::from_std(app.settings.attempt_lost_grace())
        .unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let mut marks = Vec::new();
    let mut lost: Vec<TaskId> = Vec::new();
    for a in &active {
        // No listing: not judged, and a mark from an earlier listing stands.
        let Some(l) = by_runtime.get(&(a.workspace_id, a.runtime_id)) else {
            continue;
        };
        let since = unlisted_since(a, l);
        if since != a.unlisted_since {
            marks.push((a.id, a.attempt_id, since));
        }
        if since.is_some_and(|t| now - t > grace) {
            lost.push(a.id);
        }
    }
    let mut conn = app.pool.acquire().await?;
    db::liveness::mark_unlisted(&mut conn, &marks).await?;
    drop(conn);
    fail_tasks(app, &lost, FailureReason::AttemptLost).await
}

/// Since when `a` is left out of its daemon's listings, as `l` (the latest) tells: `None` when `l`
/// lists it, or was sent before it was dispatched.
fn unlisted_since(a: &ActiveAttempt, l: &Listing) -> Option<DateTime<Utc>> {
    let judged = l.at > a.dispatched_at && l.attempts.binary_search(&a.attempt_id).is_err();
    judged.then(|| a.unlisted_since.unwrap_or(l.at))
}

/// Fails these tasks' active attempts (those still active when locked).
async fn fail_tasks(app: &App, ids: &[TaskId], reason: FailureReason) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = db::begin(&app.pool).await?;
    let mut ch = Changes::default();
    let mut n = 0;
    for &id in ids {
        let Some(task) = db::tasks::lock_by_id(&mut tx, id).await? else {
            continue;
        };
        if task.status.is_active() {
            fail_active(
                &mut tx,
                app.backoff(),
                &task,
                Failure::server(reason),
                &mut ch,
            )
            .await?;
            n += 1;
        }
    }
    commit(app, tx, ch).await?;
    Ok(n)
}

/// Active tasks of runtimes offline for longer than `offline_grace` fail with `runtime_offline`.
async fn offline_tasks(app: &App) -> Result<usize> {
    let mut tx = db::begin(&app.pool).await?;
    let tasks =
        db::liveness::offline_tasks(&mut tx, app.settings.offline_grace, OFFLINE_BATCH).await?;
    if tasks.is_empty() {
        return Ok(0);
    }
    let mut ch = Changes::default();
    let failure = Failure::server(FailureReason::RuntimeOffline);
    for task in &tasks {
        fail_active(&mut tx, app.backoff(), task, failure, &mut ch).await?;
    }
    commit(app, tx, ch).await?;
    Ok(tasks.len())
}
