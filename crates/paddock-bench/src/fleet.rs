//! `bench fleet`: what a fleet of idle daemons costs one server.
//!
//! For each N of `--daemons` (a fresh server, in a process of its own, each time): N runtimes with
//! one agent each; the simulated daemons run in a fleet worker, a process of their own, so that
//! neither the server nor the bench holds more sockets than the open-file limit allows (a fleet
//! larger than that is spread over server replicas, each with its worker). Every daemon holds a
//! long-poll claim (`wait_ms` 30000; the first one
//! a random 1–30 s, as daemons that joined at different moments) on a keep-alive
//! connection of its own, and heartbeats its runtime every `heartbeat_interval` over a shared pool
//! of connections; a trickle of tasks goes to random agents, each completed by the daemon that got
//! it. After the fleet is up and a warm-up, for `--seconds`: the server's resident memory (peak),
//! its PostgreSQL connections (`pg_stat_activity` on the scratch database), heartbeat latency, and
//! wake-up latency (enqueue answered → the waiting claim answered). The first row, N = 0, is the
//! same server with no fleet: the baseline the per-daemon memory is counted from.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::harness::{BenchDb, Conn, Server, Services, Workspace, settings};
use super::http::Refused;
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
    /// Daemons that join the fleet per second, all replicas together: each opens its long poll and
    /// makes its first heartbeat, both of which need the database (a burst beyond what it answers
    /// within the pool's 5 s acquire timeout is answered 503, and retried).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    join_per_sec: u64,
    /// Daemon connections one process holds at most (default: its open-file limit, raised as far
    /// as the OS allows, less 1000). A larger fleet is spread over that many server replicas, each
    /// with a fleet worker process of its own; the RSS is then the replicas' sum.
    #[arg(long)]
    sockets_per_process: Option<u64>,
}

