//! `bench enqueue`: N tasks through `POST /tasks/batch` in batches of B (DESIGN §13).
//!
//! Set-up: a workspace and A runtimes with one agent each; the tasks are dealt round-robin over
//! the agents. C clients, each on one keep-alive connection, send their share of the batches one
//! after another; every item must answer 201. Throughput runs from the first request to the last
//! answer. Then the server is stopped and the same-run figures beside it are taken:
//!
//! * baseline: the same rows inserted straight into `tasks` with one `INSERT … SELECT FROM unnest`
//!   per batch, C connections (no events, no admission check: what any server must at least do);
//! * peer: graphile-worker's `add_jobs()` of N jobs in batches of B, one client (`crate::peer`).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use serde::Deserialize;
use uuid::Uuid;

use super::drain::{Fleet, fleet, share};
use super::harness::{BenchDb, Conn, Server, Services, run_clients, settings};
use super::peer;
use super::stats::{Latencies, Summary, per_sec, progress, ratio};

#[derive(Args, Clone, Debug)]
pub struct EnqueueArgs {
    /// Tasks to enqueue.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Tasks per `POST /tasks/batch` (1–1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Agents the tasks are dealt over, each on a runtime of its own.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    agents: u64,
    /// Concurrent clients (the peer runs one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Ask for every batch's answer in full (each result with its task, as without a `Prefer`
    /// header). By default the client sends `Prefer: return=minimal` and gets each result's status
    /// and task id.
    #[arg(long)]
    full_answers: bool,
}

#[derive(Deserialize)]
struct BatchReply {
    results: Vec<ItemStatus>,
}

#[derive(Deserialize)]
struct ItemStatus {
    status: u16,
}

pub async fn run(services: &Services, db: &BenchDb, args: &EnqueueArgs) -> anyhow::Result<Summary> {
    ensure!(args.tasks > 0, "--tasks must be at least 1");
    let server = Server::start(settings(services, db)).await?;
    let fleet = fleet(&server, args.agents, 1, 1).await?;
    let (elapsed, calls) = enqueue(server.addr, &fleet, args).await?;
    server.stop().await?;

    let pool = db.pool(args.clients as u32 + 1).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await?;
    ensure!(
        stored as u64 == args.tasks,
        "{stored} tasks stored, {} enqueued",
        args.tasks
    );
    sqlx::query("TRUNCATE tasks, events CASCADE")
        .execute(&pool)
        .await?;
    let base = baseline(&pool, &fleet, args).await?;
    pool.close().await;
    let peer = peer::graphile(services, "enqueue", args.tasks, args.batch).await?;

    let tps = per_sec(args.tasks, elapsed);
    let base_tps = per_sec(args.tasks, base);
    let mut s = Summary::new(format!(
        "enqueue: {} tasks in batches of {} over {} agents, {} client(s), {}",
        args.tasks,
        args.batch,
        args.agents,
        args.clients,
        super::answers(args.full_answers)
    ));
    s.line(format!(
        "  paddock    {tps:>9.0} tasks/s  ({:.2} s; POST /tasks/batch p50 {:.1} ms  p99 {:.1} ms)",
        elapsed.as_secs_f64(),
        calls.ms(0.5),
        calls.ms(0.99)
    ));
    s.line(format!(
        "  baseline   {base_tps:>9.0} rows/s   ({:.2} s, plain INSERT … unnest per batch) → paddock {:.2} ×",
        base.as_secs_f64(),
        ratio(tps, base_tps)
    ));
    s.num("tasks_per_sec", tps);
    s.num("baseline_rows_per_sec", base_tps);
    s.num("ratio", ratio(tps, base_tps));
    s.num("batch_p50_ms", calls.ms(0.5));
    s.num("batch_p99_ms", calls.ms(0.99));
    match peer {
        Some(p) => {
            s.line(format!(
                "  peer       {:>9.0} jobs/s   ({} {} add_jobs, {:.2} s) → paddock {:.2} × peer",
                p.per_sec,
                p.peer,
                p.version,
                p.seconds,
                ratio(tps, p.per_sec)
            ));
            s.num("peer_per_sec", p.per_sec);
            s.num("peer_ratio", ratio(tps, p.per_sec));
        }
        None => s.line("  peer       not run (no run.sh in --peers)".to_owned()),
    }
    s.int("tasks", args.tasks);
    s.int("batch", args.batch);
    s.int("clients", args.clients);
    Ok(s)
}

