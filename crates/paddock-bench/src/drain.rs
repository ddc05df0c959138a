//! `bench drain`: N no-op tasks through the whole daemon protocol over real HTTP.
//!
//! Set-up: a workspace, D runtimes with one agent each (`max_concurrent_tasks` = B), N tasks
//! enqueued round-robin over the agents with concurrent `POST /tasks/batch`. Then D simulated daemons,
//! one per runtime, loop: claim up to B (long poll), then report `start` and `complete` for the
//! batch — in one `POST /daemon/report` (each task's start, then its complete), or with
//! `--separate-reports` in two — until their share is done.
//! Throughput runs from the first claim to the last completion. With `--agents-per-runtime A` or
//! `--keys K`, the same server then drains N more tasks dealt over A agents per runtime (each
//! claim serving them in turn) carrying K concurrency keys, and prints that drain beside the first:
//! the cost of fairness and keys. The server is then stopped and the baseline drains a fresh set
//! of N rows with plain SQL at the same concurrency; the graphile-worker peer follows when
//! `--peers` has its `run.sh`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::baseline;
use super::harness::{Api, BenchDb, Conn, Server, Services, Workspace, run_clients, settings};
use super::stats::{Latencies, Summary, per_sec, progress, ratio};

#[derive(Args, Clone, Debug)]
pub struct DrainArgs {
    /// Tasks to enqueue and drain.
    #[arg(long)]
    tasks: u64,
    /// Simulated daemons, each with one runtime and one agent.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    daemons: u64,
    /// Tasks per claim (`max_tasks`) and per report.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100))]
    batch: u64,
    /// Long-poll wait of each claim, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=30000))]
    wait_ms: u64,
    /// Concurrent `POST /tasks/batch` (of 1000 tasks) while enqueueing.
    #[arg(long, default_value_t = 4)]
    enqueue_concurrency: usize,
    /// Agents per runtime in a second drain of the same run (the tasks dealt over all of them, so
    /// every claim serves several agents in turn): the cost of fairness, beside the first drain's
    /// one agent per runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    agents_per_runtime: u64,
    /// Concurrency keys in that second drain: task i gets key `key-(i mod K)` with a limit that
    /// never binds (10000), so the figure is the cost of the check. 0: no keys.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Report `start` and `complete` in two `POST /daemon/report` calls per batch, as a daemon whose
    /// tasks take time must. By default a batch of no-op tasks is reported in one call: every
    /// task's `start` then its `complete` (applied in order, each fenced and with its event).
    #[arg(long)]
    separate_reports: bool,
    /// Ask for every report's answer in full (each result with its task, as without a `Prefer`
    /// header). By default the simulated daemons send `Prefer: return=minimal`, as a daemon that
    /// reads only each update's status does, and get each result's status and task id.
    #[arg(long)]
    full_answers: bool,
    /// Concurrency of the graphile-worker peer drained after Paddock in the same run (its
    /// `run.sh drain N 24` is the figure the peers README gives).
    #[arg(long, default_value_t = 24)]
    peer_concurrency: u64,
}

/// What the drain needs to know about the set-up.
pub struct Fleet {
    pub ws: Workspace,
    pub runtimes: Vec<Uuid>,
    pub agents: Vec<Uuid>,
}

/// How many of `tasks`, dealt round-robin, land on `worker` of `workers`.
pub fn share(tasks: u64, workers: u64, worker: u64) -> u64 {
    tasks / workers + u64::from(worker < tasks % workers)
}