struct Row {
    daemons: u64,
    /// Server processes the fleet was spread over.
    replicas: u64,
    rss_mb: f64,
    pg_connections: i64,
    heartbeat: Latencies,
    wake: Latencies,
    woken: u64,
    /// Claims and heartbeats answered 503 and retried, setting-up included.
    unavailable: u64,
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
        "  {:>7}  {:>8}  {:>9}  {:>12}  {:>8}  {:>16}  {:>18}",
        "daemons",
        "replicas",
        "RSS MB",
        "KB / daemon",
        "PG conns",
        "heartbeat p99 ms",
        "wake-up p50/p99 ms"
    ));
    for r in &rows {
        // Counted from a server with no fleet, once per replica.
        let per = if r.daemons > 0 {
            (r.rss_mb - base * r.replicas as f64) * 1024.0 / r.daemons as f64
        } else {
            0.0
        };
        s.line(format!(
            "  {:>7}  {:>8}  {:>9.1}  {:>12.1}  {:>8}  {:>16.1}  {:>8.1} / {:>7.1}   ({} woken, {} calls answered 503)",
            r.daemons,
            r.replicas,
            r.rss_mb,
            per,
            r.pg_connections,
            r.heartbeat.ms(0.99),
            r.wake.ms(0.5),
            r.wake.ms(0.99),
            r.woken,
            r.unavailable
        ));
        let k = format!("n{}", r.daemons);
        s.int(&format!("{k}_replicas"), r.replicas);
        s.num(&format!("{k}_rss_mb"), r.rss_mb);
        s.num(&format!("{k}_kb_per_daemon"), per);
        s.int(&format!("{k}_pg_connections"), r.pg_connections as u64);
        s.num(&format!("{k}_heartbeat_p99_ms"), r.heartbeat.ms(0.99));
        s.num(&format!("{k}_wake_p50_ms"), r.wake.ms(0.5));
        s.num(&format!("{k}_wake_p99_ms"), r.wake.ms(0.99));
        s.int(&format!("{k}_answered_503"), r.unavailable);
    }
    if rows.iter().any(|r| r.replicas > 1) {
        s.line(format!(
            "  a fleet over several replicas: {} daemon connections per process at most (the open-file limit); RSS is the replicas' sum; their pools are shrunk to fit PostgreSQL's 100 connections; tasks are enqueued on the first replica, so most wake-ups cross replicas",
            args.sockets_per_process.unwrap_or_else(sockets_per_process)
        ));
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

/// Sockets one process may hold: its open-file limit (raised as far as the OS allows) less a
/// margin for everything else it opens.
fn sockets_per_process() -> u64 {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    soft.saturating_sub(1000).max(100)
}

/// Nanoseconds since the Unix epoch: the clock the bench and its fleet workers, processes of the
/// same machine, time a wake-up across.
fn unix_ns() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("a date within ±292 years")
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
    // One process here may hold only so many sockets: a fleet larger than that is spread over
    // replicas (each with a fleet worker of its own), as a deployment would be.
    let per_process = args.sockets_per_process.unwrap_or_else(sockets_per_process);
    let replicas = n.div_ceil(per_process).max(1);
    if replicas > 1 {
        // Pools that PostgreSQL's default max_connections (100) holds beside the bench: each
        // replica also keeps its event listener and sweeper connections.
        cfg.env.push((
            "PADDOCK_DB_POOL_SIZE".into(),
            (90 / replicas).saturating_sub(3).clamp(4, 32).to_string(),
        ));
    }
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(Server::start(cfg.clone()).await?);
    }
    let pids: Vec<u32> = servers
        .iter()
        .map(|s| s.pid().context("a server has no pid"))
        .collect::<anyhow::Result<_>>()?;
    let ws = servers[0].workspace().await?;
    let (runtimes, agents) = register(&servers[0], &ws, n).await?;

    // The daemons: each replica's share held by a fleet worker, a process of its own.
    let mut workers = Vec::new();
    if n > 0 {
        let share = runtimes.len().div_ceil(servers.len());
        let connections = args.heartbeat_connections.div_ceil(servers.len());
        let join_per_sec = args.join_per_sec.div_ceil(servers.len() as u64).max(10);
        let bar = progress(Some(n), "long polls");
        // The workers join their daemons at once, each at its share of the rate.
        workers = futures::future::try_join_all(servers.iter().zip(runtimes.chunks(share)).map(
            |(server, chunk)| async {
                let w = Worker::start(server, &ws, chunk, args, connections, join_per_sec).await?;
                bar.inc(chunk.len() as u64);
                anyhow::Ok(w)
            },
        ))
        .await?;
        bar.finish_and_clear();
    }

    // Warm-up: every long poll waiting, one heartbeat round.
    tokio::time::sleep(Duration::from_secs(args.heartbeat_secs.min(10) + 2)).await;
    for w in &mut workers {
        w.say("measure").await?;
    }
    let t0 = Instant::now();
    let rss = || -> anyhow::Result<f64> { pids.iter().map(|&p| rss_mb(p)).sum() };
    let mut peak = rss()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / args.trickle.clamp(1, 1000)));
    let mut sent: HashMap<Uuid, i64> = HashMap::new();
    let mut i = 0u64;
    let mut pg_connections = 0;
    let mut last_sample = Instant::now();
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        if n > 0 && args.trickle > 0 {
            let agent = agents[(rand::random::<u64>() % n) as usize];
            let t: Value = servers[0]
                .api
                .post(
                    "/api/v1/tasks",
                    &ws.member,
                    &json!({ "agent_id": agent, "payload": { "i": i } }),
                )
                .await?;
            let id: Uuid = serde_json::from_value(t["id"].clone())?;
            sent.insert(id, unix_ns());
            i += 1;
        }
        if last_sample.elapsed() > Duration::from_millis(250) {
            peak = peak.max(rss()?);
            pg_connections = pg_connections.max(pg_backends(db).await?);
            last_sample = Instant::now();
        }
    }
    peak = peak.max(rss()?);
    let (mut heartbeat, mut wake) = (Latencies::default(), Latencies::default());
    let mut unavailable = 0;
    for w in workers {
        let seen = w.finish().await?;
        unavailable += seen.unavailable;
        for us in seen.heartbeat_us {
            heartbeat.record(Duration::from_micros(us));
        }
        for (task, claimed_ns) in seen.claims {
            if let Some(at) = sent.get(&task) {
                wake.record(Duration::from_nanos(
                    u64::try_from(claimed_ns - at).unwrap_or(0),
                ));
            }
        }
    }
    for server in servers {
        server.stop().await?;
    }
    let woken = wake.count();
    ensure!(
        n == 0 || args.trickle == 0 || woken > 0,
        "no waiting claim was woken by the trickle"
    );
    Ok(Row {
        daemons: n,
        replicas,
        rss_mb: peak,
        pg_connections,
        heartbeat,
        wake,
        woken,
        unavailable,
    })
}

