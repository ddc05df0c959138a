//! `bench fleet`: what a fleet of idle daemons costs one server.
//!
//! For each N of `--daemons` (a fresh server, in a process of its own, each time): N runtimes with
//! one agent each; every simulated daemon holds a long-poll claim (`wait_ms` 30000; the first one
//! a random 1–30 s, as daemons that joined at different moments) on a keep-alive
//! connection of its own, and heartbeats its runtime every `heartbeat_interval` over a shared pool
//! of connections; a trickle of tasks goes to random agents, each completed by the daemon that got
//! it. After the fleet is up and a warm-up, for `--seconds`: the server's resident memory (peak),
//! its PostgreSQL connections (`pg_stat_activity` on the scratch database), heartbeat latency, and
//! wake-up latency (enqueue answered → the waiting claim answered). The first row, N = 0, is the
//! same server with no fleet: the baseline the per-daemon memory is counted from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::harness::{BenchDb, Conn, Server, Services, Workspace, settings};
use super::stats::{Latencies, Summary, progress};

const RSS_TARGET_MB: f64 = 300.0;
const WAKE_P99_TARGET_MS: f64 = 50.0;

#[derive(Args, Debug)]
pub struct FleetArgs {
    /// Fleet sizes, each on a fresh server (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 10000])]
    daemons: Vec<u64>,
    /// How long each fleet is measured, after it is up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Tasks per second enqueued to random agents while measuring.
    #[arg(long, default_value_t = 20)]
    trickle: u64,
    /// Heartbeat interval the server tells the daemons, in seconds.
    #[arg(long, default_value_t = 15)]
    heartbeat_secs: u64,
    /// Connections the fleet's heartbeats share.
    #[arg(long, default_value_t = 32)]
    heartbeat_connections: usize,
}

struct Row {
    daemons: u64,
    rss_mb: f64,
    pg_connections: i64,
    heartbeat: Latencies,
    wake: Latencies,
    woken: u64,
}

pub async fn run(services: &Services, db: &BenchDb, args: &FleetArgs) -> anyhow::Result<Summary> {
    raise_open_files();
    let mut rows = Vec::new();
    for &n in std::iter::once(&0).chain(args.daemons.iter()) {
        rows.push(fleet(services, db, args, n).await?);
    }
    let base = rows[0].rss_mb;
    let mut s = Summary::new(format!(
        "fleet: idle daemons holding long polls and heartbeating every {} s, {} tasks/s trickle, {} s measured each",
        args.heartbeat_secs, args.trickle, args.seconds
    ));
    s.line(format!(
        "  {:>7}  {:>9}  {:>12}  {:>8}  {:>16}  {:>18}",
        "daemons", "RSS MB", "KB / daemon", "PG conns", "heartbeat p99 ms", "wake-up p50/p99 ms"
    ));
    for r in &rows {
        let per = if r.daemons > 0 {
            (r.rss_mb - base) * 1024.0 / r.daemons as f64
        } else {
            0.0
        };
        s.line(format!(
            "  {:>7}  {:>9.1}  {:>12.1}  {:>8}  {:>16.1}  {:>8.1} / {:>7.1}   ({} woken)",
            r.daemons,
            r.rss_mb,
            per,
            r.pg_connections,
            r.heartbeat.ms(0.99),
            r.wake.ms(0.5),
            r.wake.ms(0.99),
            r.woken
        ));
        let k = format!("n{}", r.daemons);
        s.num(&format!("{k}_rss_mb"), r.rss_mb);
        s.num(&format!("{k}_kb_per_daemon"), per);
        s.int(&format!("{k}_pg_connections"), r.pg_connections as u64);
        s.num(&format!("{k}_heartbeat_p99_ms"), r.heartbeat.ms(0.99));
        s.num(&format!("{k}_wake_p50_ms"), r.wake.ms(0.5));
        s.num(&format!("{k}_wake_p99_ms"), r.wake.ms(0.99));
    }
    if let Some(r) = rows.iter().find(|r| r.daemons == 10_000) {
        s.line(format!(
            "  targets at 10k: RSS < {RSS_TARGET_MB} MB ({}), wake-up p99 < {WAKE_P99_TARGET_MS} ms ({}), PG connections independent of N",
            if r.rss_mb < RSS_TARGET_MB { "met" } else { "missed" },
            if r.wake.ms(0.99) < WAKE_P99_TARGET_MS { "met" } else { "missed" },
        ));
    }
    Ok(s)
}