pub async fn run(services: &Services, db: &BenchDb, args: &DrainArgs) -> anyhow::Result<Summary> {
    ensure!(args.tasks > 0, "--tasks must be at least 1");
    let server = Server::start(settings(services, db)).await?;
    let fleet = fleet(&server, args.daemons, 1, args.batch).await?;

    let t_enqueue = Instant::now();
    enqueue(&server.api, &fleet, args, 0).await?;
    let enqueue_time = t_enqueue.elapsed();

    let drained = drain(server.addr, &fleet, args).await?;
    // The same drain with several agents per runtime and concurrency keys, in a workspace of its own.
    let variant = if args.agents_per_runtime > 1 || args.keys > 0 {
        let v = self::fleet(&server, args.daemons, args.agents_per_runtime, args.batch).await?;
        enqueue(&server.api, &v, args, args.keys).await?;
        Some(drain(server.addr, &v, args).await?)
    } else {
        None
    };
    server.stop().await?;

    let pool = db.pool(args.daemons as u32 + 1).await?;
    let base = baseline::drain(&pool, &fleet, args.tasks, args.batch).await?;
    pool.close().await;
    let peer = super::peer::graphile(services, "drain", args.tasks, args.peer_concurrency).await?;

    let tps = per_sec(args.tasks, drained.elapsed);
    let base_tps = per_sec(args.tasks, base);
    let mut s = Summary::new(format!(
        "drain: {} tasks, {} daemons, batch {}, {}, {}",
        args.tasks,
        args.daemons,
        args.batch,
        if args.separate_reports {
            "start and complete reported in two calls"
        } else {
            "start and complete reported in one call"
        },
        super::answers(args.full_answers)
    ));
    s.line(format!(
        "  enqueue    {:>9.0} tasks/s  ({} tasks by POST /tasks/batch of 1000 in {:.2} s, {} concurrent)",
        per_sec(args.tasks, enqueue_time),
        args.tasks,
        enqueue_time.as_secs_f64(),
        args.enqueue_concurrency
    ));
    s.line(format!(
        "  paddock    {:>9.0} tasks/s  ({:.2} s first claim → last completion)",
        tps,
        drained.elapsed.as_secs_f64()
    ));
    s.line(format!(
        "  baseline   {:>9.0} tasks/s  ({:.2} s, plain SQL, {} workers)",
        base_tps,
        base.as_secs_f64(),
        args.daemons
    ));
    s.line(format!(
        "  ratio      {:>9.2} × baseline",
        ratio(tps, base_tps)
    ));
    if let Some(v) = &variant {
        let vtps = per_sec(args.tasks, v.elapsed);
        s.line(format!(
            "  scheduled  {vtps:>9.0} tasks/s  ({:.2} s; {} agents per runtime, {} keys) → {:.2} × the drain above",
            v.elapsed.as_secs_f64(),
            args.agents_per_runtime,
            args.keys,
            ratio(vtps, tps)
        ));
        s.num("scheduled_tasks_per_sec", vtps);
        s.num("scheduled_ratio", ratio(vtps, tps));
        s.int("agents_per_runtime", args.agents_per_runtime);
        s.int("keys", args.keys);
    }
    match peer {
        Some(p) => {
            s.line(format!(
                "  peer       {:>9.0} jobs/s   ({} {}, {:.2} s, {} concurrent) → paddock {:.2} × peer",
                p.per_sec,
                p.peer,
                p.version,
                p.seconds,
                args.peer_concurrency,
                ratio(tps, p.per_sec)
            ));
            s.num("peer_per_sec", p.per_sec);
            s.num("peer_ratio", ratio(tps, p.per_sec));
        }
        None => s.line("  peer       not run (no run.sh in --peers)".to_owned()),
    }
    s.line(format!(
        "  enqueue→claim  p50 {:.1} ms  p99 {:.1} ms  (includes the wait behind the backlog)",
        drained.pickup.ms(0.5),
        drained.pickup.ms(0.99)
    ));
    s.line(format!(
        "  claim call     p50 {:.1} ms  p99 {:.1} ms;  report call p50 {:.1} ms  p99 {:.1} ms",
        drained.claim.ms(0.5),
        drained.claim.ms(0.99),
        drained.report.ms(0.5),
        drained.report.ms(0.99)
    ));
    s.num("tasks_per_sec", tps);
    s.num("baseline_tasks_per_sec", base_tps);
    s.num("ratio", ratio(tps, base_tps));
    s.num("p50_ms", drained.pickup.ms(0.5));
    s.num("p99_ms", drained.pickup.ms(0.99));
    s.int("tasks", args.tasks);
    s.int("daemons", args.daemons);
    s.int("batch", args.batch);
    s.int(
        "report_calls_per_batch",
        if args.separate_reports { 2 } else { 1 },
    );
    s.num("enqueue_per_sec", per_sec(args.tasks, enqueue_time));
    s.num("claim_p50_ms", drained.claim.ms(0.5));
    s.num("claim_p99_ms", drained.claim.ms(0.99));
    s.num("report_p50_ms", drained.report.ms(0.5));
    s.num("report_p99_ms", drained.report.ms(0.99));
    s.num("seconds", drained.elapsed.as_secs_f64());
    s.num("baseline_seconds", base.as_secs_f64());
    Ok(s)
}