/// A fleet worker (`paddock bench fleet-worker`) as the bench drives it: started with its
/// runtimes, told when to measure, and read for what it saw.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// What a fleet worker saw while it measured.
#[derive(Serialize, Deserialize, Default)]
struct Seen {
    heartbeat_us: Vec<u64>,
    /// Each task a waiting claim was answered, with when (Unix ns).
    claims: Vec<(Uuid, i64)>,
    /// Claims and heartbeats answered 503 (and retried), from the start.
    unavailable: u64,
}

impl Worker {
    async fn start(
        server: &Server,
        ws: &Workspace,
        runtimes: &[Uuid],
        args: &FleetArgs,
        heartbeat_connections: usize,
        join_per_sec: u64,
    ) -> anyhow::Result<Self> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        // This binary's worker, whichever build's server is measured (`--server-bin`).
        let bench = std::env::current_exe().context("cannot find the paddock binary")?;
        let mut child = tokio::process::Command::new(bench)
            .args(["bench", "fleet-worker", "--addr"])
            .arg(server.addr.to_string())
            .arg("--heartbeat-secs")
            .arg(args.heartbeat_secs.to_string())
            .arg("--heartbeat-connections")
            .arg(heartbeat_connections.to_string())
            .arg("--join-per-sec")
            .arg(join_per_sec.to_string())
            .env("PADDOCK_BENCH_DAEMON_TOKEN", &ws.daemon)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a fleet worker")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let mut ids = String::with_capacity(37 * runtimes.len() + 3);
        for rt in runtimes {
            ids.push_str(&format!("{rt}\n"));
        }
        ids.push_str("go\n");
        stdin.write_all(ids.as_bytes()).await?;
        stdin.flush().await?;
        let mut stdout =
            tokio::io::BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let ready = tokio::time::timeout(Duration::from_secs(300), stdout.next_line())
            .await
            .context("a fleet worker did not open its long polls within 300 s")??;
        ensure!(
            ready.as_deref() == Some("ready"),
            "a fleet worker did not start: {ready:?}"
        );
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Stops the worker and reads what it saw.
    async fn finish(mut self) -> anyhow::Result<Seen> {
        self.say("stop").await?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .context("a fleet worker did not answer within 60 s")??
            .context("a fleet worker ended without its figures")?;
        let seen = serde_json::from_str(&line).context("a fleet worker's figures")?;
        let status = self.child.wait().await?;
        ensure!(status.success(), "a fleet worker exited with {status}");
        Ok(seen)
    }
}

/// `paddock bench fleet-worker`: the simulated daemons of one replica, run by `bench fleet`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The replica the daemons talk to.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// The daemons' token.
    #[arg(long, env = "PADDOCK_BENCH_DAEMON_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    heartbeat_secs: u64,
    #[arg(long)]
    heartbeat_connections: usize,
    /// This worker's daemons that join per second.
    #[arg(long)]
    join_per_sec: u64,
}

