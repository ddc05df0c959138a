//! Fault injection: `kill -9` of one of two replicas in the middle of a load (DESIGN.md §1 "N
//! stateless replicas", §3 fencing, §4 "two claims never get the same task", §5 one sweeper leader
//! with fail-over).
//!
//! Two `paddock serve` child processes share one database and one Redis prefix. Simulated daemons
//! (tokio tasks) heartbeat their runtimes and claim, start, report progress and complete through
//! both replicas, moving to the other one whenever a replica does not answer. A producer enqueues
//! 300 tasks (idempotency keys, so that a retried enqueue creates nothing twice). Some tasks fail
//! once on purpose, some stall past `dispatch_timeout` or `running_timeout` and then report late.
//! Mid-load replica A — the sweeper leader — is killed with SIGKILL and restarted on its port.
//!
//! At the end every task is terminal, none is lost or completed twice, no report of a superseded
//! attempt was accepted, and the sweeps after the kill were run by the surviving replica only.
//!
//! Conditions are awaited with time-outs. Sleeps are load (a daemon "working", pacing of the
//! producer and of heartbeats) or back-off between retries, never synchronisation.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TASKS: usize = 300;
const DAEMONS: usize = 4;
const AGENTS_PER_DAEMON: usize = 2;
const AGENT_CONCURRENCY: i64 = 3;
const MAX_ATTEMPTS: i64 = 3;
const KILL_AFTER_COMPLETED: i64 = 60;
/// How long a call keeps trying the replicas before the daemon gives up on it.
const GIVE_UP: Duration = Duration::from_secs(30);

// ───────────────────────────── replicas ─────────────────────────────