/// A workspace, `daemons` runtimes and `per_runtime` agents on each taking `slots` tasks at a time.
/// Agent `i` is on runtime `i mod daemons`, so tasks dealt round-robin over the agents land on the
/// runtimes round-robin too.
pub async fn fleet(
    server: &Server,
    daemons: u64,
    per_runtime: u64,
    slots: u64,
) -> anyhow::Result<Fleet> {
    let ws = server.workspace().await?;
    let mut runtimes = Vec::new();
    let mut agents = Vec::new();
    for d in 0..daemons {
        let reg: Value = server
            .api
            .post(
                "/api/v1/daemon/register",
                &ws.daemon,
                &json!({ "daemon_id": format!("bench-daemon-{d}"), "provider": "bench" }),
            )
            .await?;
        let runtime: Uuid = serde_json::from_value(reg["runtime_id"].clone())
            .context("register answered no runtime_id")?;
        runtimes.push(runtime);
    }
    for i in 0..daemons * per_runtime {
        let runtime = runtimes[(i % daemons) as usize];
        let agent: Value = server
            .api
            .post(
                "/api/v1/agents",
                &ws.member,
                &json!({ "name": format!("bench-agent-{i}"), "runtime_id": runtime,
                         "max_concurrent_tasks": slots, "definition": { "noop": true } }),
            )
            .await?;
        agents.push(serde_json::from_value(agent["id"].clone()).context("agent without id")?);
    }
    Ok(Fleet {
        ws,
        runtimes,
        agents,
    })
}

/// N tasks by `POST /tasks/batch` of 1000, round-robin over the agents, `enqueue_concurrency`
/// batches at a time; with `keys` > 0, task i carries key `key-(i mod keys)` under a limit that
/// never binds.
async fn enqueue(api: &Api, fleet: &Fleet, args: &DrainArgs, keys: u64) -> anyhow::Result<()> {
    const BATCH: u64 = 1000;
    let bar = progress(Some(args.tasks), "enqueue");
    let batches = args.tasks.div_ceil(BATCH);
    let mut calls = futures::stream::iter(0..batches)
        .map(|b| {
            let tasks: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(args.tasks))
                .map(|i| {
                    let agent = fleet.agents[(i % fleet.agents.len() as u64) as usize];
                    let mut t = json!({ "agent_id": agent, "payload": { "noop": i } });
                    if keys > 0 {
                        t["concurrency_key"] = json!(format!("key-{}", i % keys));
                        t["concurrency_limit"] = json!(10_000);
                    }
                    t
                })
                .collect();
            let n = tasks.len() as u64;
            let body = json!({ "tasks": tasks });
            async move {
                api.post::<serde::de::IgnoredAny>("/api/v1/tasks/batch", &fleet.ws.member, &body)
                    .await
                    .map(|_| n)
            }
        })
        .buffer_unordered(args.enqueue_concurrency.max(1));
    while let Some(res) = calls.next().await {
        bar.inc(res?);
    }
    bar.finish_and_clear();
    Ok(())
}

struct Drained {
    elapsed: Duration,
    /// Claim answer received minus the task's `enqueued_at`.
    pickup: Latencies,
    claim: Latencies,
    report: Latencies,
}

#[derive(Deserialize)]
struct ClaimReply {
    tasks: Vec<ClaimedTask>,
}

