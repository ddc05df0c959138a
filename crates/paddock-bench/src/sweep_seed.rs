//! Data for `bench sweep`, written with plain SQL (no events, no API): one workspace with
//!
//! * 50 `fresh-*` runtimes (online, just seen) and 20 `stale-*` runtimes (online, last seen 10
//!   minutes ago, unknown to the liveness store), one agent each;
//! * the active set, restored before each measurement by [`reset_active`]: on each fresh agent 6
//!   queued, 2 dispatched and 2 running tasks (one agent in five has one of each past
//!   `queued_ttl`, `dispatch_timeout`, `running_timeout`), on each stale agent one dispatched and
//!   one running (540 active tasks); 20 runtimes offline for 8 days whose agents are archived (for
//!   the collector); 1,000 events older than the retention;
//! * the history, [`history`]: H terminal tasks (90% completed, 7% failed, 3% cancelled) spread
//!   over the fresh and stale agents and over the last 30 days, in statements of 250,000 rows, two
//!   at a time.

use anyhow::Context;
use futures::StreamExt;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::stats::progress;

/// Rows per history statement: big enough to be fast, small enough to show progress.
const HISTORY_CHUNK: i64 = 250_000;
/// History statements in flight (one per core here).
const HISTORY_WRITERS: usize = 2;

/// Rows `$4..$5` of `$6` history rows, dealt round-robin over the agents `$2` (runtimes `$3`),
/// enqueued over the 30 days before now, each finished a minute after it was enqueued.
const HISTORY_INSERT: &str = "\
INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, status, payload, result, error,
                   failure_reason, attempt, attempt_id, run_after, enqueued_at, dispatched_at,
                   started_at, finished_at)
SELECT gen_random_uuid(), $1, f.a[t.i], f.r[t.i],
       CASE WHEN g % 100 < 90 THEN 'completed' WHEN g % 100 < 97 THEN 'failed' ELSE 'cancelled' END,
       jsonb_build_object('prompt', 'history', 'n', g),
       CASE WHEN g % 100 < 90 THEN '{\"ok\": true}'::jsonb END,
       CASE WHEN g % 100 BETWEEN 90 AND 96 THEN 'agent exited with status 1' END,
       CASE WHEN g % 100 BETWEEN 90 AND 96 THEN 'agent_error'
            WHEN g % 100 >= 97 THEN 'cancelled' END,
       1, gen_random_uuid(), t.at, t.at, t.at + interval '1 second', t.at + interval '2 seconds',
       t.at + interval '1 minute'
FROM (SELECT $2::uuid[] AS a, $3::uuid[] AS r) f,
     generate_series($4::bigint, $5::bigint - 1) g,
     LATERAL (SELECT (1 + g % cardinality(f.a))::int AS i,
                     now() - interval '30 days' + (g::float8 / $6::float8) * interval '29 days' AS at) t";

/// Creates the workspace, its runtimes and agents; returns the workspace id.
pub async fn base(pool: &PgPool) -> anyhow::Result<Uuid> {
    let ws = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO workspaces (id, name, slug) VALUES ($1, 'bench sweep', $2)")
        .bind(ws)
        .bind(format!("bench-{}", &ws.simple().to_string()[..12]))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name, status, last_seen_at)
         SELECT gen_random_uuid(), $1, v.kind || '-' || g, 'bench', v.kind || '-' || g, 'online', now()
         FROM (VALUES ('fresh', 50), ('stale', 20)) AS v (kind, n), generate_series(1, v.n) g",
    )
    .bind(ws)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO agents (id, workspace_id, runtime_id, name, max_concurrent_tasks, definition)
         SELECT gen_random_uuid(), workspace_id, id, 'agent ' || daemon_id, 100, '{\"model\": \"bench\"}'
         FROM runtimes WHERE workspace_id = $1",
    )
    .bind(ws)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ws)
}

