//! Fault injection: dependency outages (DESIGN.md §1, §4 `/readyz`, §5 liveness).
//!
//! * Redis (the liveness store) goes away for longer than twice `stale_threshold` while 20
//!   runtimes heartbeat: heartbeats keep answering `online` (they fall back to Postgres), no live
//!   runtime is swept offline, the fallback is counted in `/metrics`, and everything is back to
//!   normal when Redis returns.
//! * PostgreSQL crashes (kill -9 of a private cluster the test owns) under a running server:
//!   `/readyz` names it, API calls fail fast with a problem+json, and after a restart of the cluster
//!   the same server process recovers and nothing committed before the crash is lost.
//!
//! The two tests take turns (a lock) so that their timing does not depend on each other on a
//! 2-core machine. Conditions are awaited; the only sleeps pace heartbeat timers and "still holds"
//! checks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::api::{await_readyz_redis_down, readyz};
use common::json::s;
use common::wait::holds_for_every;
use common::{TestApp, Ws, eventually};
use paddock::embedded::{PgOptions, PrivatePostgres, PrivateRedis, RedisOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One outage at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scratch(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("paddock-faults-{tag}-{}", Uuid::new_v4().simple()))
}

/// Sum of every sample of a counter in `/metrics` (all label sets).
async fn counter(app: &TestApp, name: &str) -> f64 {
    let r = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[derive(Debug, Clone)]
struct Beat {
    sent: Instant,
    took: Duration,
    status: u16,
    /// Every runtime in the reply said `online`.
    online: bool,
    body: String,
}

/// One daemon per runtime, each heartbeating on a 200 ms timer without waiting for the previous
/// reply (as a daemon told `heartbeat_interval` does; a reply may take longer than the interval
/// while Redis is down).
struct Heartbeaters {
    stop: CancellationToken,
    beats: Arc<Mutex<Vec<Beat>>>,
    drivers: Vec<tokio::task::JoinHandle<()>>,
}

impl Heartbeaters {
    fn start(app: &TestApp, ws: &Ws, runtimes: &[String], every: Duration) -> Self {
        let stop = CancellationToken::new();
        let beats = Arc::new(Mutex::new(Vec::new()));
        let drivers = runtimes
            .iter()
            .map(|rt| {
                let (http, url, token) = (
                    app.http.clone(),
                    format!("{}/api/v1/daemon/heartbeat", app.base),
                    ws.daemon.clone(),
                );
                let (stop, beats, body) =
                    (stop.clone(), beats.clone(), json!({ "runtime_ids": [rt] }));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    let mut inflight = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.cancelled() => break,
                        }
                        let (http, url, token, body, beats) = (
                            http.clone(),
                            url.clone(),
                            token.clone(),
                            body.clone(),
                            beats.clone(),
                        );
                        inflight.spawn(async move {
                            let sent = Instant::now();
                            let res = http.post(&url).bearer_auth(&token).json(&body).send().await;
                            let (status, text) = match res {
                                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                                Err(e) => (0, e.to_string()),
                            };
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            let online = v["runtimes"].as_array().is_some_and(|a| {
                                !a.is_empty() && a.iter().all(|r| r["status"] == "online")
                            });
                            beats.lock().unwrap().push(Beat {
                                sent,
                                took: sent.elapsed(),
                                status,
                                online,
                                body: text,
                            });
                        });
                    }
                    while inflight.join_next().await.is_some() {}
                })
            })
            .collect();
        Self {
            stop,
            beats,
            drivers,
        }
    }

    fn count(&self) -> usize {
        self.beats.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<Beat> {
        self.stop.cancel();
        for d in self.drivers {
            d.await.expect("heartbeat driver");
        }
        self.beats.lock().unwrap().clone()
    }
}

