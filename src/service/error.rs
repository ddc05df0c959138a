//! What a use case can fail with, in its own terms (no HTTP here: `http::error` translates).
//!
//! `Error` aborts the use case and rolls its transaction back. `Refusal` is a daemon report that
//! changes nothing and is answered as such — the one error of a single report call, and one result
//! among others in a batch report, where it does not abort the batch.

use paddock_api::RuntimeId;

pub use crate::domain::task::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such resource in the caller's workspace (`what` names it: "task", "agent", …).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the resource's state (archived agent, slug taken, …).
    #[error("{0}")]
    Conflict(String),
    /// The admission gate: the task's runtime (or every runtime of its pool) is offline, so nothing
    /// was queued; or a claim for an offline runtime. The message says which.
    #[error("{0}")]
    RuntimeOffline(String),
    /// The resource is in a state this request cannot follow (cancelling a finished task).
    #[error("{0}")]
    InvalidTransition(String),
    /// A daemon report that changes nothing.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A value the database refused (a CHECK, a NUL character, a number out of range).
    #[error("{0}")]
    Invalid(String),
    /// The database is unreachable, restarting or out of connections: retrying will do.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database was found unreachable moments ago (`crate::breaker`): not tried again now.
    #[error("the database is unavailable")]
    DatabaseDown,
    /// Anything else from the database.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A broken invariant.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A statement gave up waiting for a lock (`lock_timeout`: 55P03 `lock_not_available`).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.code().as_deref() {
                // unique_violation
                Some("23505") => {
                    return Self::Conflict("a resource with these values already exists".into());
                }
                // check_violation, not_null_violation, string/numeric out of range
                Some("23514") | Some("23502") | Some("22001") | Some("22003") => {
                    return Self::Invalid(format!("value rejected: {}", db.message()));
                }
                // untranslatable_character (\u0000 in jsonb), character_not_in_repertoire (NUL in text)
                Some("22P05") | Some("22021") => {
                    return Self::Invalid(
                        "text and JSON values may not contain NUL (\\u0000) characters".into(),
                    );
                }
                _ => {}
            }
        }
        if connection_lost(&err) {
            Self::Unavailable(err)
        } else {
            Self::Database(err)
        }
    }
}

/// The server is gone, restarting or full, or this pooled connection died with it (pooled
/// connections are pinged only after a second idle, `db::connect`).
fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// The row was locked by this transaction, so a fenced update cannot miss it; if it does, the
/// invariant broke and the transaction is abandoned.
pub fn lost_race() -> Error {
    Error::Internal(anyhow::anyhow!(
        "fenced task update matched no row while holding its lock"
    ))
}

impl Error {
    /// `RuntimeOffline` for one runtime.
    pub fn runtime_offline(id: RuntimeId) -> Self {
        Self::RuntimeOffline(format!("runtime {id} is offline"))
    }
}