#[derive(Deserialize)]
struct ClaimedTask {
    task_id: Uuid,
    attempt_id: Uuid,
    enqueued_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ReportReply {
    results: Vec<ReportResult>,
}

#[derive(Deserialize)]
struct ReportResult {
    task_id: Uuid,
    status: u16,
}

/// Runs the D daemons until every task is completed.
async fn drain(
    addr: std::net::SocketAddr,
    fleet: &Fleet,
    args: &DrainArgs,
) -> anyhow::Result<Drained> {
    let bar = progress(Some(args.tasks), "drain");
    let t0 = Instant::now();
    let daemons = fleet.runtimes.iter().enumerate().map(|(d, &runtime)| {
        let mine = share(args.tasks, args.daemons, d as u64);
        let (token, args, bar) = (fleet.ws.daemon.clone(), args.clone(), bar.clone());
        daemon(addr, token, runtime, mine, args, bar)
    });
    let results = run_clients(daemons).await?;
    bar.finish_and_clear();
    let mut out = Drained {
        elapsed: Duration::ZERO,
        pickup: Latencies::default(),
        claim: Latencies::default(),
        report: Latencies::default(),
    };
    for r in results {
        out.elapsed = out.elapsed.max(r.last_completion.duration_since(t0));
        out.pickup.merge(&r.pickup);
        out.claim.merge(&r.claim);
        out.report.merge(&r.report);
    }
    Ok(out)
}

struct DaemonRun {
    last_completion: Instant,
    pickup: Latencies,
    claim: Latencies,
    report: Latencies,
}

/// One simulated daemon, on its own keep-alive connection: claim → start all → complete all, until
/// `mine` tasks are completed.
async fn daemon(
    addr: std::net::SocketAddr,
    token: String,
    runtime: Uuid,
    mine: u64,
    args: DrainArgs,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<DaemonRun> {
    let mut conn = Conn::open(addr, &token).await?.minimal(!args.full_answers);
    let mut run = DaemonRun {
        last_completion: Instant::now(),
        pickup: Latencies::default(),
        claim: Latencies::default(),
        report: Latencies::default(),
    };
    let claim_body = format!(
        r#"{{"runtime_id":"{runtime}","max_tasks":{},"wait_ms":{}}}"#,
        args.batch, args.wait_ms
    );
    let mut done = 0;
    let mut empty_since: Option<Instant> = None;
    while done < mine {
        let t = Instant::now();
        let answer = conn
            .post("/api/v1/daemon/claim", claim_body.clone())
            .await?;
        let now = Utc::now();
        run.claim.record(t.elapsed());
        let reply: ClaimReply =
            serde_json::from_slice(&answer).context("claim: unexpected answer")?;
        if reply.tasks.is_empty() {
            let since = *empty_since.get_or_insert(t);
            if since.elapsed() > Duration::from_secs(60) {
                bail!(
                    "drain stalled: runtime {runtime} got nothing for 60 s with {done} of its {mine} tasks completed"
                );
            }
            continue;
        }
        empty_since = None;
        for task in &reply.tasks {
            run.pickup.record_chrono(now - task.enqueued_at);
        }
        let update = |c: &ClaimedTask, action: &str| {
            let extra = if action == "complete" {
                r#","result":{}"#
            } else {
                ""
            };
            format!(
                r#"{{"task_id":"{}","attempt_id":"{}","action":"{action}"{extra}}}"#,
                c.task_id, c.attempt_id
            )
        };
        let calls: Vec<Vec<String>> = if args.separate_reports {
            ["start", "complete"]
                .iter()
                .map(|a| reply.tasks.iter().map(|c| update(c, a)).collect())
                .collect()
        } else {
            vec![
                reply
                    .tasks
                    .iter()
                    .flat_map(|c| [update(c, "start"), update(c, "complete")])
                    .collect(),
            ]
        };
        for updates in calls {
            let body = format!(r#"{{"updates":[{}]}}"#, updates.join(","));
            let t = Instant::now();
            let answer = conn.post("/api/v1/daemon/report", body).await?;
            run.report.record(t.elapsed());
            let res: ReportReply =
                serde_json::from_slice(&answer).context("report: unexpected answer")?;
            if let Some(bad) = res.results.iter().find(|r| r.status != 200) {
                bail!("report of task {} answered {}", bad.task_id, bad.status);
            }
        }
        done += reply.tasks.len() as u64;
        run.last_completion = Instant::now();
        bar.inc(reply.tasks.len() as u64);
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up_to_the_tasks() {
        for (tasks, workers) in [(20000, 8), (10, 3), (2, 5)] {
            let sum: u64 = (0..workers).map(|w| share(tasks, workers, w)).sum();
            assert_eq!(sum, tasks);
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }
}