struct Replica {
    name: String,
    child: Child,
    pid: u32,
    port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Environment shared by both replicas.
struct Deployment {
    database_url: String,
    redis_url: String,
    redis_prefix: String,
    admin_token: String,
    dir: PathBuf,
}

impl Deployment {
    /// Starts `paddock serve` on `port` and waits until `/readyz` answers 200.
    async fn spawn(&self, name: &str, port: u16) -> Replica {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("replica log");
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
        cmd.arg("serve");
        for (k, _) in std::env::vars() {
            if k.starts_with("PADDOCK_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("PADDOCK_REDIS_PREFIX", &self.redis_prefix)
            .env("PADDOCK_ADMIN_TOKEN", &self.admin_token)
            .env("PADDOCK_LISTEN", format!("127.0.0.1:{port}"))
            .env("PADDOCK_DB_POOL_SIZE", "10")
            .env("PADDOCK_SWEEP_INTERVAL", "300ms")
            .env("PADDOCK_HEARTBEAT_INTERVAL", "300ms")
            .env("PADDOCK_HEARTBEAT_FLUSH_INTERVAL", "300ms")
            .env("PADDOCK_STALE_THRESHOLD", "2s")
            .env("PADDOCK_DISPATCH_TIMEOUT", "3s")
            .env("PADDOCK_RUNNING_TIMEOUT", "5s")
            .env("PADDOCK_RETRY_BACKOFF_BASE", "100ms")
            .env("PADDOCK_RETRY_BACKOFF_MAX", "1s")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn paddock serve");
        let pid = child.id().expect("pid");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "replica {name} exited at start ({status}):\n{}",
                    log_tail(&log)
                );
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {name} not ready within 60 s:\n{}",
                log_tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Replica {
            name: name.to_owned(),
            child,
            pid,
            port,
            log,
        }
    }
}

impl Replica {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash or the OOM killer would.
    async fn kill_9(&mut self) {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL).expect("SIGKILL");
        let status = self
            .child
            .wait()
            .await
            .expect("wait for the killed replica");
        assert!(
            !status.success(),
            "{} survived SIGKILL:\n{}",
            self.name,
            log_tail(&self.log)
        );
    }
}

// ───────────────────────────── the daemons' view of the cluster ─────────────────────────────

/// HTTP to whichever replica answers: round-robin over the replicas, and on a transport error or
/// a 502/503/504 the next one, until `GIVE_UP`.
#[derive(Clone)]
struct Cluster {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    failovers: Arc<AtomicUsize>,
}

impl Cluster {
    fn new(bases: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            bases: Arc::new(bases),
            next: Arc::new(AtomicUsize::new(0)),
            failovers: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Result<(StatusCode, Value), String> {
        let deadline = Instant::now() + GIVE_UP;
        let mut i = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = String::new();
        loop {
            for _ in 0..self.bases.len() {
                let base = &self.bases[i % self.bases.len()];
                i += 1;
                let res = self
                    .http
                    .post(format!("{base}{path}"))
                    .bearer_auth(token)
                    .json(body)
                    .send()
                    .await;
                match res {
                    Ok(r) if !matches!(r.status().as_u16(), 502..=504) => {
                        let status = r.status();
                        let text = r.text().await.map_err(|e| e.to_string());
                        match text {
                            Ok(text) => {
                                let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                                return Ok((status, v));
                            }
                            Err(e) => last = format!("{base}: body: {e}"),
                        }
                    }
                    Ok(r) => last = format!("{base}: {}", r.status()),
                    Err(e) => last = format!("{base}: {e}"),
                }
                self.failovers.fetch_add(1, Ordering::Relaxed);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{path}: no replica answered within {GIVE_UP:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Debug, Clone)]
struct ReportRec {
    task: String,
    attempt_id: String,
    action: &'static str,
    /// Sent knowing the attempt had been superseded (a stalled daemon reporting late).
    late: bool,
    status: u16,
    code: String,
    /// The task returned with a 200.
    returned_attempt_id: Option<String>,
}

#[derive(Default)]
struct Records {
    /// (task, attempt_id, attempt) of every task handed out by a claim.
    claims: Vec<(String, String, i64)>,
    reports: Vec<ReportRec>,
    errors: Vec<String>,
    claim_refused_offline: usize,
    heartbeats_ok: usize,
    /// How long stalled daemons waited until their attempt was superseded.
    stall_waits: Vec<Duration>,
}

#[derive(Clone)]
struct Daemon {
    cluster: Cluster,
    token: String,
    runtime: String,
    pool: PgPool,
    rec: Arc<Mutex<Records>>,
    stop: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Normal,
    /// Fails its first attempt (retryable): the task is retried.
    FailFirst,
    /// Sits on its first attempt without starting it until `dispatch_timeout` takes it away.
    StallDispatched,
    /// Starts its first attempt and then says nothing until `running_timeout` takes it away.
    StallRunning,
}

fn kind_of(i: i64, attempt: i64) -> Kind {
    if attempt > 1 {
        return Kind::Normal;
    }
    match i {
        i if i % 50 == 3 => Kind::StallDispatched,
        i if i % 75 == 11 => Kind::StallRunning,
        i if i % 20 == 7 => Kind::FailFirst,
        _ => Kind::Normal,
    }
}

impl Daemon {
    fn error(&self, e: String) {
        self.rec.lock().unwrap().errors.push(e);
    }

    async fn heartbeat_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        let body = json!({ "runtime_ids": [self.runtime] });
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            match self
                .cluster
                .post("/api/v1/daemon/heartbeat", &self.token, &body)
                .await
            {
                Ok((StatusCode::OK, v)) if v["runtimes"][0]["status"] == "online" => {
                    self.rec.lock().unwrap().heartbeats_ok += 1;
                }
                Ok((s, v)) => self.error(format!("heartbeat: {s} {v}")),
                Err(e) => self.error(format!("heartbeat: {e}")),
            }
        }
    }

    async fn claim_loop(self) {
        let mut workers = tokio::task::JoinSet::new();
        let body = json!({ "runtime_id": self.runtime, "max_tasks": 8, "wait_ms": 250 });
        while !self.stop.is_cancelled() {
            match self
                .cluster
                .post("/api/v1/daemon/claim", &self.token, &body)
                .await
            {
                Ok((StatusCode::OK, v)) => {
                    for t in v["tasks"].as_array().cloned().unwrap_or_default() {
                        let (id, attempt_id, attempt) = (
                            t["task_id"].as_str().unwrap().to_owned(),
                            t["attempt_id"].as_str().unwrap().to_owned(),
                            t["attempt"].as_i64().unwrap(),
                        );
                        self.rec.lock().unwrap().claims.push((
                            id.clone(),
                            attempt_id.clone(),
                            attempt,
                        ));
                        let i = t["payload"]["i"].as_i64().unwrap();
                        workers.spawn(self.clone().work(id, attempt_id, i, attempt));
                    }
                }
                Ok((StatusCode::CONFLICT, v)) if v["code"] == "runtime_offline" => {
                    // The heartbeat loop brings the runtime back; try again shortly.
                    self.rec.lock().unwrap().claim_refused_offline += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok((s, v)) => {
                    self.error(format!("claim: {s} {v}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => self.error(format!("claim: {e}")),
            }
            while workers.try_join_next().is_some() {}
        }
        while workers.join_next().await.is_some() {}
    }

    async fn report(
        &self,
        id: &str,
        attempt_id: &str,
        action: &'static str,
        late: bool,
        i: i64,
    ) -> u16 {
        let body = match action {
            "start" => json!({ "attempt_id": attempt_id }),
            "progress" => json!({ "attempt_id": attempt_id, "progress": { "pct": 50 } }),
            "complete" => {
                json!({ "attempt_id": attempt_id, "result": { "i": i, "attempt_id": attempt_id } })
            }
            "fail" => json!({ "attempt_id": attempt_id, "error": "agent error on purpose" }),
            _ => unreachable!(),
        };
        match self
            .cluster
            .post(&format!("/api/v1/tasks/{id}/{action}"), &self.token, &body)
            .await
        {
            Ok((status, v)) => {
                let rec = ReportRec {
                    task: id.to_owned(),
                    attempt_id: attempt_id.to_owned(),
                    action,
                    late,
                    status: status.as_u16(),
                    code: v["code"].as_str().unwrap_or("").to_owned(),
                    returned_attempt_id: (status == StatusCode::OK)
                        .then(|| v["attempt_id"].as_str().unwrap_or("").to_owned()),
                };
                self.rec.lock().unwrap().reports.push(rec);
                status.as_u16()
            }
            Err(e) => {
                self.error(format!("{action} {id}: {e}"));
                0
            }
        }
    }

    /// Waits (polling the database) until the task no longer belongs to this attempt.
    async fn await_superseded(&self, id: &str, attempt_id: &str) -> bool {
        let t0 = Instant::now();
        let (id, mine) = (
            id.parse::<Uuid>().unwrap(),
            attempt_id.parse::<Uuid>().unwrap(),
        );
        while t0.elapsed() < Duration::from_secs(40) {
            let now: Option<Option<Uuid>> =
                sqlx::query_scalar("SELECT attempt_id FROM tasks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .ok();
            if matches!(now, Some(Some(a)) if a != mine) {
                self.rec.lock().unwrap().stall_waits.push(t0.elapsed());
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.error(format!("task {id}: attempt {mine} never superseded"));
        false
    }

    async fn work(self, id: String, attempt_id: String, i: i64, attempt: i64) {
        let (id, a) = (id.as_str(), attempt_id.as_str());
        match kind_of(i, attempt) {
            Kind::StallDispatched => {
                if self.await_superseded(id, a).await {
                    for action in ["start", "progress", "complete", "fail"] {
                        self.report(id, a, action, true, i).await;
                    }
                }
            }
            Kind::StallRunning => {
                if self.report(id, a, "start", false, i).await == 200
                    && self.await_superseded(id, a).await
                {
                    for action in ["progress", "complete", "fail", "start"] {
                        self.report(id, a, action, true, i).await;
                    }
                }
            }
            Kind::FailFirst => {
                if self.report(id, a, "start", false, i).await == 200 {
                    self.report(id, a, "fail", false, i).await;
                }
            }
            Kind::Normal => {
                if self.report(id, a, "start", false, i).await != 200 {
                    return;
                }
                // The agent at work (load, not synchronisation).
                tokio::time::sleep(Duration::from_millis(20 + 10 * (i as u64 % 4))).await;
                if self.report(id, a, "progress", false, i).await != 200 {
                    return;
                }
                self.report(id, a, "complete", false, i).await;
            }
        }
    }
}

// ───────────────────────────── helpers ─────────────────────────────

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: Uuid,
    status: String,
    failure_reason: Option<String>,
    attempt_id: Option<Uuid>,
}

/// A task as it ended.
#[derive(Debug)]
struct Final {
    status: String,
    failure_reason: Option<String>,
    /// The last attempt issued.
    attempt_id: Option<String>,
}

async fn admin_post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The pid inside a `sweeper_runs.replica` id (`host:pid:random`).
fn replica_pid(replica: &str) -> Option<u32> {
    replica.split(':').nth(1)?.parse().ok()
}

async fn sweep_replicas_since(pool: &PgPool, since: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as("SELECT replica, started_at FROM sweeper_runs WHERE started_at > $1 ORDER BY id")
        .bind(since)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn gauge(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out ({within:?}) waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ───────────────────────────── the test ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_replica_mid_load_loses_nothing() {
    let started = Instant::now();
    let database_url = common::fresh_database().await;
    let pool = PgPool::connect(&database_url).await.expect("connect");
    paddock::db::MIGRATOR.run(&pool).await.expect("migrate");
    let dir = std::env::temp_dir().join(format!("paddock-faults-kill-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let dep = Deployment {
        database_url,
        redis_url: common::services().redis_url.clone(),
        redis_prefix: format!("paddock-faults-{}", Uuid::new_v4().simple()),
        admin_token: paddock::auth::generate_token(),
        dir: dir.clone(),
    };
    let (port_a, port_b) = (free_port(), free_port());

    // A starts first and becomes the sweeper leader; then B.
    let mut a = dep.spawn("a", port_a).await;
    eventually(
        Duration::from_secs(10),
        "replica A leads the sweepers",
        || async {
            sweep_replicas_since(&pool, DateTime::<Utc>::UNIX_EPOCH)
                .await
                .iter()
                .any(|(r, _)| replica_pid(r) == Some(a.pid))
        },
    )
    .await;
    let b = dep.spawn("b", port_b).await;
    let http = reqwest::Client::new();
    assert_eq!(
        gauge(&http, &a.base(), "paddock_sweeper_leader").await,
        Some(1.0)
    );

    // A workspace, DAEMONS runtimes with AGENTS_PER_DAEMON agents each.
    let ws = admin_post(
        &http,
        &a.base(),
        &dep.admin_token,
        "/api/v1/workspaces",
        json!({ "name": "faults" }),
    )
    .await;
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    let token = |kind: &'static str| {
        let (http, base, admin, ws_id) = (
            http.clone(),
            b.base(),
            dep.admin_token.clone(),
            ws_id.clone(),
        );
        async move {
            let v = admin_post(
                &http,
                &base,
                &admin,
                &format!("/api/v1/workspaces/{ws_id}/tokens"),
                json!({ "kind": kind, "name": kind }),
            )
            .await;
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let (member, daemon_token) = (token("member").await, token("daemon").await);
    let cluster = Cluster::new(vec![a.base(), b.base()]);
    let rec = Arc::new(Mutex::new(Records::default()));
    let stop = CancellationToken::new();
    let mut agents = Vec::new();
    let mut daemons = Vec::new();
    for d in 0..DAEMONS {
        let v = admin_post(
            &http,
            &a.base(),
            &daemon_token,
            "/api/v1/daemon/register",
            json!({ "daemon_id": format!("daemon-{d}"), "provider": "claude-code" }),
        )
        .await;
        let runtime = v["runtime_id"].as_str().unwrap().to_owned();
        for _ in 0..AGENTS_PER_DAEMON {
            let v = admin_post(&http, &b.base(), &member, "/api/v1/agents", json!({ "name": format!("agent-{d}"), "runtime_id": runtime, "max_concurrent_tasks": AGENT_CONCURRENCY, "definition": {} })).await;
            agents.push(v["id"].as_str().unwrap().to_owned());
        }
        daemons.push(Daemon {
            cluster: cluster.clone(),
            token: daemon_token.clone(),
            runtime,
            pool: pool.clone(),
            rec: rec.clone(),
            stop: stop.clone(),
        });
    }
    let mut loops = tokio::task::JoinSet::new();
    for d in &daemons {
        loops.spawn(d.clone().heartbeat_loop());
        loops.spawn(d.clone().claim_loop());
    }

    // The producer: one enqueue every 25 ms, each retried through the cluster until it answers.
    let enqueued = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let enqueue_retries = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (cluster, member, agents, enqueued, retries, rec) = (
            cluster.clone(),
            member.clone(),
            agents.clone(),
            enqueued.clone(),
            enqueue_retries.clone(),
            rec.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..TASKS {
                tick.tick().await;
                let body = json!({
                    "agent_id": agents[i % agents.len()], "payload": { "i": i },
                    "max_attempts": MAX_ATTEMPTS, "idempotency_key": format!("task-{i}"),
                });
                let (cluster, member, enqueued, retries, rec) = (
                    cluster.clone(),
                    member.clone(),
                    enqueued.clone(),
                    retries.clone(),
                    rec.clone(),
                );
                calls.spawn(async move {
                    let t0 = Instant::now();
                    loop {
                        match cluster.post("/api/v1/tasks", &member, &body).await {
                            Ok((s, v)) if s == StatusCode::CREATED || s == StatusCode::OK => {
                                enqueued
                                    .lock()
                                    .unwrap()
                                    .push((i, v["id"].as_str().unwrap().to_owned()));
                                return;
                            }
                            Ok((StatusCode::CONFLICT, v))
                                if v["code"] == "runtime_offline" && t0.elapsed() < GIVE_UP =>
                            {
                                retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok((s, v)) => {
                                return rec
                                    .lock()
                                    .unwrap()
                                    .errors
                                    .push(format!("enqueue {i}: {s} {v}"));
                            }
                            Err(e) => {
                                return rec
                                    .lock()
                                    .unwrap()
                                    .errors
                                    .push(format!("enqueue {i}: {e}"));
                            }
                        }
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        })
    };

    // Mid-load: SIGKILL the leader A, then start it again on the same port.
    eventually(
        Duration::from_secs(60),
        "the first tasks complete",
        || async {
            scalar(
                &pool,
                "SELECT count(*) FROM tasks WHERE status = 'completed'",
            )
            .await
                >= KILL_AFTER_COMPLETED
        },
    )
    .await;
    let in_flight_at_kill = scalar(
        &pool,
        "SELECT count(*) FROM tasks WHERE status IN ('dispatched', 'running')",
    )
    .await;
    let enqueued_at_kill = enqueued.lock().unwrap().len();
    let a_pid = a.pid;
    a.kill_9().await;
    let killed_wall = Utc::now();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "B takes the sweeper lead",
        || async {
            sweep_replicas_since(&pool, killed_wall)
                .await
                .iter()
                .any(|(r, _)| replica_pid(r) == Some(b.pid))
        },
    )
    .await;
    // Take-over: from the kill to the start of the survivor's first sweep (sweeper_runs.started_at).
    let first_b_sweep = sweep_replicas_since(&pool, killed_wall)
        .await
        .into_iter()
        .find(|(r, _)| replica_pid(r) == Some(b.pid))
        .map(|(_, at)| at)
        .unwrap();
    let takeover = (first_b_sweep - killed_wall).to_std().unwrap_or_default();
    let spawned_at = Instant::now();
    let a2 = dep.spawn("a-restarted", port_a).await;
    let restart = spawned_at.elapsed();
    let a_down = killed_at.elapsed();

    producer.await.expect("producer");
    let total = enqueued.lock().unwrap().len();
    eventually(Duration::from_secs(60), "every task terminal", || async {
        scalar(
            &pool,
            "SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed', 'cancelled')",
        )
        .await
            >= total as i64
    })
    .await;
    let duration = started.elapsed();
    stop.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(45), async {
        while loops.join_next().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok(), "daemons did not stop");
    let rec = std::mem::take(&mut *rec.lock().unwrap());

    // ── every task there, terminal, completed at most once ──
    let rows: Vec<TaskRow> =
        sqlx::query_as("SELECT id, status, failure_reason, attempt_id FROM tasks")
            .fetch_all(&pool)
            .await
            .unwrap();
    let tasks: HashMap<String, Final> = rows
        .into_iter()
        .map(|r| {
            let f = Final {
                status: r.status,
                failure_reason: r.failure_reason,
                attempt_id: r.attempt_id.map(|a| a.to_string()),
            };
            (r.id.to_string(), f)
        })
        .collect();
    let enqueued = enqueued.lock().unwrap().clone();
    let enqueued_ids: HashSet<&String> = enqueued.iter().map(|(_, id)| id).collect();
    let lost: Vec<&&String> = enqueued_ids
        .iter()
        .filter(|id| !tasks.contains_key(**id))
        .collect();
    assert_eq!(
        enqueued.len(),
        TASKS,
        "enqueues that never answered: {:?}",
        rec.errors
    );
    assert_eq!(
        enqueued_ids.len(),
        TASKS,
        "one idempotency key gave two tasks"
    );
    assert!(lost.is_empty(), "tasks lost: {lost:?}");
    assert_eq!(
        tasks.len(),
        TASKS,
        "tasks in the database that nobody enqueued"
    );
    let not_terminal: Vec<_> = tasks
        .iter()
        .filter(|(_, t)| !matches!(t.status.as_str(), "completed" | "failed" | "cancelled"))
        .collect();
    assert!(not_terminal.is_empty(), "not terminal: {not_terminal:?}");
    let failed_without_reason: Vec<_> = tasks
        .iter()
        .filter(|(_, t)| t.status != "completed" && t.failure_reason.is_none())
        .collect();
    assert!(
        failed_without_reason.is_empty(),
        "failed without a reason: {failed_without_reason:?}"
    );
    let completed = tasks.values().filter(|t| t.status == "completed").count();
    let failed: HashMap<String, usize> =
        tasks
            .values()
            .filter(|t| t.status != "completed")
            .fold(HashMap::new(), |mut m, t| {
                *m.entry(format!(
                    "{}:{}",
                    t.status,
                    t.failure_reason.clone().unwrap_or_default()
                ))
                .or_default() += 1;
                m
            });

    let completed_events: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT subject_id, count(*) FROM events WHERE type = 'task.completed' GROUP BY subject_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let completed_events: HashMap<String, i64> = completed_events
        .into_iter()
        .map(|(id, n)| (id.to_string(), n))
        .collect();
    let attempt_rows: Vec<(Uuid, Uuid, String, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT task_id, attempt_id, outcome, started_at FROM ops.attempts")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut completed_attempts: HashMap<String, Vec<String>> = HashMap::new();
    let attempt_outcome: HashMap<String, (String, bool)> = attempt_rows
        .iter()
        .map(|(t, a, o, s)| {
            if o == "completed" {
                completed_attempts
                    .entry(t.to_string())
                    .or_default()
                    .push(a.to_string());
            }
            (a.to_string(), (o.clone(), s.is_some()))
        })
        .collect();
    let mut duplicates = Vec::new();
    for (id, t) in &tasks {
        let events = completed_events.get(id).copied().unwrap_or(0);
        let done = completed_attempts.get(id).cloned().unwrap_or_default();
        let want = i64::from(t.status == "completed");
        if events != want || done.len() as i64 != want {
            duplicates.push(format!(
                "{id} {}: {events} task.completed events, completed attempts {done:?}",
                t.status
            ));
        }
        if t.status == "completed" && done.first() != t.attempt_id.as_ref() {
            duplicates.push(format!(
                "{id}: completed attempt {done:?} is not the task's attempt {:?}",
                t.attempt_id
            ));
        }
    }

    // ── no attempt handed out twice ──
    let mut seen_attempts = HashSet::new();
    let mut seen_numbers = HashSet::new();
    for (task, attempt_id, n) in &rec.claims {
        if !seen_attempts.insert(attempt_id.clone()) || !seen_numbers.insert((task.clone(), *n)) {
            duplicates.push(format!(
                "attempt {n} ({attempt_id}) of {task} handed out twice"
            ));
        }
    }

    // ── no report of a superseded attempt accepted ──
    let mut superseded_accepted = Vec::new();
    for r in rec.reports.iter().filter(|r| r.status == 200) {
        let t = &tasks[&r.task];
        let bad = if r.late {
            Some("a late report of a superseded attempt answered 200")
        } else if r.returned_attempt_id.as_deref() != Some(r.attempt_id.as_str()) {
            Some("200 with the task of another attempt")
        } else {
            match r.action {
                "complete"
                    if !(t.status == "completed"
                        && t.attempt_id.as_deref() == Some(r.attempt_id.as_str())) =>
                {
                    Some("complete accepted for an attempt that is not the task's completed one")
                }
                "fail"
                    if attempt_outcome.get(&r.attempt_id).map(|o| o.0.as_str())
                        != Some("failed") =>
                {
                    Some("fail accepted but the attempt did not fail")
                }
                "start" | "progress"
                    if !attempt_outcome.get(&r.attempt_id).is_some_and(|o| o.1)
                        && t.attempt_id.as_deref() != Some(r.attempt_id.as_str()) =>
                {
                    Some("start/progress accepted for an attempt that never ran")
                }
                _ => None,
            }
        };
        if let Some(why) = bad {
            superseded_accepted.push(format!("{why}: {r:?} (task now {t:?})"));
        }
    }
    let late: Vec<&ReportRec> = rec.reports.iter().filter(|r| r.late).collect();
    let late_refused = late
        .iter()
        .filter(|r| r.status == 409 && r.code == "attempt_superseded")
        .count();
    let odd_statuses: Vec<&ReportRec> = rec
        .reports
        .iter()
        .filter(|r| !matches!(r.status, 200 | 409))
        .collect();

    // ── the sweeper lead moved to B and stayed there ──
    let after_kill = sweep_replicas_since(&pool, killed_wall).await;
    let sweepers_after_kill: HashSet<Option<u32>> =
        after_kill.iter().map(|(r, _)| replica_pid(r)).collect();
    let leader_b = gauge(&http, &b.base(), "paddock_sweeper_leader").await;
    let leader_a2 = gauge(&http, &a2.base(), "paddock_sweeper_leader").await;

    let retried = rec.claims.iter().filter(|c| c.2 > 1).count();
    println!(
        "faults: tasks={TASKS} kills=1 duration={:.1}s lost={} duplicates={} superseded_accepted={} \
         completed={completed} failed={failed:?} attempts={} retried_attempts={retried} \
         late_reports={} late_refused={late_refused} reports={} in_flight_at_kill={in_flight_at_kill} \
         enqueued_at_kill={enqueued_at_kill} failovers={} enqueue_retries_offline={} \
         claims_refused_offline={} heartbeats={} leader_takeover={}ms restart_ready={}ms a_down={}ms \
         sweeps_after_kill={} by_pids={:?} (a={a_pid} b={} a2={}) leader_gauge b={leader_b:?} a2={leader_a2:?} \
         stall_wait_max={}ms errors={}",
        duration.as_secs_f64(),
        lost.len(),
        duplicates.len(),
        superseded_accepted.len(),
        rec.claims.len(),
        late.len(),
        rec.reports.len(),
        cluster.failovers.load(Ordering::Relaxed),
        enqueue_retries.load(Ordering::Relaxed),
        rec.claim_refused_offline,
        rec.heartbeats_ok,
        takeover.as_millis(),
        restart.as_millis(),
        a_down.as_millis(),
        after_kill.len(),
        sweepers_after_kill,
        b.pid,
        a2.pid,
        rec.stall_waits
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_millis(),
        rec.errors.len(),
    );
    assert!(
        duplicates.is_empty(),
        "completed or dispatched twice: {duplicates:#?}"
    );
    assert!(
        superseded_accepted.is_empty(),
        "superseded reports accepted: {superseded_accepted:#?}"
    );
    assert!(
        odd_statuses.is_empty(),
        "reports answered neither 200 nor 409: {odd_statuses:#?}"
    );
    assert!(
        !late.is_empty(),
        "no stalled daemon reported late: the fencing was not exercised"
    );
    assert_eq!(
        late_refused,
        late.len(),
        "late reports not refused as attempt_superseded: {late:#?}"
    );
    assert_eq!(
        sweepers_after_kill,
        HashSet::from([Some(b.pid)]),
        "sweeps after the kill came from replicas other than the survivor: {after_kill:?}"
    );
    assert_eq!(leader_b, Some(1.0), "B's paddock_sweeper_leader");
    assert_eq!(leader_a2, Some(0.0), "restarted A's paddock_sweeper_leader");
    // A call that no replica answered for 30 s is a failure of the cluster as a whole.
    let gave_up: Vec<&String> = rec
        .errors
        .iter()
        .filter(|e| e.contains("no replica answered"))
        .collect();
    assert!(
        gave_up.is_empty(),
        "calls no replica answered: {gave_up:#?}"
    );
    assert!(rec.errors.is_empty(), "daemon errors: {:#?}", rec.errors);
    assert!(
        takeover < Duration::from_secs(2),
        "leader take-over took {takeover:?}"
    );

    drop((a, a2, b));
    let _ = std::fs::remove_dir_all(&dir);
}
