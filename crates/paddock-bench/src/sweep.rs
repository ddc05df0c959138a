//! `bench sweep`: does a sweeper tick, or server start-up, get slower with task history?
//!
//! On a fresh, migrated database with the fixed active set of [`super::sweep_seed`], measure
//! ("empty"): K sweeper ticks in one `paddock sweep --ticks K` process (median reported; the first
//! does the real work — stale runtimes, timeouts, expiry, collection, event retention — and the
//! rest find nothing), then M server start-ups (spawn `serve` → `/readyz` answers 200; median).
//! Then seed H terminal tasks, restore the active set, and measure again ("history"). Before each
//! measurement the tables are vacuumed and analyzed and a checkpoint is taken. Per-sweep medians
//! come from the `sweeper_runs` rows the ticks wrote; a tick's time beyond its sweeps is spent
//! writing those rows.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::harness::{BenchDb, Server, Services, migrate, settings};
use super::stats::{Summary, median_ms, ratio};
use super::sweep_seed;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Terminal tasks of history to seed between the two measurements.
    #[arg(long)]
    history: u64,
    /// Ticks per measurement (the median is reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=100))]
    ticks: u64,
    /// Server start-ups per measurement (the median is reported).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u64).range(1..=50))]
    starts: u64,
}

/// One measurement.
struct Phase {
    ticks: Vec<Duration>,
    starts: Vec<Duration>,
    /// In the order the tick runs them.
    sweeps: Vec<Sweep>,
    tasks: i64,
}

/// One sweep over the ticks of a measurement, from `sweeper_runs`.
struct Sweep {
    name: String,
    median_ms: f64,
    first_ms: f64,
    /// Rows changed over all ticks (the first tick changes them all).
    rows: i64,
}

impl Phase {
    fn tick_ms(&self) -> f64 {
        median_ms(&self.ticks)
    }

    /// The sweeps alone (sum of their medians); the rest of a tick records them in `sweeper_runs`.
    fn sweeps_ms(&self) -> f64 {
        self.sweeps.iter().map(|w| w.median_ms).sum()
    }

    fn startup_ms(&self) -> f64 {
        median_ms(&self.starts)
    }
}

pub async fn run(services: &Services, db: &BenchDb, args: &SweepArgs) -> anyhow::Result<Summary> {
    migrate(services, db).await?;
    let pool = db.pool(4).await?;
    let ws = sweep_seed::base(&pool).await?;
    let empty = measure(services, db, &pool, ws, args, "empty").await?;

    let t = Instant::now();
    sweep_seed::history(&pool, ws, args.history).await?;
    sweep_seed::settle(&pool).await?;
    let seeded = t.elapsed();
    let history = measure(services, db, &pool, ws, args, "history").await?;
    pool.close().await;

    let mut s = Summary::new(format!(
        "sweep: {} history rows (seeded, vacuumed, checkpointed in {:.1} s), median of {} ticks and {} start-ups",
        args.history,
        seeded.as_secs_f64(),
        args.ticks,
        args.starts
    ));
    for (name, p) in [("empty", &empty), ("history", &history)] {
        s.line(format!(
            "  {name:<8} {:>9} tasks  tick {:>7.2} ms (sweeps {:.2} ms, first tick {:.2} ms)  start-up {:>7.2} ms",
            p.tasks,
            p.tick_ms(),
            p.sweeps_ms(),
            p.ticks[0].as_secs_f64() * 1000.0,
            p.startup_ms()
        ));
        for w in &p.sweeps {
            s.line(format!(
                "    {:<17} median {:>7.2} ms  first {:>8.2} ms  {:>5} rows changed",
                w.name, w.median_ms, w.first_ms, w.rows
            ));
        }
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
    s.num("sweeps_ms_empty", empty.sweeps_ms());
    s.num("sweeps_ms_history", history.sweeps_ms());
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
    sweep_seed::settle(pool).await?;
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(pool)
        .await?;
    let settings = settings(services, db);
    let replica = format!("bench-{label}");
    let ticks = ticks(&settings, &replica, args.ticks).await?;

    let mut starts = Vec::new();
    for _ in 0..args.starts {
        let server = Server::start(settings.clone()).await?;
        starts.push(server.startup);
        server.stop().await?;
    }

    let sweeps = sqlx::query(
        "SELECT sweep, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                (array_agg(duration_ms ORDER BY id))[1], sum(rows_changed)::bigint
         FROM sweeper_runs WHERE replica = $1
         GROUP BY sweep ORDER BY min(id)",
    )
    .bind(&replica)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Sweep {
        name: r.get(0),
        median_ms: r.get(1),
        first_ms: r.get(2),
        rows: r.get(3),
    })
    .collect();
    Ok(Phase {
        ticks,
        starts,
        sweeps,
        tasks,
    })
}

/// Runs `paddock sweep --ticks n` and reads the time of each tick from its output
/// (`tick <ms>` lines).
async fn ticks(
    cfg: &super::harness::ServerConfig,
    replica: &str,
    n: u64,
) -> anyhow::Result<Vec<Duration>> {
    let out = tokio::process::Command::new(&cfg.bin)
        .args(["sweep", "--ticks", &n.to_string(), "--replica", replica])
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} sweep", cfg.bin.display()))?;
    if !out.status.success() {
        bail!(
            "paddock sweep failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ticks: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|ms| ms.trim().parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    if ticks.len() as u64 != n {
        bail!("paddock sweep printed {} ticks, not {n}", ticks.len());
    }
    Ok(ticks)
}
