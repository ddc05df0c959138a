//! Persistence: one function per statement in `queries/`, and the row types they return.
//!
//! Functions take `&mut PgConnection` so callers decide the transaction; `db` never decides policy.

pub mod agents;
pub mod attempts;
pub mod events;
pub mod liveness;
pub mod runtimes;
pub mod sweeps;
pub mod tasks;
pub mod tokens;
pub mod transcripts;
pub mod workspaces;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle for longer than this is pinged before it is handed out; a busier one
/// is not (sqlx's default pings on every acquire: one more round trip per request).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool every request and background loop uses. Acquiring waits at most 5 s so that a database
/// outage answers `503 unavailable` quickly instead of hanging requests. A connection that fails its
/// ping (the server restarted while it sat idle) is dropped and another one is dialled.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse()?;
    let opts = opts.application_name("paddock");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_IF_IDLE_FOR {
                    return Ok(true);
                }
                let ping = tokio::time::timeout(Duration::from_secs(1), conn.ping()).await;
                Ok(matches!(ping, Ok(Ok(()))))
            })
        })
        .connect_with(opts)
        .await?;
    Ok(pool)
}

/// A connection of its own for a background reader (a feed), outside the pool: a feed that waited
/// in the pool's queue behind the requests it serves would fall behind exactly when the load is
/// highest. Dialled on first use with the pool's options, and again after an error.
pub struct Dedicated {
    opts: PgConnectOptions,
    conn: Option<sqlx::PgConnection>,
}

impl Dedicated {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            opts: (*pool.connect_options()).clone(),
            conn: None,
        }
    }

    /// The connection, dialled if there is none.
    pub async fn get(&mut self) -> sqlx::Result<&mut sqlx::PgConnection> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::PgConnection::connect_with(&self.opts),
            )
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just dialled"))
    }

    /// Forgets the connection after an error: the next `get` dials again.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

/// Begins a transaction of the task hot path (enqueue, claim, reports, cancel) whose statements are
/// all lookups by key, with generic plans: each statement is planned once per connection.
///
/// Postgres plans a prepared statement's first five runs with its parameter values, then keeps a
/// generic plan only if it is costed no higher. A generic plan prices `id = ANY($1)` at ten array
/// elements, so statements that take one id in an array (the agents a batch changed, the runtime a
/// claim serves) were planned afresh on every run; the claim's plan alone costs milliseconds. The
/// setting is `SET LOCAL` in the same round trip as `BEGIN`, so it ends with the transaction: list
/// queries, whose optional filters need the values to pick an index, keep planning per run.
pub async fn begin_hot(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    begin_uncancelled(
        pool,
        Some("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan".into()),
    )
    .await
}

/// [`begin_hot`], and a statement that waits longer than `lock_wait` for a lock fails with
/// `lock_not_available` (55P03; see `service::Error::is_lock_timeout`). Zero: no bound.
pub async fn begin_hot_bounded(
    pool: &PgPool,
    lock_wait: std::time::Duration,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    // lock_timeout is an int of milliseconds: past it, the bound is as good as none.
    let ms = lock_wait.as_millis().min(i32::MAX as u128);
    let sql = format!(
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL lock_timeout = {ms}"
    );
    begin_uncancelled(pool, Some(sql.into())).await
}

/// Begins a transaction on a pooled connection (the way every service call does).
pub async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    begin_uncancelled(pool, None).await
}

/// Begins a transaction in a task of its own, so that a caller dropped meanwhile — a client that
/// disconnects during a claim, a daemon's long poll cut short — cannot cancel it halfway. sqlx 0.8.6
/// counts a transaction only once `BEGIN` has answered: cancelled between sending it and reading
/// the answer, it returns the connection to the pool inside a transaction nobody will end, and the
/// next borrower's statements run in it and keep their locks (transact-rs/sqlx#4393). Here the
/// task always finishes: a transaction nobody awaits any more is dropped whole, which rolls it back.
async fn begin_uncancelled(
    pool: &PgPool,
    statement: Option<std::borrow::Cow<'static, str>>,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move {
        match statement {
            Some(s) => pool.begin_with(s).await,
            None => pool.begin().await,
        }
    })
    .await;
    match begun {
        Ok(tx) => tx,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// Converts typed ids to the `uuid[]` a query takes.
pub fn uuids<T: Copy + Into<uuid::Uuid>>(ids: &[T]) -> Vec<uuid::Uuid> {
    ids.iter().map(|&id| id.into()).collect()
}