async fn offline_runtimes(app: &TestApp, ws: &Ws) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM runtimes WHERE workspace_id = $1 AND status <> 'online'",
    )
    .bind(ws.id.parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn events_of_type(app: &TestApp, ws: &Ws, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE workspace_id = $1 AND type = $2")
        .bind(ws.id.parse::<Uuid>().unwrap())
        .bind(kind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Claims one task (long poll up to 5 s), starts and completes it with `result`.
async fn run_one(app: &TestApp, ws: &Ws, rt: &str, result: Value) -> String {
    let c = app.claim(ws, rt, 1, 5000).await;
    let t = &c["tasks"][0];
    let (id, attempt) = (s(&t["task_id"]), t["attempt_id"].clone());
    let r = app
        .report(ws, &id, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            ws,
            &id,
            "complete",
            json!({ "attempt_id": attempt, "result": result }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    id
}

/// DESIGN §5: "if the store is down, trust the database", and the configuration floor on
/// `stale_threshold` exists so that "a live runtime [is never] swept while Redis is down".
/// 20 runtimes heartbeat every 200 ms; Redis is stopped for more than 2 × `stale_threshold`.
#[tokio::test]
async fn redis_outage_longer_than_stale_threshold_marks_no_live_runtime_offline() {
    let _turn = TURN.lock().await;
    const RUNTIMES: usize = 20;
    let tick = Duration::from_millis(200);
    let stale = Duration::from_secs(2);
    let dir = scratch("redis");
    let mut redis = PrivateRedis::start(RedisOptions { dir: dir.clone() })
        .await
        .expect("private Redis");
    let app = TestApp::spawn_with(|s| {
        s.redis_url = Some(redis.url());
        s.sweep_interval = tick;
        s.heartbeat_interval = tick;
        s.heartbeat_flush_interval = Duration::from_millis(300);
        s.stale_threshold = stale;
    })
    .await;
    let ws = app.workspace().await;
    let mut runtimes = Vec::new();
    for i in 0..RUNTIMES {
        runtimes.push(app.runtime(&ws, &format!("daemon-{i}")).await);
    }
    let agent = app.agent(&ws, &runtimes[0], 1).await;
    let hb = Heartbeaters::start(&app, &ws, &runtimes, tick);
    eventually(Duration::from_secs(5), "heartbeats flow", || async {
        hb.count() >= 2 * RUNTIMES
    })
    .await;
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let fallbacks_before = counter(&app, "paddock_liveness_fallbacks_total").await;

    redis.stop().await.expect("stop Redis");
    let down_at = Instant::now();
    await_readyz_redis_down(&app).await;
    let readyz_503_after = down_at.elapsed();
    // Postgres-only paths keep working during the outage: enqueue, claim, report.
    app.enqueue(
        &ws,
        &agent,
        json!({ "payload": { "during": "redis outage" } }),
    )
    .await;
    run_one(&app, &ws, &runtimes[0], json!({ "ok": true })).await;
    let outage = stale * 2 + Duration::from_millis(500);
    let polls = holds_for_every(
        outage.saturating_sub(down_at.elapsed()),
        Duration::from_millis(100),
        "every runtime online while Redis is down",
        || async { offline_runtimes(&app, &ws).await == 0 },
    )
    .await;
    let fallbacks_during = counter(&app, "paddock_liveness_fallbacks_total").await;
    let down_for = down_at.elapsed();

    redis.start_again().await.expect("start Redis again");
    let up_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "readyz 200 after Redis returns",
        || async {
            let r = readyz(&app).await;
            r.status == StatusCode::OK && r.body["checks"]["redis"] == "up"
        },
    )
    .await;
    let ready_after = up_at.elapsed();
    // Heartbeats go back to the store; still nobody goes offline.
    holds_for_every(
        stale,
        Duration::from_millis(100),
        "every runtime online after Redis returns",
        || async { offline_runtimes(&app, &ws).await == 0 },
    )
    .await;
    let beats = hb.stop().await;

    let bad: Vec<&Beat> = beats
        .iter()
        .filter(|b| b.status != 200 || !b.online)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} heartbeats did not answer 200 online, e.g. {:?}",
        bad.len(),
        beats.len(),
        bad.first()
            .map(|b| (b.status, &b.body, b.sent.duration_since(down_at)))
    );
    let during: Vec<&Beat> = beats
        .iter()
        .filter(|b| b.sent >= down_at && b.sent < down_at + down_for)
        .collect();
    assert!(
        during.len() >= RUNTIMES * 10,
        "too few heartbeats during the outage: {}",
        during.len()
    );
    let offline_events = events_of_type(&app, &ws, "runtime.offline").await;
    assert_eq!(
        offline_events, 0,
        "runtime.offline events during a Redis outage"
    );
    assert!(
        fallbacks_during > fallbacks_before,
        "paddock_liveness_fallbacks_total did not grow: {fallbacks_before} -> {fallbacks_during}"
    );
    let mut lat: Vec<Duration> = during.iter().map(|b| b.took).collect();
    lat.sort();
    // Once the outage is known (the breaker is open: readyz's failed ping trips it), heartbeats do
    // not wait on Redis at all: they answer from Postgres at once.
    let known_at = down_at + readyz_503_after;
    let mut lat_open: Vec<Duration> = during
        .iter()
        .filter(|b| b.sent >= known_at)
        .map(|b| b.took)
        .collect();
    lat_open.sort();
    assert!(
        lat_open.len() >= RUNTIMES * 5,
        "too few heartbeats once the outage was known: {}",
        lat_open.len()
    );
    // The target is 20 ms; in this debug build the 20 daemons' heartbeats arrive in one burst
    // per tick and queue for the CPU (the Postgres path costs more CPU than the Redis one), so the
    // bound is looser, and relative to the same bursts with Redis up (the figures are printed).
    let mut lat_ok: Vec<Duration> = beats
        .iter()
        .filter(|b| b.sent < down_at)
        .map(|b| b.took)
        .collect();
    lat_ok.sort();
    // No heartbeat waits for Redis (a liveness call gives up after 300 ms: one that waited would
    // take at least that).
    assert!(
        lat_open
            .last()
            .is_some_and(|m| *m < Duration::from_millis(150)),
        "a heartbeat waited on Redis with its breaker open: max {:?}",
        lat_open.last()
    );
    // A floor of 50 ms: on two busy cores a burst's p99 has measured 30–37 ms with Redis up p99
    // as low as 7 ms; a heartbeat that waited on Redis would take 300 ms.
    let bound = Duration::from_millis(50).max(percentile(&lat_ok, 0.99) * 4);
    assert!(
        percentile(&lat_open, 0.99) < bound,
        "heartbeats with Redis down: p99 {:?} (bound {bound:?}; p50 {:?}, max {:?}; with Redis up p99 {:?})",
        percentile(&lat_open, 0.99),
        percentile(&lat_open, 0.5),
        lat_open.last(),
        percentile(&lat_ok, 0.99),
    );
    println!(
        "faults: redis_outage runtimes={RUNTIMES} stale_threshold={}ms outage={:.1}s \
         heartbeats={} during_outage={} non_200={} offline_events={offline_events} \
         offline_checks={polls} fallbacks={}->{} readyz_503_after={}ms ready_again_after={}ms \
         hb_p50_up={}ms hb_p50_down={}ms hb_p99_down={}ms hb_max_down={}ms \
         hb_p99_up={:.1}ms hb_p99_circuit_open={:.1}ms",
        stale.as_millis(),
        down_for.as_secs_f64(),
        beats.len(),
        during.len(),
        bad.len(),
        fallbacks_before,
        fallbacks_during,
        readyz_503_after.as_millis(),
        ready_after.as_millis(),
        percentile(&lat_ok, 0.5).as_millis(),
        percentile(&lat, 0.5).as_millis(),
        percentile(&lat, 0.99).as_millis(),
        lat.last().copied().unwrap_or_default().as_millis(),
        percentile(&lat_ok, 0.99).as_secs_f64() * 1e3,
        percentile(&lat_open, 0.99).as_secs_f64() * 1e3,
    );
    app.stop().await.unwrap();
    redis.stop().await.expect("stop Redis");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The outcome of one request made while PostgreSQL is down.
#[derive(Debug)]
struct DuringOutage {
    what: &'static str,
    status: u16,
    code: String,
    problem_json: bool,
    took: Duration,
}

async fn timed(
    app: &TestApp,
    what: &'static str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> DuringOutage {
    let t0 = Instant::now();
    let r = app.request(method, path, token, body).await;
    let problem_json = r
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/problem+json"))
        && ["type", "title", "status", "detail", "code"]
            .iter()
            .all(|f| !r.body[*f].is_null());
    DuringOutage {
        what,
        status: r.status.as_u16(),
        code: r.code().to_owned(),
        problem_json,
        took: t0.elapsed(),
    }
}

/// The committed state a crash must not lose: tasks with status, attempt and result.
async fn task_rows(app: &TestApp) -> Vec<(Uuid, String, i32, Option<Value>)> {
    sqlx::query_as("SELECT id, status, attempt, result FROM tasks ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// DESIGN §1/§4: a PostgreSQL crash under a running server. During the outage `/readyz` answers
/// 503 naming postgres, and API calls fail fast (< 100 ms, the breaker being open) with
/// problem+json `503 unavailable`;
/// after the cluster restarts the same server process serves again (no restart), and nothing
/// committed before the crash is lost.
#[tokio::test]
async fn postgres_restart_is_survived_without_a_server_restart() {
    let _turn = TURN.lock().await;
    let data_dir = scratch("pg");
    let mut pg = PrivatePostgres::start(PgOptions {
        data_dir: data_dir.clone(),
        fast_unsafe: true,
        max_connections: 100,
    })
    .await
    .expect("private PostgreSQL");
    let mut settings = common::test_settings(&pg.url());
    settings.sweep_interval = Duration::from_millis(300);
    settings.heartbeat_interval = Duration::from_millis(300);
    settings.heartbeat_flush_interval = Duration::from_millis(300);
    // Runtimes are not heard while Postgres is down (daemon auth reads it): long enough that
    // nobody goes stale over the outage.
    settings.stale_threshold = Duration::from_secs(60);
    let app = TestApp::start(settings).await;
    // A second replica, to check that a revocation still reaches it after the crash.
    let b = app.replica(|_| {}).await;

    // Committed state before the crash: one completed task, one running, one queued.
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "survivor").await;
    // A daemon token that B has authenticated (and may cache) before the crash.
    let r = app
        .post(
            &format!("/api/v1/workspaces/{}/tokens", ws.id),
            &app.admin_token,
            json!({ "kind": "daemon", "name": "to be revoked" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (doomed_id, doomed) = (s(&r.body["id"]), s(&r.body["token"]));
    let beat_b = |token: String| {
        let (b, rt) = (&b, rt.clone());
        async move {
            b.post(
                "/api/v1/daemon/heartbeat",
                &token,
                json!({ "runtime_ids": [rt] }),
            )
            .await
        }
    };
    for _ in 0..3 {
        let r = beat_b(doomed.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let agent = app.agent(&ws, &rt, 2).await;
    for i in 0..3 {
        app.enqueue(
            &ws,
            &agent,
            json!({ "priority": 10 - i, "payload": { "i": i } }),
        )
        .await;
    }
    run_one(&app, &ws, &rt, json!({ "answer": 42 })).await;
    let c = app.claim(&ws, &rt, 1, 0).await;
    let running = s(&c["tasks"][0]["task_id"]);
    let r = app
        .report(
            &ws,
            &running,
            "start",
            json!({ "attempt_id": c["tasks"][0]["attempt_id"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let before = task_rows(&app).await;
    let events_before = app.count("events").await;
    let workspaces_before = app.count("workspaces").await;
    assert_eq!(
        before.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
        ["completed", "running", "queued"]
    );
    // `fast_unsafe` runs the cluster with synchronous_commit=off, where a commit returns before
    // its WAL is written; a production server (synchronous_commit=on) writes it at each commit. A
    // checkpoint puts this cluster in the same place before it is killed.
    sqlx::query("CHECKPOINT").execute(&app.pool).await.unwrap();

    pg.kill().await.expect("kill -9 PostgreSQL");
    let down_at = Instant::now();
    let healthz = app
        .request(reqwest::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(
        healthz.status,
        StatusCode::OK,
        "healthz is the process, not its dependencies"
    );
    let t0 = Instant::now();
    let rz = readyz(&app).await;
    let readyz_took = t0.elapsed();
    assert_eq!(rz.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", rz.body);
    assert_eq!(rz.body["checks"]["postgres"], "down", "{:?}", rz.body);
    assert!(
        readyz_took < Duration::from_secs(3),
        "readyz took {readyz_took:?}"
    );

    let m = ws.member.as_str();
    let calls = futures::future::join_all([
        Box::pin(timed(
            &app,
            "GET /runtimes",
            reqwest::Method::GET,
            "/api/v1/runtimes",
            Some(m),
            None,
        ))
            as std::pin::Pin<Box<dyn std::future::Future<Output = DuringOutage> + Send + '_>>,
        Box::pin(timed(
            &app,
            "POST /tasks",
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(m),
            Some(json!({ "agent_id": agent, "payload": { "during": "outage" } })),
        )),
        Box::pin(timed(
            &app,
            "POST /daemon/heartbeat",
            reqwest::Method::POST,
            "/api/v1/daemon/heartbeat",
            Some(&ws.daemon),
            Some(json!({ "runtime_ids": [rt] })),
        )),
        Box::pin(timed(
            &b,
            "B: POST /daemon/heartbeat",
            reqwest::Method::POST,
            "/api/v1/daemon/heartbeat",
            Some(&doomed),
            Some(json!({ "runtime_ids": [rt] })),
        )),
        // The admin token is checked without the database; the handler then needs it.
        Box::pin(timed(
            &app,
            "POST /workspaces (admin)",
            reqwest::Method::POST,
            "/api/v1/workspaces",
            Some(&app.admin_token),
            Some(json!({ "name": "during outage" })),
        )),
    ])
    .await;
    for c in &calls {
        // readyz found Postgres down and opened its breaker: nobody waits for the pool.
        assert!(
            c.took < Duration::from_millis(100),
            "{c:?} did not answer within 100 ms"
        );
        // A heartbeat of a runtime the liveness store knows as alive needs no Postgres when its
        // token is in the replica's token cache (src/auth.rs): answering 200 is the better outcome.
        if c.what.ends_with("POST /daemon/heartbeat") && c.status == 200 {
            continue;
        }
        assert!(c.problem_json, "{c:?} is not a problem+json");
        assert!(
            (c.status, c.code.as_str()) == (503, "unavailable")
                || (c.status, c.code.as_str()) == (401, "unauthorized"),
            "{c:?}"
        );
    }
    let get = &calls[0];
    assert_eq!(
        (get.status, get.code.as_str()),
        (503, "unavailable"),
        "a member read needs the database: {get:?}"
    );
    let down_for = down_at.elapsed();

    pg.restart().await.expect("restart PostgreSQL");
    let restarted_at = Instant::now();
    let restarted_wall: DateTime<Utc> = Utc::now();
    eventually(
        Duration::from_secs(30),
        "readyz 200 after PostgreSQL returns",
        || async { readyz(&app).await.status == StatusCode::OK },
    )
    .await;
    let ready_after = restarted_at.elapsed();
    eventually(
        Duration::from_secs(30),
        "replica B ready after PostgreSQL returns",
        || async { readyz(&b).await.status == StatusCode::OK },
    )
    .await;

    // DESIGN §2 "revoked tokens fail at once on every replica", across the crash: a token
    // revoked on A after the restart is refused by B at once.
    let r = app
        .delete(&format!("/api/v1/tokens/{doomed_id}"), &app.admin_token)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let revoked_at = Instant::now();
    eventually(
        Duration::from_secs(2),
        "B refuses the token revoked on A after the crash",
        || async { beat_b(doomed.clone()).await.status == StatusCode::UNAUTHORIZED },
    )
    .await;
    let revocation_reached_b = revoked_at.elapsed();

    // Nothing committed before the crash is lost, nothing refused during it was written.
    assert_eq!(
        task_rows(&app).await,
        before,
        "tasks changed over the crash"
    );
    assert!(app.count("events").await >= events_before, "events lost");
    assert_eq!(app.count("workspaces").await, workspaces_before);
    let r = app.get("/api/v1/runtimes", &ws.member).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["status"], "online", "{:?}", r.body);

    // The same process serves again: enqueue, claim and report; the running task finishes.
    let t_enqueue = Instant::now();
    let fresh = s(&app
        .enqueue(&ws, &agent, json!({ "payload": { "after": "restart" } }))
        .await["id"]);
    let t = app
        .get(&format!("/api/v1/tasks/{running}"), &ws.member)
        .await;
    let attempt = t.body["attempt_id"].clone();
    let r = app
        .report(
            &ws,
            &running,
            "complete",
            json!({ "attempt_id": attempt, "result": { "survived": true } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut done = Vec::new();
    for _ in 0..2 {
        done.push(run_one(&app, &ws, &rt, json!({ "after": "restart" })).await);
    }
    assert!(
        done.contains(&fresh),
        "the task enqueued after the restart was not claimed: {done:?}"
    );
    let serve_after = t_enqueue.elapsed();
    // The sweeper leader reconnects and sweeps again.
    eventually(
        Duration::from_secs(10),
        "a sweep recorded after the restart",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sweeper_runs WHERE started_at > $1")
                    .bind(restarted_wall)
                    .fetch_one(&app.pool)
                    .await
                    .unwrap_or(0);
            n > 0
        },
    )
    .await;
    let sweeping_after = restarted_at.elapsed();
    let statuses: Vec<String> = task_rows(&app).await.into_iter().map(|t| t.1).collect();
    assert_eq!(
        statuses,
        ["completed", "completed", "completed", "completed"]
    );

    let fmt = |c: &DuringOutage| {
        let code = if c.code.is_empty() { "ok" } else { &c.code };
        format!("{}={} {code} in {}ms", c.what, c.status, c.took.as_millis())
    };
    println!(
        "faults: postgres_crash outage={:.1}s readyz_503_in={}ms during=[{}] ready_after_restart={}ms \
         first_write_cycle={}ms sweeping_after={}ms tasks_before={} lost=0 \
         revocation_reached_b={}ms",
        down_for.as_secs_f64(),
        readyz_took.as_millis(),
        calls.iter().map(fmt).collect::<Vec<_>>().join("; "),
        ready_after.as_millis(),
        serve_after.as_millis(),
        sweeping_after.as_millis(),
        before.len(),
        revocation_reached_b.as_millis(),
    );
    b.stop().await.unwrap();
    app.stop().await.unwrap();
    pg.stop().await.expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&data_dir);
    for ext in ["log", "lock"] {
        let mut p = data_dir.clone().into_os_string();
        p.push(format!(".{ext}"));
        let _ = std::fs::remove_file(p);
    }
}