/// The batches of one client: its share of the tasks, `batch` at a time, round-robin over the agents.
fn bodies(fleet: &Fleet, args: &EnqueueArgs, client: u64) -> Vec<(u64, String)> {
    let mine = share(args.tasks, args.clients, client);
    let mut out = Vec::new();
    let mut i = client;
    let mut left = mine;
    while left > 0 {
        let n = left.min(args.batch);
        let mut body = String::with_capacity(80 * n as usize);
        body.push_str("{\"tasks\":[");
        for j in 0..n {
            if j > 0 {
                body.push(',');
            }
            let agent = fleet.agents[(i % fleet.agents.len() as u64) as usize];
            body.push_str(&format!(
                "{{\"agent_id\":\"{agent}\",\"payload\":{{\"i\":{i}}}}}"
            ));
            i += args.clients;
        }
        body.push_str("]}");
        out.push((n, body));
        left -= n;
    }
    out
}

/// Runs the clients; returns the time from the first request to the last answer, and each call's
/// latency.
async fn enqueue(
    addr: std::net::SocketAddr,
    fleet: &Fleet,
    args: &EnqueueArgs,
) -> anyhow::Result<(Duration, Latencies)> {
    let bar = progress(Some(args.tasks), "enqueue");
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let conn = Conn::open(addr, &fleet.ws.member)
            .await?
            .minimal(!args.full_answers);
        clients.push((conn, bodies(fleet, args, c)));
    }
    let t0 = Instant::now();
    let runs = clients.into_iter().map(|(mut conn, batches)| {
        let bar = bar.clone();
        async move {
            let mut lat = Latencies::default();
            for (n, body) in batches {
                let sent = Instant::now();
                let bytes = conn.post("/api/v1/tasks/batch", body).await?;
                lat.record(sent.elapsed());
                let reply: BatchReply = serde_json::from_slice(&bytes).context("a batch answer")?;
                ensure!(
                    reply.results.len() as u64 == n
                        && reply.results.iter().all(|r| r.status == 201),
                    "a batch item was not created: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
                );
                bar.inc(n);
            }
            Ok(lat)
        }
    });
    let lats = run_clients(runs).await?;
    let elapsed = t0.elapsed();
    bar.finish_and_clear();
    let mut all = Latencies::default();
    for l in &lats {
        all.merge(l);
    }
    Ok((elapsed, all))
}

/// The same rows straight into `tasks`, one `INSERT … SELECT FROM unnest` per batch, `clients`
/// connections.
async fn baseline(
    pool: &sqlx::PgPool,
    fleet: &Fleet,
    args: &EnqueueArgs,
) -> anyhow::Result<Duration> {
    let ws: Uuid = fleet.ws.id.parse().context("workspace id")?;
    let t0 = Instant::now();
    let runs = (0..args.clients).map(|c| {
        let (pool, agents, runtimes) = (pool.clone(), fleet.agents.clone(), fleet.runtimes.clone());
        let mine = share(args.tasks, args.clients, c);
        let (batch, step) = (args.batch, args.clients);
        async move {
            let mut i = c;
            let mut left = mine;
            while left > 0 {
                let n = left.min(batch);
                let (mut ids, mut ag, mut rt, mut payloads) = (vec![], vec![], vec![], vec![]);
                for _ in 0..n {
                    let k = (i % agents.len() as u64) as usize;
                    ids.push(Uuid::now_v7());
                    ag.push(agents[k]);
                    rt.push(runtimes[k]);
                    payloads.push(format!("{{\"i\":{i}}}"));
                    i += step;
                }
                sqlx::query(
                    "INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, payload)
                     SELECT u.id, $1, u.a, u.r, u.p::jsonb
                     FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) AS u (id, a, r, p)",
                )
                .bind(ws)
                .bind(&ids)
                .bind(&ag)
                .bind(&rt)
                .bind(&payloads)
                .execute(&pool)
                .await?;
                left -= n;
            }
            anyhow::Ok(())
        }
    });
    run_clients(runs).await?;
    Ok(t0.elapsed())
}
