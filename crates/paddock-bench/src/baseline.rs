//! Same-run baselines: the SQL a scenario boils down to, driven straight at Postgres with the same
//! concurrency, on the same database and machine. They bound what any server could add on top, so
//! a figure reads as "Paddock reaches x of plain SQL" rather than as an absolute.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::drain::{Fleet, share};
use super::harness::run_clients;
use super::stats::{Latencies, progress};

/// Baseline claim: the best `$2` queued rows of one agent in claim order (tasks_claim), locked with
/// SKIP LOCKED, dispatched with a fresh attempt id (what `queries/tasks/claim.sql` does, minus the
/// slot accounting, fairness and keys).
const CLAIM: &str = "\
WITH picked AS (
    SELECT id FROM tasks
    WHERE agent_id = $1 AND status = 'queued' AND run_after <= now()
    ORDER BY claim_key, seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = 'dispatched', attempt = t.attempt + 1, attempt_id = gen_random_uuid(), dispatched_at = now()
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.attempt_id";

/// Baseline start and complete: the fenced transitions for a whole batch in one statement each.
const START: &str = "\
UPDATE tasks t SET status = 'running', started_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS v (id, attempt_id)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'dispatched'";

const COMPLETE: &str = "\
UPDATE tasks t SET status = 'completed', result = '{}', finished_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS v (id, attempt_id)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'running'";

/// Inserts `tasks` fresh queued rows round-robin over the fleet's agents, then drains them with
/// one worker per agent (claim ≤ `batch`, start, complete: three autocommit statements per batch).
/// Returns the time from the workers' start to the last completion.
pub async fn drain(
    pool: &PgPool,
    fleet: &Fleet,
    tasks: u64,
    batch: u64,
) -> anyhow::Result<Duration> {
    let ws: Uuid = fleet.ws.id.parse().context("workspace id")?;
    sqlx::query(
        "INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, payload)
         SELECT gen_random_uuid(), $1, a[i], r[i], jsonb_build_object('noop', g)
         FROM (SELECT $2::uuid[] AS a, $3::uuid[] AS r) f,
              generate_series(0, $4::bigint - 1) g,
              LATERAL (SELECT (1 + g % cardinality(f.a))::int AS i) x",
    )
    .bind(ws)
    .bind(&fleet.agents)
    .bind(&fleet.runtimes)
    .bind(tasks as i64)
    .execute(pool)
    .await
    .context("baseline: inserting the queued rows")?;
    sqlx::query("ANALYZE tasks").execute(pool).await?;

    let bar = progress(Some(tasks), "baseline");
    let workers = fleet.agents.len() as u64;
    let t0 = Instant::now();
    let runs = fleet.agents.iter().enumerate().map(|(w, &agent)| {
        let mine = share(tasks, workers, w as u64);
        let (bar, pool) = (bar.clone(), pool.clone());
        async move {
            let mut conn = pool.acquire().await?;
            let mut done = 0;
            while done < mine {
                let rows = sqlx::query(CLAIM)
                    .bind(agent)
                    .bind(batch as i64)
                    .fetch_all(&mut *conn)
                    .await?;
                if rows.is_empty() {
                    bail!("baseline stalled: agent {agent} has no queued rows with {done} of {mine} done");
                }
                let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
                let attempts: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
                for sql in [START, COMPLETE] {
                    sqlx::query(sql)
                        .bind(&ids)
                        .bind(&attempts)
                        .execute(&mut *conn)
                        .await?;
                }
                done += ids.len() as u64;
                bar.inc(ids.len() as u64);
            }
            anyhow::Ok(Instant::now())
        }
    });
    let ends = run_clients(runs).await?;
    bar.finish_and_clear();
    Ok(ends
        .into_iter()
        .map(|e| e.duration_since(t0))
        .max()
        .unwrap_or_default())
}

/// What a timed baseline loop measured.
pub struct Timed {
    pub count: u64,
    pub elapsed: Duration,
    pub latency: Latencies,
}

impl Timed {
    /// Merges the latencies recorded by each worker over the measured `elapsed`.
    pub fn from_workers(lats: &[Latencies], elapsed: Duration) -> Self {
        let mut latency = Latencies::default();
        for l in lats {
            latency.merge(l);
        }
        Timed {
            count: latency.count(),
            elapsed,
            latency,
        }
    }
}

/// `clients` connections, each running `UPDATE runtimes SET last_seen_at = now() WHERE id = $1`
/// for the next runtime in turn, for `warmup` (not counted) and then `measure`.
pub async fn heartbeat(
    pool: &PgPool,
    runtimes: &[Uuid],
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Timed> {
    let runtimes: Arc<[Uuid]> = runtimes.into();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let counted_from = start + warmup;
    let end = counted_from + measure;
    let bar = progress(None, "baseline");
    let workers = (0..clients).map(|_| {
        let (runtimes, next, bar, pool) =
            (runtimes.clone(), next.clone(), bar.clone(), pool.clone());
        async move {
            let mut conn = pool.acquire().await?;
            let mut lat = Latencies::default();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let id = runtimes[next.fetch_add(1, Ordering::Relaxed) % runtimes.len()];
                sqlx::query("UPDATE runtimes SET last_seen_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                if t >= counted_from {
                    lat.record(t.elapsed());
                    bar.inc(1);
                }
            }
            anyhow::Ok(lat)
        }
    });
    let lats = run_clients(workers).await?;
    bar.finish_and_clear();
    Ok(Timed::from_workers(&lats, measure))
}