/// Lets the bench hold one connection per simulated daemon.
fn raise_open_files() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("bench: could not raise the open-file limit: {e}");
    }
}

#[derive(Deserialize)]
struct ClaimReply {
    tasks: Vec<Claimed>,
}

#[derive(Deserialize)]
struct Claimed {
    task_id: Uuid,
    attempt_id: Uuid,
}

async fn fleet(services: &Services, db: &BenchDb, args: &FleetArgs, n: u64) -> anyhow::Result<Row> {
    let mut cfg = settings(services, db);
    cfg.env.push((
        "PADDOCK_HEARTBEAT_INTERVAL".into(),
        format!("{}s", args.heartbeat_secs),
    ));
    cfg.env.push((
        "PADDOCK_STALE_THRESHOLD".into(),
        format!("{}s", args.heartbeat_secs * 10 + 60),
    ));
    let server = Server::start(cfg).await?;
    let pid = server.pid().context("the server has no pid")?;
    let ws = server.workspace().await?;
    let (runtimes, agents) = register(&server, &ws, n).await?;

    let stop = tokio_util::sync::CancellationToken::new();
    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let wake = Arc::new(Mutex::new(Latencies::default()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The daemons' long polls, each on a connection of its own.
    let bar = progress(Some(n), "long polls");
    let mut daemons = tokio::task::JoinSet::new();
    for &rt in &runtimes {
        let mut conn = Conn::open(server.addr, &ws.daemon).await?;
        let (stop, sent, wake, measuring) =
            (stop.clone(), sent.clone(), wake.clone(), measuring.clone());
        daemons.spawn(async move {
            let claim = format!(r#"{{"runtime_id":"{rt}","max_tasks":1,"wait_ms":30000}}"#);
            // The fleet's daemons joined at different moments: the first poll of each waits a
            // random part of 30 s, so their polls do not all end at once 30 s from now.
            let first = format!(
                r#"{{"runtime_id":"{rt}","max_tasks":1,"wait_ms":{}}}"#,
                rand::random_range(1000..=30000)
            );
            let mut body = first;
            loop {
                let answer = tokio::select! {
                    _ = stop.cancelled() => return anyhow::Ok(()),
                    a = conn.post("/api/v1/daemon/claim", std::mem::replace(&mut body, claim.clone())) => a?,
                };
                let got = Instant::now();
                let reply: ClaimReply = serde_json::from_slice(&answer)?;
                for t in reply.tasks {
                    let at = sent.lock().expect("sent").remove(&t.task_id);
                    if let Some(at) = at
                        && measuring.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        wake.lock().expect("wake").record(got.saturating_duration_since(at));
                    }
                    let body = json!({ "updates": [
                        { "task_id": t.task_id, "attempt_id": t.attempt_id, "action": "start" },
                        { "task_id": t.task_id, "attempt_id": t.attempt_id, "action": "complete", "result": {} },
                    ]});
                    conn.post("/api/v1/daemon/report", body.to_string()).await?;
                }
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Heartbeats: every runtime once per interval, spread over the shared connections.
    let hb = Arc::new(Mutex::new(Latencies::default()));
    let mut beats = tokio::task::JoinSet::new();
    if n > 0 {
        let per_conn = runtimes.len().div_ceil(args.heartbeat_connections);
        for chunk in runtimes.chunks(per_conn.max(1)) {
            let mut conn = Conn::open(server.addr, &ws.daemon).await?;
            let chunk = chunk.to_vec();
            let (stop, hb, measuring) = (stop.clone(), hb.clone(), measuring.clone());
            let every = Duration::from_secs(args.heartbeat_secs) / chunk.len().max(1) as u32;
            beats.spawn(async move {
                let mut tick = tokio::time::interval(every);
                for rt in chunk.iter().cycle() {
                    tokio::select! {
                        _ = stop.cancelled() => return anyhow::Ok(()),
                        _ = tick.tick() => {}
                    }
                    let t = Instant::now();
                    conn.post(
                        "/api/v1/daemon/heartbeat",
                        format!(r#"{{"runtime_ids":["{rt}"]}}"#),
                    )
                    .await?;
                    if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                        hb.lock().expect("hb").record(t.elapsed());
                    }
                }
                Ok(())
            });
        }
    }

    // Warm-up: every long poll waiting, one heartbeat round.
    tokio::time::sleep(Duration::from_secs(args.heartbeat_secs.min(10) + 2)).await;
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    let mut peak = rss_mb(pid)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / args.trickle.clamp(1, 1000)));
    let mut i = 0u64;
    let mut pg_connections = 0;
    let mut last_sample = Instant::now();
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        if n > 0 && args.trickle > 0 {
            let agent = agents[(rand::random::<u64>() % n) as usize];
            let t: Value = server
                .api
                .post(
                    "/api/v1/tasks",
                    &ws.member,
                    &json!({ "agent_id": agent, "payload": { "i": i } }),
                )
                .await?;
            let id: Uuid = serde_json::from_value(t["id"].clone())?;
            sent.lock().expect("sent").insert(id, Instant::now());
            i += 1;
        }
        if last_sample.elapsed() > Duration::from_millis(250) {
            peak = peak.max(rss_mb(pid)?);
            pg_connections = pg_connections.max(pg_backends(db).await?);
            last_sample = Instant::now();
        }
    }
    peak = peak.max(rss_mb(pid)?);
    stop.cancel();
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    server.stop().await?;
    daemons.abort_all();
    beats.abort_all();
    let woken = wake.lock().expect("wake").count();
    ensure!(
        n == 0 || args.trickle == 0 || woken > 0,
        "no waiting claim was woken by the trickle"
    );
    let heartbeat = hb.lock().expect("hb").clone();
    let wake = wake.lock().expect("wake").clone();
    Ok(Row {
        daemons: n,
        rss_mb: peak,
        pg_connections,
        heartbeat,
        wake,
        woken,
    })
}

/// N runtimes with one agent each, registered 32 at a time.
async fn register(
    server: &Server,
    ws: &Workspace,
    n: u64,
) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let bar = progress(Some(n), "runtimes and agents");
    let mut made = futures::stream::iter(0..n)
        .map(|d| async move {
            let reg: Value = server
                .api
                .post(
                    "/api/v1/daemon/register",
                    &ws.daemon,
                    &json!({ "daemon_id": format!("fleet-{d}"), "provider": "bench" }),
                )
                .await?;
            let rt: Uuid = serde_json::from_value(reg["runtime_id"].clone())?;
            let agent: Value = server
                .api
                .post(
                    "/api/v1/agents",
                    &ws.member,
                    &json!({ "name": format!("fleet-{d}"), "runtime_id": rt, "definition": {} }),
                )
                .await?;
            let agent: Uuid = serde_json::from_value(agent["id"].clone())?;
            anyhow::Ok((rt, agent))
        })
        .buffer_unordered(32);
    let (mut runtimes, mut agents) = (Vec::new(), Vec::new());
    while let Some(r) = made.next().await {
        let (rt, agent) = r?;
        runtimes.push(rt);
        agents.push(agent);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((runtimes, agents))
}

/// Backends connected to the scratch database.
async fn pg_backends(db: &BenchDb) -> anyhow::Result<i64> {
    let pool = db.pool(1).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n)
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    Ok(super::daemon::status_kb(pid, "VmRSS")? as f64 / 1024.0)
}