/// Runs the daemons: each holds a long poll on a connection of its own and completes what it
/// gets; every runtime heartbeats once per interval over shared connections. Reads its runtime
/// ids from stdin, one per line, up to `go`; prints `ready` once every long poll is open; then
/// reads `measure` (start recording) and `stop` (or the end of stdin); then prints what it saw as
/// one JSON line.
pub async fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncBufReadExt;
    raise_open_files();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut runtimes: Vec<Uuid> = Vec::new();
    loop {
        match lines.next_line().await?.as_deref() {
            Some("go") => break,
            Some(id) => runtimes.push(id.parse().context("a runtime id")?),
            None => anyhow::bail!("fleet worker: stdin ended before `go`"),
        }
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let measuring = Arc::new(AtomicBool::new(false));

    let mut daemons = tokio::task::JoinSet::new();
    // Daemons join at `join_per_sec`, not all in one instant (`FleetArgs::join_per_sec`): a tenth
    // of a second's share, then a pause.
    let step = (args.join_per_sec / 10).max(1) as usize;
    for (i, &rt) in runtimes.iter().enumerate() {
        if i % step == step - 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut conn = Conn::open(args.addr, &args.token).await?;
        let (stop, seen, measuring) = (stop.clone(), seen.clone(), measuring.clone());
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
                    a = post_as_daemon(&mut conn, "/api/v1/daemon/claim", &body, &seen) => a?,
                };
                body.clone_from(&claim);
                let got = unix_ns();
                let reply: ClaimReply = serde_json::from_slice(&answer)?;
                for t in reply.tasks {
                    if measuring.load(Ordering::Relaxed) {
                        seen.lock().expect("seen").claims.push((t.task_id, got));
                    }
                    let body = json!({ "updates": [
                        { "task_id": t.task_id, "attempt_id": t.attempt_id, "action": "start" },
                        { "task_id": t.task_id, "attempt_id": t.attempt_id, "action": "complete", "result": {} },
                    ]});
                    conn.post("/api/v1/daemon/report", body.to_string()).await?;
                }
            }
        });
    }

    let mut beats = tokio::task::JoinSet::new();
    let per_conn = runtimes.len().div_ceil(args.heartbeat_connections.max(1));
    for chunk in runtimes.chunks(per_conn.max(1)) {
        let mut conn = Conn::open(args.addr, &args.token).await?;
        let chunk = chunk.to_vec();
        let (stop, seen, measuring) = (stop.clone(), seen.clone(), measuring.clone());
        let every = Duration::from_secs(args.heartbeat_secs) / chunk.len().max(1) as u32;
        beats.spawn(async move {
            let mut tick = tokio::time::interval(every);
            for rt in chunk.iter().cycle() {
                tokio::select! {
                    _ = stop.cancelled() => return anyhow::Ok(()),
                    _ = tick.tick() => {}
                }
                let t = Instant::now();
                let body = format!(r#"{{"runtime_ids":["{rt}"]}}"#);
                post_as_daemon(&mut conn, "/api/v1/daemon/heartbeat", &body, &seen).await?;
                if measuring.load(Ordering::Relaxed) {
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    seen.lock().expect("seen").heartbeat_us.push(us);
                }
            }
            Ok(())
        });
    }
    println!("ready");

    loop {
        tokio::select! {
            line = lines.next_line() => match line?.as_deref() {
                Some("measure") => measuring.store(true, Ordering::Relaxed),
                Some("stop") | None => break,
                Some(other) => anyhow::bail!("fleet worker: unknown command {other:?}"),
            },
            // A daemon or heartbeat loop that fails ends the worker with its error.
            Some(r) = daemons.join_next() => r??,
            Some(r) = beats.join_next() => r??,
        }
    }
    measuring.store(false, Ordering::Relaxed);
    stop.cancel();
    daemons.abort_all();
    beats.abort_all();
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    println!("{}", serde_json::to_string(&seen)?);
    Ok(())
}

/// POSTs as a daemon does: a `503` (the server's pool busy, its database unreachable) is counted
/// and retried after a second; any other error ends the caller.
async fn post_as_daemon(
    conn: &mut Conn,
    path: &str,
    body: &str,
    seen: &Mutex<Seen>,
) -> anyhow::Result<bytes::Bytes> {
    loop {
        match conn.post(path, body.to_owned()).await {
            Err(e) if Refused::is_unavailable(&e) => {
                seen.lock().expect("seen").unavailable += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
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
