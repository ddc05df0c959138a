//! Direct reads of stored state, for assertions that must not go through the API (no delivery
//! horizon, no tenant filter).

use sqlx::PgPool;
use uuid::Uuid;

use super::TestApp;

/// Every table the API writes, for "nothing was written" assertions.
pub const TABLES: [&str; 10] = [
    "workspaces",
    "tokens",
    "runtimes",
    "agents",
    "tasks",
    "task_attempts",
    "events",
    "task_messages",
    "task_transcripts",
    "revoked_attempts",
];

/// Row counts of every table of [`TABLES`], in that order.
pub async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push((t, app.count(t).await));
    }
    out
}

/// Rows of the event log of type `kind` about `subject` (read directly: no delivery horizon).
pub async fn count_events(pool: &PgPool, kind: &str, subject: &str) -> i64 {
    let subject: Uuid = subject.parse().unwrap();
    sqlx::query_scalar("SELECT count(*) FROM events WHERE type = $1 AND subject_id = $2")
        .bind(kind)
        .bind(subject)
        .fetch_one(pool)
        .await
        .unwrap()
}
