//! `bench heartbeat`: R registered runtimes heartbeating over HTTP as fast as the load allows.
//!
//! A pool of C concurrent clients (over keep-alive connections) sends
//! `POST /daemon/heartbeat {runtime_ids: [one id]}` (`--runtimes-per-call` ids), taking the runtimes
//! in turn. The first second warms up and is not counted; then S seconds are measured. The server
//! is stopped and the baseline runs `UPDATE runtimes SET last_seen_at = now() WHERE id = $1` on C
//! connections for as long.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::baseline::{self, Timed};
use super::harness::{Api, BenchDb, Conn, Server, Services, run_clients, settings};
use super::stats::{Latencies, Summary, per_sec, progress, ratio};

/// Not counted: connections open, caches and plans warm up.
const WARMUP: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    /// Registered runtimes to heartbeat for.
    #[arg(long)]
    runtimes: u64,
    /// Measured seconds (after one second of warm-up), for Paddock and again for the baseline.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Concurrent clients (and baseline connections).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=90))]
    clients: u64,
    /// Runtimes named in each heartbeat call, as a daemon with that many providers sends them
    /// (heartbeats/s counts runtimes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runtimes_per_call: u64,
    /// Concurrent `POST /daemon/register` while setting up.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
}

pub async fn run(
    services: &Services,
    db: &BenchDb,
    args: &HeartbeatArgs,
) -> anyhow::Result<Summary> {
    ensure!(args.runtimes > 0, "--runtimes must be at least 1");
    let measure = Duration::from_secs(args.seconds);
    let clients = args.clients as usize;
    let server = Server::start(settings(services, db)).await?;
    let ws = server.workspace().await?;
    let runtimes = register(&server.api, &ws.daemon, args).await?;
    let per_call = args.runtimes_per_call as usize;
    let paddock = heartbeats(
        server.addr,
        &ws.daemon,
        &runtimes,
        clients,
        per_call,
        measure,
    )
    .await?;
    server.stop().await?;

    let pool = db.pool(args.clients as u32).await?;
    let base = baseline::heartbeat(&pool, &runtimes, clients, WARMUP, measure).await?;
    pool.close().await;

    let hps = per_sec(paddock.count, paddock.elapsed);
    let bps = per_sec(base.count, base.elapsed);
    let mut s = Summary::new(format!(
        "heartbeat: {} runtimes, {} clients, {} runtime(s) per call, {} s measured (+1 s warm-up)",
        args.runtimes, args.clients, args.runtimes_per_call, args.seconds
    ));
    s.line(format!(
        "  paddock   {:>9.0} heartbeats/s  p50 {:.2} ms  p99 {:.2} ms  ({} heartbeats)",
        hps,
        paddock.latency.ms(0.5),
        paddock.latency.ms(0.99),
        paddock.count
    ));
    s.line(format!(
        "  baseline  {:>9.0} updates/s     p50 {:.2} ms  p99 {:.2} ms  (UPDATE runtimes … WHERE id = $1)",
        bps,
        base.latency.ms(0.5),
        base.latency.ms(0.99)
    ));
    s.line(format!("  ratio     {:>9.2} × baseline", ratio(hps, bps)));
    s.num("heartbeats_per_sec", hps);
    s.num("baseline_per_sec", bps);
    s.num("ratio", ratio(hps, bps));
    s.num("p50_ms", paddock.latency.ms(0.5));
    s.num("p99_ms", paddock.latency.ms(0.99));
    s.num("baseline_p50_ms", base.latency.ms(0.5));
    s.num("baseline_p99_ms", base.latency.ms(0.99));
    s.int("runtimes", args.runtimes);
    s.int("clients", args.clients);
    s.int("runtimes_per_call", args.runtimes_per_call);
    s.int("seconds", args.seconds);
    Ok(s)
}

/// Registers R runtimes over HTTP (`register_concurrency` at a time); returns their ids.
async fn register(api: &Api, token: &str, args: &HeartbeatArgs) -> anyhow::Result<Vec<Uuid>> {
    let bar = progress(Some(args.runtimes), "register");
    let mut ids = Vec::with_capacity(args.runtimes as usize);
    let mut calls = futures::stream::iter(0..args.runtimes)
        .map(|i| async move {
            let body = json!({ "daemon_id": format!("bench-daemon-{i}"), "provider": "bench" });
            let reg: Value = api.post("/api/v1/daemon/register", token, &body).await?;
            serde_json::from_value::<Uuid>(reg["runtime_id"].clone())
                .context("register answered no runtime_id")
        })
        .buffer_unordered(args.register_concurrency.max(1));
    while let Some(id) = calls.next().await {
        ids.push(id?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ids)
}

#[derive(Deserialize)]
struct Beat {
    runtimes: Vec<BeatState>,
}

#[derive(Deserialize)]
struct BeatState {
    status: String,
}

/// C clients, each on its own keep-alive connection, heartbeating `per_call` runtimes per call, runtimes
/// taken in turn, for warm-up + `measure`.
async fn heartbeats(
    addr: std::net::SocketAddr,
    token: &str,
    runtimes: &[Uuid],
    clients: usize,
    per_call: usize,
    measure: Duration,
) -> anyhow::Result<Timed> {
    let runtimes: Arc<[Uuid]> = runtimes.into();
    let next = Arc::new(AtomicUsize::new(0));
    let counted_from = Instant::now() + WARMUP;
    let end = counted_from + measure;
    let bar = progress(None, "heartbeat");
    let workers = (0..clients).map(|_| {
        let (runtimes, next, bar, token) = (
            runtimes.clone(),
            next.clone(),
            bar.clone(),
            token.to_owned(),
        );
        async move {
            let mut conn = Conn::open(addr, &token).await?;
            let mut lat = Latencies::default();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let first = next.fetch_add(per_call, Ordering::Relaxed);
                let ids: Vec<String> = (first..first + per_call)
                    .map(|i| format!(r#""{}""#, runtimes[i % runtimes.len()]))
                    .collect();
                let id = runtimes[first % runtimes.len()];
                let body = format!(r#"{{"runtime_ids":[{}]}}"#, ids.join(","));
                let answer = conn.post("/api/v1/daemon/heartbeat", body).await?;
                let reply: Beat = serde_json::from_slice(&answer)
                    .with_context(|| format!("heartbeat of runtime {id}: unexpected answer"))?;
                if let Some(r) = reply.runtimes.iter().find(|r| r.status != "online") {
                    bail!("heartbeat of runtime {id} answered status {:?}", r.status);
                }
                if t >= counted_from {
                    lat.record_n(t.elapsed(), per_call as u64);
                    bar.inc(per_call as u64);
                }
            }
            anyhow::Ok(lat)
        }
    });
    let lats = run_clients(workers).await?;
    bar.finish_and_clear();
    Ok(Timed::from_workers(&lats, measure))
}
