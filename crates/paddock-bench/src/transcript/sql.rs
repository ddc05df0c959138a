//! The transcript baseline: the plain insert of the same rows straight to Postgres, with the
//! server stopped — no fence on the attempt, no idempotency (`ON CONFLICT`), no size cap, no feed.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use super::setup::Attempt;
use crate::baseline::Timed;
use crate::harness::run_clients;
use crate::stats::{Latencies, progress};

const INSERT: &str = "\
INSERT INTO task_messages (task_id, attempt, seq, kind, content)
SELECT $1, $2, m.seq, m.kind, m.content
FROM unnest($3::bigint[], $4::text[], $5::text[]) AS m (seq, kind, content)";

/// `connections` workers, worker w taking attempts w, w + connections, … in turn, each inserting
/// one batch of `contents.len()` rows per autocommit statement (seqs after `first_seq[attempt]`,
/// past what the server stored), for `warmup` (not counted) and then `measure`.
pub async fn insert(
    pool: &PgPool,
    attempts: &[Attempt],
    first_seq: &[u64],
    connections: usize,
    contents: &[String],
    (warmup, measure): (Duration, Duration),
) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let counted_from = start + warmup;
    let end = counted_from + measure;
    let bar = progress(None, "baseline");
    let batch = contents.len();
    let workers = (0..connections).map(|w| {
        let mine: Vec<(Uuid, i32, u64)> = (w..attempts.len())
            .step_by(connections)
            .map(|i| (attempts[i].task_id, attempts[i].attempt, first_seq[i]))
            .collect();
        let (pool, bar) = (pool.clone(), bar.clone());
        let contents = contents.to_vec();
        async move {
            let mut conn = pool.acquire().await?;
            let kinds = vec!["text".to_owned(); batch];
            let mut next: Vec<u64> = mine.iter().map(|m| m.2).collect();
            let mut lat = Latencies::default();
            for turn in 0.. {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let k = turn % mine.len();
                let (task, attempt, _) = mine[k];
                let seqs: Vec<i64> = (next[k]..next[k] + batch as u64)
                    .map(|s| s as i64)
                    .collect();
                sqlx::query(INSERT)
                    .bind(task)
                    .bind(attempt)
                    .bind(&seqs)
                    .bind(&kinds)
                    .bind(&contents)
                    .execute(&mut *conn)
                    .await?;
                next[k] += batch as u64;
                if t >= counted_from {
                    lat.record_n(t.elapsed(), batch as u64);
                    bar.inc(batch as u64);
                }
            }
            anyhow::Ok(lat)
        }
    });
    let lats = run_clients(workers).await?;
    bar.finish_and_clear();
    Ok(Timed::from_workers(&lats, measure))
}

/// The longest-running transaction holding a transaction id elsewhere on the Postgres server, seen
/// while the server ran. The live feed delivers only what committed below the cluster's commit
/// horizon (the oldest running transaction id, in any database), so one long transaction anywhere
/// on the server holds every frame back until it ends.
#[derive(Clone, Debug, Default)]
pub struct Oldest {
    pub secs: f64,
    pub database: String,
}

const OLDEST: &str = "\
SELECT coalesce(datname, ''), extract(epoch FROM now() - xact_start)::float8
FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
ORDER BY xact_start
LIMIT 1";

/// Samples [`OLDEST`] every 200 ms on a connection of its own until `stop` fires.
pub fn oldest_transactions(
    pool: PgPool,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<anyhow::Result<Oldest>> {
    tokio::spawn(async move {
        let mut conn = pool.acquire().await?;
        let mut oldest = Oldest::default();
        tokio::pin!(stop);
        loop {
            let row: Option<(String, f64)> =
                sqlx::query_as(OLDEST).fetch_optional(&mut *conn).await?;
            if let Some((database, secs)) = row
                && secs > oldest.secs
            {
                oldest = Oldest { secs, database };
            }
            tokio::select! {
                _ = &mut stop => return Ok(oldest),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}
