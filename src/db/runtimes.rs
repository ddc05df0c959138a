//! Runtimes: one daemon's registration for one provider.

use chrono::{DateTime, Utc};
use paddock_api::RuntimeStatus;
use paddock_api::values::Labels;
use sqlx::PgConnection;
use sqlx::types::Json;

use super::uuids;
use crate::ids::{RuntimeId, WorkspaceId};

/// A `runtimes` row.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub id: RuntimeId,
    pub workspace_id: WorkspaceId,
    pub daemon_id: String,
    pub provider: String,
    pub name: String,
    pub version: Option<String>,
    pub max_concurrency: Option<i32>,
    pub status: RuntimeStatus,
    pub draining: bool,
    pub labels: Json<Labels>,
    pub last_seen_at: DateTime<Utc>,
    pub offline_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<Runtime> for paddock_api::Runtime {
    fn from(r: Runtime) -> Self {
        Self {
            id: r.id,
            daemon_id: r.daemon_id,
            provider: r.provider,
            name: r.name,
            version: r.version,
            max_concurrency: r.max_concurrency,
            status: r.status,
            draining: r.draining,
            labels: r.labels.0.into(),
            last_seen_at: r.last_seen_at,
            offline_at: r.offline_at,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug)]
pub struct Registered {
    pub id: RuntimeId,
    pub status: RuntimeStatus,
    /// The status before this registration; None when it was created now.
    pub was_status: Option<RuntimeStatus>,
}

pub struct NewRuntime<'a> {
    pub workspace: WorkspaceId,
    pub daemon_id: &'a str,
    pub provider: &'a str,
    pub name: Option<&'a str>,
    pub version: Option<&'a str>,
    pub max_concurrency: Option<i32>,
    pub labels: &'a Labels,
}

/// Creates the runtime unless it exists (then `None`: re-register it).
pub async fn register(
    conn: &mut PgConnection,
    new: &NewRuntime<'_>,
) -> sqlx::Result<Option<Registered>> {
    let row = sqlx::query_file!(
        "queries/runtimes/register.sql",
        RuntimeId::new().0,
        new.workspace.0,
        new.daemon_id,
        new.provider,
        new.name,
        new.version,
        new.max_concurrency,
        Json(new.labels) as _,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Registered {
        id: r.id,
        status: r.status,
        was_status: None,
    }))
}

/// Brings an existing runtime online, its row locked first; `None` if it does not exist.
pub async fn reregister(
    conn: &mut PgConnection,
    new: &NewRuntime<'_>,
) -> sqlx::Result<Option<Registered>> {
    sqlx::query_file_as!(
        Registered,
        "queries/runtimes/reregister.sql",
        new.workspace.0,
        new.daemon_id,
        new.provider,
        new.name,
        new.version,
        new.max_concurrency,
        Json(new.labels) as _,
    )
    .fetch_optional(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    id: RuntimeId,
    ws: WorkspaceId,
) -> sqlx::Result<Option<Runtime>> {
    sqlx::query_file_as!(Runtime, "queries/runtimes/get.sql", id.0, ws.0)
        .fetch_optional(conn)
        .await
}

pub async fn list(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    after: Option<RuntimeId>,
    limit: i64,
) -> sqlx::Result<Vec<Runtime>> {
    sqlx::query_file_as!(
        Runtime,
        "queries/runtimes/list.sql",
        ws.0,
        after.map(|a| a.0),
        limit
    )
    .fetch_all(conn)
    .await
}

pub struct Changed {
    pub id: RuntimeId,
    pub workspace_id: WorkspaceId,
}

pub async fn mark_offline(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    ids: &[RuntimeId],
) -> sqlx::Result<Vec<Changed>> {
    sqlx::query_file_as!(
        Changed,
        "queries/runtimes/mark_offline.sql",
        ws.0,
        &uuids(ids)
    )
    .fetch_all(conn)
    .await
}

pub async fn flush_last_seen(
    conn: &mut PgConnection,
    workspaces: &[WorkspaceId],
    ids: &[RuntimeId],
    seen: &[DateTime<Utc>],
) -> sqlx::Result<u64> {
    let res = sqlx::query_file!(
        "queries/runtimes/flush_last_seen.sql",
        &uuids(workspaces),
        &uuids(ids),
        seen
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Serialises claims for one runtime within the transaction, so the concurrency limits it checks
/// cannot be raced by another claim for the same runtime.
/// The key of a runtime's claim lock: both halves of its id. A v7 id's high half is mostly its
/// creation time, shared by the runtimes registered in one millisecond, whose claims would then
/// wait for each other on one lock.
fn claim_lock_key(id: RuntimeId) -> i64 {
    let (hi, lo) = id.0.as_u64_pair();
    (hi ^ lo) as i64
}

/// Takes the claim's transaction locks: the runtime's, then its pool agents' (lock_for_claim.sql).
pub async fn lock_for_claim(conn: &mut PgConnection, id: RuntimeId) -> sqlx::Result<()> {
    sqlx::query_file!(
        "queries/runtimes/lock_for_claim.sql",
        claim_lock_key(id),
        id.0
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

pub struct Touched {
    pub id: RuntimeId,
    pub was_status: RuntimeStatus,
}

/// Writes `last_seen_at` and brings offline runtimes online (heartbeat slow path).
/// The runtimes among `ids` of the workspace that are online.
pub async fn online_of(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    ids: &[RuntimeId],
) -> sqlx::Result<Vec<RuntimeId>> {
    sqlx::query_file_scalar!("queries/runtimes/online_of.sql", ws.0, &uuids(ids))
        .fetch_all(conn)
        .await
}

pub async fn touch_or_revive(
    conn: &mut PgConnection,
    ws: WorkspaceId,
    ids: &[RuntimeId],
) -> sqlx::Result<Vec<Touched>> {
    sqlx::query_file_as!(
        Touched,
        "queries/runtimes/touch_or_revive.sql",
        ws.0,
        &uuids(ids)
    )
    .fetch_all(conn)
    .await
}

/// Drains or undrains a runtime; with whether that changed it. None: no such runtime here.
pub async fn set_draining(
    conn: &mut PgConnection,
    id: RuntimeId,
    ws: WorkspaceId,
    draining: bool,
) -> sqlx::Result<Option<(Runtime, bool)>> {
    let row = sqlx::query_file!("queries/runtimes/set_draining.sql", id.0, ws.0, draining)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| {
        let rt = Runtime {
            id: r.id,
            workspace_id: r.workspace_id,
            daemon_id: r.daemon_id,
            provider: r.provider,
            name: r.name,
            version: r.version,
            max_concurrency: r.max_concurrency,
            status: r.status,
            draining: r.draining,
            labels: r.labels,
            last_seen_at: r.last_seen_at,
            offline_at: r.offline_at,
            created_at: r.created_at,
        };
        (rt, r.changed)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_registered_together_have_claim_locks_of_their_own() {
        let keys: std::collections::HashSet<i64> = (0..10_000)
            .map(|_| claim_lock_key(RuntimeId::new()))
            .collect();
        assert_eq!(keys.len(), 10_000);
    }
}
