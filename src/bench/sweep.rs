//! `bench sweep`: does a sweeper tick, or server start-up, get slower with task history?
//!
//! On a fresh, migrated database with the fixed active set of [`super::sweep_seed`], measure
//! ("empty"): K ticks of `sweep::tick` on a state from `paddock::build` (median reported; the first
//! does the real work — stale runtimes, timeouts, expiry, collection, event retention — and the
//! rest find nothing), then M server start-ups (call `serve` → `/readyz` answers 200; median).
//! Then seed H terminal tasks, `VACUUM (ANALYZE)`, restore the active set, and measure again
//! ("history"). Per-sweep medians come from the `sweeper_runs` rows the ticks wrote.

use std::time::{Duration, Instant};

use clap::Args;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::harness::{BenchDb, Server, Services, settings};
use super::stats::{Summary, median_ms, ratio};
use super::sweep_seed;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Terminal tasks of history to seed between the two measurements.
    #[arg(long)]
    history: u64,
    /// Ticks per measurement (the median is reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=100))]
    ticks: u64,
    /// Server start-ups per measurement (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    starts: u64,
}

/// One measurement.
struct Phase {
    ticks: Vec<Duration>,
    starts: Vec<Duration>,
    /// `(sweep, median ms, rows changed in all ticks)`, in the order the tick runs them.
    sweeps: Vec<(String, f64, i64)>,
    tasks: i64,
}

impl Phase {
    fn tick_ms(&self) -> f64 {
        median_ms(&self.ticks)
    }

    fn startup_ms(&self) -> f64 {
        median_ms(&self.starts)
    }
}

pub async fn run(services: &Services, db: &BenchDb, args: &SweepArgs) -> anyhow::Result<Summary> {
    let pool = db.pool(4).await?;
    crate::db::MIGRATOR.run(&pool).await?;
    let ws = sweep_seed::base(&pool).await?;
    let empty = measure(services, db, &pool, ws, args, "empty").await?;

    let t = Instant::now();
    sweep_seed::history(&pool, ws, args.history).await?;
    sweep_seed::vacuum_analyze(&pool).await?;
    let seeded = t.elapsed();
    let history = measure(services, db, &pool, ws, args, "history").await?;
    pool.close().await;

    let mut s = Summary::new(format!(
        "sweep: {} history rows (seeded and vacuumed in {:.1} s), median of {} ticks and {} start-ups",
        args.history,
        seeded.as_secs_f64(),
        args.ticks,
        args.starts
    ));
    for (name, p) in [("empty", &empty), ("history", &history)] {
        s.line(format!(
            "  {name:<8} {:>9} tasks  tick {:>8.2} ms (first {:.2} ms)  start-up {:>8.2} ms",
            p.tasks,
            p.tick_ms(),
            p.ticks[0].as_secs_f64() * 1000.0,
            p.startup_ms()
        ));
        let per: Vec<String> = p
            .sweeps
            .iter()
            .map(|(n, ms, rows)| format!("{n} {ms:.2} ms/{rows} rows"))
            .collect();
        s.line(format!("           {}", per.join(", ")));
    }
    s.line(format!(
        "  ratio    tick {:.2} ×  start-up {:.2} ×  (history / empty)",
        ratio(history.tick_ms(), empty.tick_ms()),
        ratio(history.startup_ms(), empty.startup_ms())
    ));
    s.num("tick_ms_empty", empty.tick_ms());
    s.num("tick_ms_history", history.tick_ms());
    s.num("startup_ms_empty", empty.startup_ms());
    s.num("startup_ms_history", history.startup_ms());
    s.num("tick_ratio", ratio(history.tick_ms(), empty.tick_ms()));
    s.num(
        "startup_ratio",
        ratio(history.startup_ms(), empty.startup_ms()),
    );
    s.num("first_tick_ms_empty", empty.ticks[0].as_secs_f64() * 1000.0);
    s.num(
        "first_tick_ms_history",
        history.ticks[0].as_secs_f64() * 1000.0,
    );
    s.int("history", args.history);
    s.num("seed_seconds", seeded.as_secs_f64());
    Ok(s)
}

async fn measure(
    services: &Services,
    db: &BenchDb,
    pool: &PgPool,
    ws: Uuid,
    args: &SweepArgs,
    label: &str,
) -> anyhow::Result<Phase> {
    sweep_seed::reset_active(pool, ws).await?;
    sweep_seed::vacuum_analyze(pool).await?;
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(pool)
        .await?;
    let settings = settings(services, db);
    let replica = format!("bench-{label}");

    let state = crate::build(settings.clone(), CancellationToken::new()).await?;
    let mut ticks = Vec::new();
    for _ in 0..args.ticks {
        let t = Instant::now();
        crate::sweep::tick(&state, &replica).await;
        ticks.push(t.elapsed());
    }
    state.pool.close().await;
    drop(state);

    let mut starts = Vec::new();
    for _ in 0..args.starts {
        let server = Server::start(settings.clone()).await?;
        starts.push(server.startup);
        server.stop().await?;
    }

    let sweeps = sqlx::query(
        "SELECT sweep, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                sum(rows_changed)::bigint
         FROM sweeper_runs WHERE replica = $1
         GROUP BY sweep ORDER BY min(id)",
    )
    .bind(&replica)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    Ok(Phase {
        ticks,
        starts,
        sweeps,
        tasks,
    })
}
