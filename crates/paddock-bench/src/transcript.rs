//! `bench transcript`: A running attempts posting their transcripts over HTTP while W WebSocket
//! watchers follow them live.
//!
//! Set-up (`setup.rs`): a workspace, one runtime (`max_concurrency` A) with one agent
//! (`max_concurrent_tasks` A), A tasks enqueued, claimed and started, so that A attempts run. Then
//! W watchers open `GET /tasks/{id}/messages/ws` (watcher i follows attempt i % A) and the upgrades
//! complete before anything is posted.
//!
//! Measured (`post.rs`, `watch.rs`): A posters, one per attempt on its own keep-alive connection,
//! post `POST /tasks/{id}/messages` with B messages of 100–200 bytes and increasing seqs back to
//! back for 1 s of warm-up and then S s. **messages/s** = messages accepted by the posts started in
//! the S s / S. Each watcher records, for every frame, its arrival time − the message's `at` (the
//! server's insert time), for the messages whose `at` falls in the S s; once the posters have
//! stopped, each watcher waits for every message of its attempt and counts those lost, duplicated
//! or out of order.
//!
//! Baseline (`sql.rs`): the server stopped, the same rows inserted with
//! `INSERT INTO task_messages … SELECT … FROM unnest(…)`, B rows a statement, on
//! min(A, the server's pool) connections for as long.

mod post;
mod setup;
mod sql;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::harness::{BenchDb, Server, Services, run_clients, settings};
use crate::stats::{Summary, per_sec, progress, ratio};

/// Not counted: connections open, caches and plans warm up.
const WARMUP: Duration = Duration::from_secs(1);
/// `paddock serve`'s default Postgres pool (`PADDOCK_DB_POOL_SIZE`).
const SERVER_POOL: u64 = 32;
/// The targets on the reference machine.
const TARGET_PER_SEC: f64 = 50_000.0;
const TARGET_P99_MS: f64 = 100.0;

#[derive(Args, Debug)]
pub struct TranscriptArgs {
    /// Running attempts, each with one poster on its own keep-alive connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    attempts: u64,
    /// WebSocket watchers (`GET /tasks/{id}/messages/ws`); watcher i follows attempt i % A.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10000))]
    watchers: u64,
    /// Messages per `POST /tasks/{id}/messages` (and per baseline INSERT), 100–200 bytes each.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
    batch: u64,
    /// Measured seconds (after one second of warm-up), for Paddock and again for the baseline.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Baseline connections. 0: min(A, the server's Postgres pool — `PADDOCK_DB_POOL_SIZE`, 32 by
    /// default), as many inserts at once as the server can run.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=90))]
    baseline_connections: u64,
}

