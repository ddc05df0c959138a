//! `paddock bench`: load scenarios that measure a real Paddock server — `paddock serve` started as
//! a process of its own on a loopback port against a scratch database — next to a same-run baseline
//! of the equivalent plain SQL straight to Postgres. The scenarios drive the server over HTTP only.
//! BENCHMARKS.md records the figures and how to read them.
//!
//! * `drain` — enqueue N tasks, then D simulated daemons claim, start and complete them over HTTP;
//!   baseline: the same claim/start/complete SQL with the same concurrency.
//! * `enqueue` — N tasks in batches of B through `POST /tasks/batch`; peer: graphile-worker's
//!   `add_jobs` of N jobs in batches of B on the same server; baseline: the same rows inserted
//!   with one plain `INSERT … SELECT FROM unnest` per batch.
//! * `fleet` — N idle daemons, each holding a long-poll claim and heartbeating, and a trickle of
//!   tasks: the server's memory and PostgreSQL connections beside the same server with none, with
//!   heartbeat and wake-up latency. The daemons run in worker processes (`fleet-worker`), and a
//!   fleet larger than one process's open-file limit is spread over server replicas.
//! * `heartbeat` — R runtimes heartbeating over HTTP as fast as the load allows; baseline: one
//!   `UPDATE runtimes SET last_seen_at` per heartbeat.
//! * `transcript` — A attempts posting batches of transcript messages while W sockets watch;
//!   baseline: the same rows inserted with one `INSERT … SELECT FROM unnest` per batch.
//! * `daemon` — an idle `paddock daemon` with one runtime per provider: its CPU and memory beside
//!   the budget it is held to.
//! * `ws` — S event-stream sockets over two replicas while tasks are enqueued at R per second:
//!   commit → socket latency, on the writing replica and through the cross-replica feed.
//! * `slow-readers` — W event-stream sockets that never read while R progress reports of S bytes go
//!   out: the server memory they add and the API's p99 beside the same reports with no socket.
//! * `sweep` — one sweeper tick (`paddock sweep`) and server start-up, with and without H rows of
//!   task history.
//!
//! Each run creates `paddock_bench_<random>` on the `DATABASE_URL` server and drops it at the end
//! (also on error or Ctrl-C); Redis keys go under a prefix of their own and expire by their TTL.

mod baseline;
mod daemon;
mod drain;
mod enqueue;
mod fleet;
mod harness;
mod heartbeat;
mod http;
mod peer;
mod slow_readers;
mod stats;
mod sweep;
mod sweep_seed;
mod transcript;
mod ws_fanout;

use anyhow::Context;
use clap::{Args, Subcommand};

use harness::{BenchDb, Services};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// PostgreSQL server where the bench may create (and drop) a scratch database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,

    /// Redis for the liveness store. Unset: the in-process store.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    redis_url: Option<String>,

    /// Print one JSON object with the figures as the last line of stdout.
    #[arg(long, global = true)]
    json: bool,

    /// The `paddock` binary whose server is measured (default: this one). Lets one bench client
    /// measure two builds in turn.
    #[arg(long, env = "PADDOCK_BENCH_SERVER_BIN", global = true)]
    server_bin: Option<std::path::PathBuf>,

    /// The peers directory whose `run.sh` runs graphile-worker on the same PostgreSQL server
    /// beside `drain` and `enqueue` (skipped, with a note, when it has no `run.sh`).
    #[arg(
        long,
        env = "PADDOCK_BENCH_PEERS",
        default_value = "../shared/peers",
        global = true
    )]
    peers: std::path::PathBuf,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Tasks/s through enqueue → claim → start → complete, and enqueue→claim latency.
    Drain(drain::DrainArgs),
    /// Tasks/s through `POST /tasks/batch`, beside graphile-worker's `add_jobs` in the same run.
    Enqueue(enqueue::EnqueueArgs),
    /// Server memory, PostgreSQL connections, heartbeat and wake-up latency with N idle daemons.
    Fleet(fleet::FleetArgs),
    /// Heartbeats/s and their latency with many registered runtimes.
    Heartbeat(heartbeat::HeartbeatArgs),
    /// Sweeper tick and start-up time with and without a large task history.
    Sweep(sweep::SweepArgs),
    /// CPU and memory of an idle `paddock daemon` with one runtime per provider.
    Daemon(daemon::DaemonArgs),
    /// Transcript messages/s posted by running attempts, and their latency to live WebSocket watchers.
    Transcript(transcript::TranscriptArgs),
    /// Commit → socket latency of events fanned out to WebSocket clients over two replicas.
    Ws(ws_fanout::WsArgs),
    /// Server memory and API latency while WebSocket clients that never read are sent events.
    SlowReaders(slow_readers::SlowReadersArgs),
    /// The simulated daemons of one replica in `bench fleet` (started by it, not by hand).
    #[command(hide = true)]
    FleetWorker(fleet::WorkerArgs),
}

/// Runs one scenario and prints its summary (and, with `--json`, its JSON line).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Scenario::FleetWorker(a) = &args.scenario {
        return fleet::worker(a).await;
    }
    let database_url = args.database_url.clone().context(
        "bench needs DATABASE_URL: a PostgreSQL server where it may create a database \
         (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
    )?;
    let server_bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("cannot find the paddock binary")?,
    };
    let services = Services {
        database_url,
        redis_url: args.redis_url.clone(),
        server_bin,
        peers_dir: Some(args.peers.clone()),
    };
    let db = BenchDb::create(&services.database_url).await?;
    eprintln!(
        "bench: scratch database {} ({} liveness store)",
        db.name,
        if services.redis_url.is_some() {
            "Redis"
        } else {
            "in-process"
        }
    );
    let scenario = async {
        match &args.scenario {
            Scenario::Drain(a) => drain::run(&services, &db, a).await,
            Scenario::Enqueue(a) => enqueue::run(&services, &db, a).await,
            Scenario::Fleet(a) => fleet::run(&services, &db, a).await,
            Scenario::Heartbeat(a) => heartbeat::run(&services, &db, a).await,
            Scenario::Sweep(a) => sweep::run(&services, &db, a).await,
            Scenario::Transcript(a) => transcript::run(&services, &db, a).await,
            Scenario::Daemon(a) => daemon::run(&services, &db, a).await,
            Scenario::Ws(a) => ws_fanout::run(&services, &db, a).await,
            Scenario::SlowReaders(a) => slow_readers::run(&services, &db, a).await,
            Scenario::FleetWorker(_) => unreachable!("run before the scratch database"),
        }
    };
    let result = tokio::select! {
        r = scenario => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let dropped = db.drop_now().await;
    let summary = result?;
    dropped?;
    summary.print(args.json);
    Ok(())
}

/// How a bench's batch calls ask for their answers, for its heading.
fn answers(full: bool) -> &'static str {
    if full {
        "answers in full"
    } else {
        "answers minimal (Prefer: return=minimal)"
    }
}
