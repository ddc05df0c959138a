//! Persistence: one function per statement in `queries/`, and the row types they return.
//!
//! Functions take `&mut PgConnection` so callers decide the transaction; `db` never decides policy.

pub mod agents;
pub mod events;
pub mod runtimes;
pub mod sweeps;
pub mod tasks;
pub mod tokens;
pub mod workspaces;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The pool every request and background loop uses. Acquiring waits at most 5 s so that a database
/// outage answers `503 unavailable` quickly instead of hanging requests.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse()?;
    let opts = opts.application_name("paddock");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await?;
    Ok(pool)
}

/// Converts typed ids to the `uuid[]` a query takes.
pub fn uuids<T: Copy + Into<uuid::Uuid>>(ids: &[T]) -> Vec<uuid::Uuid> {
    ids.iter().map(|&id| id.into()).collect()
}