/// Puts the active set back as [`base`] describes it, whatever the sweeps did to it.
pub async fn reset_active(pool: &PgPool, ws: Uuid) -> anyhow::Result<()> {
    let statements = [
        // Written as an OR so that the partial indexes on active rows answer it.
        "DELETE FROM tasks
         WHERE workspace_id = $1 AND (status = 'queued' OR status IN ('dispatched', 'running'))",
        "DELETE FROM agents WHERE workspace_id = $1 AND archived_at IS NOT NULL",
        "DELETE FROM runtimes WHERE workspace_id = $1 AND daemon_id LIKE 'gone-%'",
        "DELETE FROM events WHERE workspace_id = $1 AND occurred_at < now() - interval '1 day'",
        "UPDATE runtimes SET status = 'online', offline_at = NULL,
                last_seen_at = CASE WHEN daemon_id LIKE 'stale-%' THEN now() - interval '10 minutes'
                                    ELSE now() END
         WHERE workspace_id = $1",
        "UPDATE agents SET status = 'working' WHERE workspace_id = $1",
        "WITH gone AS (
             INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name, status, last_seen_at, offline_at)
             SELECT gen_random_uuid(), $1, 'gone-' || g, 'bench', 'gone-' || g, 'offline',
                    now() - interval '8 days', now() - interval '8 days'
             FROM generate_series(1, 20) g
             RETURNING id)
         INSERT INTO agents (id, workspace_id, runtime_id, name, definition, status, archived_at)
         SELECT gen_random_uuid(), $1, id, 'archived', '{}', 'offline', now() - interval '8 days' FROM gone",
        // Ages: one agent in five has one task past each timeout (3 h > queued_ttl 2 h and
        // running_timeout 150 min, 10 min > dispatch_timeout 5 min).
        "INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, status, payload, attempt, attempt_id,
                            enqueued_at, run_after, dispatched_at, started_at)
         SELECT gen_random_uuid(), a.workspace_id, a.id, a.runtime_id, k.status, '{\"bench\": \"active\"}',
                CASE WHEN k.status = 'queued' THEN 0 ELSE 1 END,
                CASE WHEN k.status = 'queued' THEN NULL ELSE gen_random_uuid() END,
                now() - k.age, now() - k.age,
                CASE WHEN k.status <> 'queued' THEN now() - k.age END,
                CASE WHEN k.status = 'running' THEN now() - k.age END
         FROM (SELECT a.*, r.daemon_id LIKE 'fresh-%' AS fresh, row_number() OVER (PARTITION BY r.daemon_id LIKE 'fresh-%' ORDER BY a.id) AS n
               FROM agents a JOIN runtimes r ON r.id = a.runtime_id
               WHERE a.workspace_id = $1 AND a.archived_at IS NULL) a
         CROSS JOIN LATERAL (
             SELECT s.status, CASE WHEN a.n % 5 = 0 AND g = 1 THEN s.old ELSE interval '30 seconds' END AS age
             FROM (VALUES ('queued', 6, interval '3 hours'), ('dispatched', 2, interval '10 minutes'),
                          ('running', 2, interval '3 hours')) AS s (status, per_agent, old),
                  generate_series(1, s.per_agent) g
             WHERE a.fresh
             UNION ALL
             SELECT s, interval '1 minute' FROM unnest(ARRAY['dispatched', 'running']) s WHERE NOT a.fresh
         ) k",
        "INSERT INTO events (workspace_id, type, subject_id, payload, occurred_at)
         SELECT $1, 'task.completed', gen_random_uuid(), '{}', now() - interval '2 days'
         FROM generate_series(1, 1000)",
    ];
    let mut tx = pool.begin().await?;
    for sql in statements {
        sqlx::query(sql)
            .bind(ws)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("resetting the active set: {sql}"))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Inserts `rows` terminal tasks (the caller analyzes afterwards).
pub async fn history(pool: &PgPool, ws: Uuid, rows: u64) -> anyhow::Result<()> {
    let owners = sqlx::query(
        "SELECT id, runtime_id FROM agents WHERE workspace_id = $1 AND archived_at IS NULL ORDER BY id",
    )
    .bind(ws)
    .fetch_all(pool)
    .await?;
    let agents: Vec<Uuid> = owners.iter().map(|r| r.get(0)).collect();
    let runtimes: Vec<Uuid> = owners.iter().map(|r| r.get(1)).collect();
    let total = rows as i64;
    let bar = progress(Some(rows), "history");
    let chunks = (0..total)
        .step_by(HISTORY_CHUNK as usize)
        .map(|from| (from, (from + HISTORY_CHUNK).min(total)));
    let mut inserts = futures::stream::iter(chunks)
        .map(|(from, to)| {
            sqlx::query(HISTORY_INSERT)
                .bind(ws)
                .bind(&agents)
                .bind(&runtimes)
                .bind(from)
                .bind(to)
                .bind(total as f64)
                .execute(pool)
        })
        .buffer_unordered(HISTORY_WRITERS);
    while let Some(done) = inserts.next().await {
        bar.inc(done.context("seeding history")?.rows_affected());
    }
    bar.finish_and_clear();
    Ok(())
}

/// `VACUUM (ANALYZE)` of the tables the sweeps and start-up read, as autovacuum would have done
/// to history that accumulated over weeks (hint bits, visibility map, fresh statistics), then a
/// `CHECKPOINT`, so that the measurement does not share the disk with the seeding's writes.
pub async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("VACUUM (ANALYZE) tasks, runtimes, agents, events, task_attempts")
        .execute(pool)
        .await
        .context("VACUUM (ANALYZE) after seeding")?;
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        eprintln!(
            "bench: CHECKPOINT refused ({e}); the measurement may pay for the seeding's writes"
        );
    }
    Ok(())
}
