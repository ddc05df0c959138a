//! Direct reads of stored state, for assertions that must not go through the API (no delivery
//! horizon, no tenant filter).

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
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

/// Every node of an EXPLAIN (FORMAT JSON) plan: (node type, relation, index).
pub fn plan_nodes(plan: &Value, out: &mut Vec<(String, String, String)>) {
    let field = |k: &str| plan[k].as_str().unwrap_or("").to_owned();
    if plan.get("Node Type").is_some() {
        out.push((
            field("Node Type"),
            field("Relation Name"),
            field("Index Name"),
        ));
    }
    if let Some(children) = plan["Plans"].as_array() {
        for c in children {
            plan_nodes(c, out);
        }
    }
}

/// Holds the row lock of `task` in a transaction of its own, so that a write of it waits.
pub async fn hold(app: &TestApp, task: &str) -> Transaction<'static, Postgres> {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(task.parse::<Uuid>().unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Backends of the test's database waiting on a lock.
pub async fn waiting_on_locks(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}