pub async fn run(
    services: &Services,
    db: &BenchDb,
    args: &TranscriptArgs,
) -> anyhow::Result<Summary> {
    let n = args.attempts as usize;
    let measure = Duration::from_secs(args.seconds);
    let mut cfg = settings(services, db);
    if std::env::var_os("PADDOCK_TRANSCRIPT_MAX_BYTES").is_none() {
        // 8 MiB an attempt would cut a long run short (at 500 messages/s an attempt, ~110 s); the
        // cap is checked by the same statement whatever its value.
        cfg.env
            .push(("PADDOCK_TRANSCRIPT_MAX_BYTES".into(), "4096MiB".into()));
    }
    let server = Server::start(cfg).await?;
    let running = setup::running(&server, args.attempts).await?;
    let beat = setup::keep_online(
        server.api.clone(),
        running.ws.daemon.clone(),
        running.runtime,
    );
    let attempts = running.attempts.clone();

    // The watchers, all connected before the first post.
    let bar = progress(Some(args.watchers), "connect");
    let mut sockets = Vec::with_capacity(args.watchers as usize);
    for chunk in (0..args.watchers as usize).collect::<Vec<_>>().chunks(16) {
        let opened = futures::future::try_join_all(
            chunk
                .iter()
                .map(|&i| watch::connect(server.addr, &running.ws.member, &attempts[i % n], None)),
        )
        .await?;
        bar.inc(opened.len() as u64);
        sockets.extend(chunk.iter().map(|&i| i % n).zip(opened));
    }
    bar.finish_and_clear();

    let sampler_pool = db.pool(1).await?;
    let (stop_sampler, sampler_stop) = tokio::sync::oneshot::channel();
    let sampler = sql::oldest_transactions(sampler_pool.clone(), sampler_stop);

    let posted: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let wall0 = chrono::Utc::now();
    let bar = progress(None, "transcript");
    let post_shared = Arc::new(post::Shared {
        addr: server.addr,
        token: running.ws.daemon.clone(),
        contents: post::contents(args.batch as usize).into(),
        posted: posted.clone(),
        counted_from: t0 + WARMUP,
        end: t0 + WARMUP + measure,
        bar: bar.clone(),
    });
    let watch_shared = Arc::new(watch::Shared {
        addr: server.addr,
        token: running.ws.member.clone(),
        posted: posted.clone(),
        window: (wall0 + WARMUP, wall0 + WARMUP + measure),
    });
    let followers: Vec<_> = sockets
        .into_iter()
        .map(|(idx, socket)| {
            let a = attempts[idx].clone();
            watch::watch(watch_shared.clone(), idx, a, socket, done_rx.clone())
        })
        .collect();
    let watchers = tokio::spawn(run_clients(followers));
    let posts = run_clients(
        attempts
            .iter()
            .enumerate()
            .map(|(idx, a)| post::poster(post_shared.clone(), idx, a.clone())),
    )
    .await;
    let posting_ended = Instant::now();
    let _ = done_tx.send(true);
    let posts = match posts {
        Ok(p) => p,
        Err(e) => {
            watchers.abort();
            return Err(e);
        }
    };
    let watched = watchers.await.context("the watchers panicked")??;
    bar.finish_and_clear();
    let _ = stop_sampler.send(());
    let oldest = sampler.await.context("the sampler panicked")??;
    sampler_pool.close().await;
    beat.abort();
    server.stop().await?;

    let paddock = crate::baseline::Timed::from_workers(&posts, measure);
    let mut frames = watch::Watched::default();
    for w in &watched {
        frames.merge(w);
    }
    let tail = frames
        .last_frame
        .map(|l| l.saturating_duration_since(posting_ended))
        .unwrap_or_default();

    let server_pool = std::env::var("PADDOCK_DB_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVER_POOL);
    let connections = match args.baseline_connections {
        0 => args.attempts.min(server_pool),
        c => c.min(args.attempts),
    } as usize;
    let first_seq: Vec<u64> = posted.iter().map(|p| p.load(Ordering::Acquire)).collect();
    let pool = db.pool(connections as u32).await?;
    let base = sql::insert(
        &pool,
        &attempts,
        &first_seq,
        connections,
        &post_shared.contents,
        (WARMUP, measure),
    )
    .await?;
    pool.close().await;

    let mps = per_sec(paddock.count, paddock.elapsed);
    let bps = per_sec(base.count, base.elapsed);
    let (p50, p99) = (frames.latency.ms(0.5), frames.latency.ms(0.99));
    let rate_met = mps >= TARGET_PER_SEC;
    let p99_met = frames.latency.count() > 0 && p99 < TARGET_P99_MS;
    let mut s = Summary::new(format!(
        "transcript: {} attempts, {} watchers, batch {}, {} s measured (+1 s warm-up)",
        args.attempts, args.watchers, args.batch, args.seconds
    ));
    s.line(format!(
        "  paddock    {:>9.0} messages/s  post p50 {:.2} ms  p99 {:.2} ms  ({} messages in {} posts)",
        mps,
        paddock.latency.ms(0.5),
        paddock.latency.ms(0.99),
        paddock.count,
        paddock.count / args.batch
    ));
    s.line(format!(
        "  baseline   {:>9.0} messages/s  insert p50 {:.2} ms  p99 {:.2} ms  (INSERT … SELECT FROM unnest, {} connections)",
        bps,
        base.latency.ms(0.5),
        base.latency.ms(0.99),
        connections
    ));
    s.line(format!("  ratio      {:>9.2} × baseline", ratio(mps, bps)));
    s.line(format!(
        "  at→socket  p50 {p50:.1} ms  p99 {p99:.1} ms  max {:.1} ms  ({} frames of messages stored in the measured seconds)",
        frames.latency.ms(1.0),
        frames.latency.count()
    ));
    let by_second: Vec<(f64, f64)> = frames
        .by_second
        .iter()
        .map(|&(n, sum, max)| (sum as f64 / n.max(1) as f64 / 1000.0, max as f64 / 1000.0))
        .collect();
    s.line(format!(
        "  by second  mean/max ms of the messages stored in each measured second: {}",
        by_second
            .iter()
            .map(|(mean, max)| format!("{mean:.0}/{max:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    s.line(format!(
        "  frames     {} received of {} expected: lost {}, duplicates {}, out of order {}; reconnects {} (resent {}); last frame {:.0} ms after the last post",
        frames.distinct,
        frames.expected,
        frames.lost(),
        frames.duplicates,
        frames.out_of_order,
        frames.reconnects,
        frames.resent,
        tail.as_secs_f64() * 1000.0
    ));
    if oldest.secs >= 1.0 {
        s.line(format!(
            "  note       a transaction in database {:?} ran for {:.1} s during the run: the feed sends only what committed below the server's oldest running transaction, so frames waited for it",
            oldest.database, oldest.secs
        ));
    }
    s.line(format!(
        "  targets    ≥ {TARGET_PER_SEC:.0} messages/s: {}; at→socket p99 < {TARGET_P99_MS:.0} ms: {}",
        if rate_met { "met" } else { "NOT met" },
        if p99_met { "met" } else { "NOT met" }
    ));
    s.num("messages_per_sec", mps);
    s.num("baseline_messages_per_sec", bps);
    s.num("ratio", ratio(mps, bps));
    s.num("p50_ms", p50);
    s.num("p99_ms", p99);
    s.num("max_ms", frames.latency.ms(1.0));
    s.num("post_p50_ms", paddock.latency.ms(0.5));
    s.num("post_p99_ms", paddock.latency.ms(0.99));
    s.num("baseline_p50_ms", base.latency.ms(0.5));
    s.num("baseline_p99_ms", base.latency.ms(0.99));
    s.int("messages", paddock.count);
    s.int("baseline_messages", base.count);
    s.int("frames_expected", frames.expected);
    s.int("frames_received", frames.distinct);
    s.int("frames_total", frames.frames);
    s.int("lost", frames.lost());
    s.int("duplicates", frames.duplicates);
    s.int("out_of_order", frames.out_of_order);
    s.int("reconnects", frames.reconnects);
    s.num("tail_ms", tail.as_secs_f64() * 1000.0);
    s.num("oldest_other_xact_s", oldest.secs);
    let round = |v: f64| (v * 10.0).round() / 10.0;
    s.json.insert(
        "mean_ms_by_second".into(),
        by_second.iter().map(|b| round(b.0)).collect(),
    );
    s.json.insert(
        "max_ms_by_second".into(),
        by_second.iter().map(|b| round(b.1)).collect(),
    );
    s.int("attempts", args.attempts);
    s.int("watchers", args.watchers);
    s.int("batch", args.batch);
    s.int("seconds", args.seconds);
    s.int("baseline_connections", connections as u64);
    s.json
        .insert("rate_target_met".into(), Value::from(rate_met));
    s.json.insert("p99_target_met".into(), Value::from(p99_met));
    Ok(s)
}
