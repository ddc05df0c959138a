//! The sweepers of DESIGN.md §5: stale runtimes, stale tasks, queued backlog, collector, event log;
//! one leader at a time with take-over; nothing changed for healthy state; active-row indexes only;
//! and the start-up check on `stale_threshold`.
//!
//! Sweeps run every 200 ms here. Conditions are awaited with `common::eventually`; the only sleeps
//! are the pacing of a heartbeat loop (load, not synchronisation) and of "still holds" checks.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::api::{agent_status, heartbeat, runtime, runtime_status, task};
use common::db::plan_nodes;
use common::heartbeater::{Heartbeater, assert_all_online};
use common::json::{s, ts};
use common::settings::{STALE, TICK, fast};
use common::wait::{eventually_some, holds_for};
use common::{TestApp, Ws, eventually};
use paddock::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn ms(d: chrono::TimeDelta) -> i64 {
    d.num_milliseconds()
}

async fn task_status(app: &TestApp, ws: &Ws, id: &str) -> String {
    s(&task(app, ws, id).await["status"])
}

/// The whole event log of the workspace through `GET /events`, page by page, as listed now.
/// (`agents_and_events` has its own, which first waits until every stored event is listed.)
async fn all_events(app: &TestApp, ws: &Ws) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/events?limit=500&after={a}"),
            None => "/api/v1/events?limit=500".to_owned(),
        };
        let r = app.get(&path, &ws.member).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let items = r.body["items"].as_array().cloned().unwrap_or_default();
        let n = items.len();
        out.extend(items);
        match r.body["next_cursor"].as_str() {
            Some(c) if n == 500 => after = Some(c.to_owned()),
            _ => return out,
        }
    }
}

fn of<'a>(events: &'a [Value], kind: &str, subject: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["subject_id"] == subject)
        .collect()
}

/// Awaits an event through `GET /events` (a long transaction anywhere in the cluster holds the
/// delivery horizon back for a moment, so events are awaited, not read once).
async fn await_event(app: &TestApp, ws: &Ws, kind: &str, subject: &str) -> Value {
    eventually_some(
        Duration::from_secs(10),
        &format!("event {kind} for {subject}"),
        || async move {
            let evs = all_events(app, ws).await;
            of(&evs, kind, subject).first().map(|e| (*e).clone())
        },
    )
    .await
}

/// One `sweeper_runs` row: (id, sweep, replica, started_at, rows_changed, error).
type Run = (i64, String, String, DateTime<Utc>, i32, Option<String>);

async fn runs_after(pool: &sqlx::PgPool, after_id: i64) -> Vec<Run> {
    sqlx::query_as(
        "SELECT id, sweep, replica, started_at, rows_changed, error FROM sweeper_runs \
         WHERE id > $1 ORDER BY id",
    )
    .bind(after_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn max_run_id(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM sweeper_runs")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Awaits `n` more ticks (rows of the first sweep of a tick) after row `after_id`.
async fn await_ticks(pool: &sqlx::PgPool, after_id: i64, n: usize) {
    eventually(
        TICK * (n as u32) * 5 + Duration::from_secs(2),
        &format!("{n} sweep ticks"),
        || async {
            runs_after(pool, after_id)
                .await
                .iter()
                .filter(|r| r.1 == "stale_runtimes")
                .count()
                >= n
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 1. stale runtimes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_runtime_goes_offline_while_heartbeating_one_stays_online() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let live = app.runtime(&ws, "live-1").await;
    let silent = app.runtime(&ws, "silent-1").await;
    let live_agent = app.agent(&ws, &live, 1).await;
    let silent_agent = app.agent(&ws, &silent, 1).await;
    let beats = Heartbeater::start(&app, &ws, &[&live], TICK);

    eventually(STALE * 4, "the silent runtime goes offline", || async {
        runtime_status(&app, &ws, &silent).await == "offline"
    })
    .await;
    let rt = runtime(&app, &ws, &silent).await;
    let silent_for = ts(&rt["offline_at"]) - ts(&rt["last_seen_at"]);
    assert!(
        silent_for.to_std().unwrap() >= STALE,
        "taken offline after only {} ms of silence (stale_threshold {STALE:?})",
        ms(silent_for)
    );
    await_event(&app, &ws, "runtime.offline", &silent).await;
    eventually(
        Duration::from_secs(2),
        "the silent runtime's agent is offline",
        || async { agent_status(&app, &ws, &silent_agent).await == "offline" },
    )
    .await;

    // The heartbeating runtime stays online, checked repeatedly, for 3 × stale_threshold.
    holds_for(STALE * 3, "the heartbeating runtime is online", || async {
        runtime_status(&app, &ws, &live).await == "online"
            && agent_status(&app, &ws, &live_agent).await == "idle"
    })
    .await;
    assert_all_online(&beats.stop().await);
    let evs = all_events(&app, &ws).await;
    assert!(
        of(&evs, "runtime.offline", &live).is_empty(),
        "the heartbeating runtime was taken offline"
    );
    assert_eq!(of(&evs, "runtime.offline", &silent).len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn offline_runtime_tasks_fail_runtime_offline_and_retry_when_attempts_left() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "doomed").await;
    let once = app.agent(&ws, &rt, 2).await;
    let twice = app.agent(&ws, &rt, 2).await;
    let mut ids = Vec::new();
    for (agent, max_attempts) in [(&once, 1), (&once, 1), (&twice, 2), (&twice, 2)] {
        let t = app
            .enqueue(&ws, agent, json!({ "max_attempts": max_attempts }))
            .await;
        ids.push(s(&t["id"]));
    }
    let claimed = app.claim(&ws, &rt, 4, 0).await;
    let claimed = claimed["tasks"].as_array().unwrap();
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    let attempt_of = |id: &str| {
        claimed
            .iter()
            .find(|c| c["task_id"] == id)
            .map(|c| s(&c["attempt_id"]))
            .unwrap()
    };
    // One dispatched and one running task per agent.
    for id in [&ids[1], &ids[3]] {
        let r = app
            .report(&ws, id, "start", json!({ "attempt_id": attempt_of(id) }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    // No heartbeat: the runtime goes stale.
    eventually(STALE * 4, "the runtime goes offline", || async {
        runtime_status(&app, &ws, &rt).await == "offline"
    })
    .await;
    for id in &ids[..2] {
        eventually(
            Duration::from_secs(2),
            "a max_attempts 1 task fails",
            || async { task_status(&app, &ws, id).await == "failed" },
        )
        .await;
        let t = task(&app, &ws, id).await;
        assert_eq!(t["failure_reason"], "runtime_offline", "{t}");
        assert_eq!(t["attempts"][0]["outcome"], "failed", "{t}");
        assert_eq!(t["attempts"][0]["failure_reason"], "runtime_offline", "{t}");
        let ev = await_event(&app, &ws, "task.failed", id).await;
        assert_eq!(ev["payload"]["failure_reason"], "runtime_offline", "{ev}");
    }
    for id in &ids[2..] {
        eventually(
            Duration::from_secs(2),
            "a max_attempts 2 task is requeued",
            || async { task_status(&app, &ws, id).await == "queued" },
        )
        .await;
        let t = task(&app, &ws, id).await;
        assert_eq!(t["attempt"], 1, "{t}");
        assert_eq!(t["attempts"][0]["outcome"], "failed", "{t}");
        assert_eq!(t["attempts"][0]["failure_reason"], "runtime_offline", "{t}");
        let ev = await_event(&app, &ws, "task.requeued", id).await;
        assert_eq!(ev["payload"]["reason"], "runtime_offline", "{ev}");
    }
    for agent in [&once, &twice] {
        assert_eq!(agent_status(&app, &ws, agent).await, "offline");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_heartbeat_from_an_offline_runtime_brings_it_back_online() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "sleepy").await;
    let agent = app.agent(&ws, &rt, 1).await;
    eventually(STALE * 4, "the silent runtime goes offline", || async {
        runtime_status(&app, &ws, &rt).await == "offline"
    })
    .await;
    let offline = await_event(&app, &ws, "runtime.offline", &rt).await;
    let r = app
        .post(
            "/api/v1/tasks",
            &ws.member,
            json!({ "agent_id": agent, "payload": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "runtime_offline");

    let r = heartbeat(&app, &ws, &[&rt]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["runtimes"][0]["status"], "online", "{:?}", r.body);
    assert_eq!(runtime_status(&app, &ws, &rt).await, "online");
    let online = await_event(&app, &ws, "runtime.online", &rt).await;
    assert!(
        online["id"].as_i64() > offline["id"].as_i64(),
        "{online} {offline}"
    );
    assert_eq!(agent_status(&app, &ws, &agent).await, "idle");
    // Back in service: the admission gate lets tasks in, and heartbeats keep it online.
    app.enqueue(&ws, &agent, json!({})).await;
    let beats = Heartbeater::start(&app, &ws, &[&rt], TICK);
    holds_for(STALE * 2, "the revived runtime stays online", || async {
        runtime_status(&app, &ws, &rt).await == "online"
    })
    .await;
    assert_all_online(&beats.stop().await);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. stale tasks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dispatched_past_dispatch_timeout_and_running_past_running_timeout_fail() {
    let dispatch_timeout = Duration::from_secs(1);
    let running_timeout = Duration::from_secs(2);
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.dispatch_timeout = dispatch_timeout;
        s.running_timeout = running_timeout;
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "busy").await;
    let agent = app.agent(&ws, &rt, 3).await;
    // Kept alive, so the stale-runtime sweep does not interfere.
    let beats = Heartbeater::start(&app, &ws, &[&rt], TICK);
    let never_started = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let started = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let retried = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);
    let claimed = app.claim(&ws, &rt, 3, 0).await;
    let claimed = claimed["tasks"].as_array().unwrap().clone();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    let att = claimed
        .iter()
        .find(|c| c["task_id"] == started.as_str())
        .map(|c| s(&c["attempt_id"]))
        .unwrap();
    let r = app
        .report(&ws, &started, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    eventually(
        Duration::from_secs(5),
        "dispatch_timeout fails the task",
        || async { task_status(&app, &ws, &never_started).await == "failed" },
    )
    .await;
    let t = task(&app, &ws, &never_started).await;
    assert_eq!(t["failure_reason"], "dispatch_timeout", "{t}");
    let waited = ts(&t["finished_at"]) - ts(&t["dispatched_at"]);
    assert!(
        waited.to_std().unwrap() >= dispatch_timeout,
        "failed after {} ms",
        ms(waited)
    );
    let ev = await_event(&app, &ws, "task.failed", &never_started).await;
    assert_eq!(ev["payload"]["failure_reason"], "dispatch_timeout", "{ev}");

    // With attempts left, a dispatch timeout is retried like any failure.
    let ev = await_event(&app, &ws, "task.requeued", &retried).await;
    assert_eq!(ev["payload"]["reason"], "dispatch_timeout", "{ev}");
    let t = task(&app, &ws, &retried).await;
    assert_eq!(
        t["attempts"][0]["failure_reason"], "dispatch_timeout",
        "{t}"
    );

    eventually(
        Duration::from_secs(6),
        "running_timeout fails the task",
        || async { task_status(&app, &ws, &started).await == "failed" },
    )
    .await;
    let t = task(&app, &ws, &started).await;
    assert_eq!(t["failure_reason"], "running_timeout", "{t}");
    let ran = ts(&t["finished_at"]) - ts(&t["started_at"]);
    assert!(
        ran.to_std().unwrap() >= running_timeout,
        "failed after {} ms of running",
        ms(ran)
    );
    let ev = await_event(&app, &ws, "task.failed", &started).await;
    assert_eq!(ev["payload"]["failure_reason"], "running_timeout", "{ev}");

    assert_eq!(runtime_status(&app, &ws, &rt).await, "online");
    assert_all_online(&beats.stop().await);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. queued backlog
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn queued_backlog_expires_at_most_batch_per_tick_oldest_first_never_before_ttl() {
    let ttl = Duration::from_secs(2);
    let batch = 10;
    let n = 35;
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.queued_ttl = ttl;
        s.queued_expire_batch = batch;
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "backlogged").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let beats = Heartbeater::start(&app, &ws, &[&rt], TICK);
    let mark = max_run_id(&app.pool).await;
    // Enqueued together, so that more than one batch is due at the same tick.
    let enqueued = futures::future::join_all(
        (0..n).map(|_| app.enqueue(&ws, &agent, json!({ "max_attempts": 3 }))),
    )
    .await;
    let ids: Vec<String> = enqueued.iter().map(|t| s(&t["id"])).collect();

    let tasks: Vec<Value> =
        eventually_some(Duration::from_secs(15), "the whole backlog expires", || {
            let (app, ws, ids) = (&app, &ws, &ids);
            async move {
                let mut tasks = Vec::new();
                for id in ids {
                    tasks.push(task(app, ws, id).await);
                }
                tasks
                    .iter()
                    .all(|t| t["status"] == "failed")
                    .then_some(tasks)
            }
        })
        .await;
    for t in &tasks {
        assert_eq!(t["failure_reason"], "queued_expired", "{t}");
        assert_eq!(t["attempt"], 0, "{t}");
        let age = ts(&t["finished_at"]) - ts(&t["enqueued_at"]);
        assert!(
            age.to_std().unwrap() >= ttl,
            "expired {} ms after enqueue (queued_ttl {ttl:?})",
            ms(age)
        );
    }
    // Oldest first: finished_at follows enqueued_at.
    let mut by_enqueue: Vec<(DateTime<Utc>, DateTime<Utc>)> = tasks
        .iter()
        .map(|t| (ts(&t["enqueued_at"]), ts(&t["finished_at"])))
        .collect();
    by_enqueue.sort();
    for w in by_enqueue.windows(2) {
        assert!(
            w[0].1 <= w[1].1,
            "enqueued earlier ({}) but expired later ({} > {})",
            w[0].0,
            w[0].1,
            w[1].1
        );
    }
    // At most `batch` per tick, in several ticks.
    let runs: Vec<Run> = runs_after(&app.pool, mark)
        .await
        .into_iter()
        .filter(|r| r.1 == "queued_expiry")
        .collect();
    let per_tick: Vec<i32> = runs.iter().map(|r| r.4).filter(|&n| n > 0).collect();
    assert!(
        per_tick.iter().all(|&k| k as i64 <= batch),
        "a tick expired more than {batch}: {per_tick:?}"
    );
    assert_eq!(per_tick.iter().sum::<i32>(), n, "{per_tick:?}");
    assert!(
        per_tick.len() >= (n as usize).div_ceil(batch as usize),
        "{per_tick:?}"
    );
    assert_eq!(
        per_tick.iter().max().copied(),
        Some(batch as i32),
        "{per_tick:?}"
    );
    assert!(runs.iter().all(|r| r.5.is_none()), "{runs:?}");

    // Never retried, though attempts are left: still failed a few ticks later, one task.failed each.
    await_ticks(&app.pool, max_run_id(&app.pool).await, 3).await;
    let evs = all_events(&app, &ws).await;
    for id in &ids {
        let t = task(&app, &ws, id).await;
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["max_attempts"], 3, "{t}");
        assert!(of(&evs, "task.requeued", id).is_empty());
        let failed = of(&evs, "task.failed", id);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0]["payload"]["failure_reason"], "queued_expired");
    }
    assert_all_online(&beats.stop().await);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. collector
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn collector_deletes_long_offline_runtimes_without_live_agents_or_open_tasks() {
    let ttl = Duration::from_secs(1);
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.offline_runtime_ttl = ttl;
    })
    .await;
    let ws = app.workspace().await;
    let archived_only = app.runtime(&ws, "archived-only").await;
    let no_agents = app.runtime(&ws, "no-agents").await;
    let live_agent = app.runtime(&ws, "live-agent").await;
    let open_task = app.runtime(&ws, "open-task").await;

    let gone_agent = app.agent(&ws, &archived_only, 1).await;
    let r = app
        .delete(&format!("/api/v1/agents/{gone_agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let kept_agent = app.agent(&ws, &live_agent, 1).await;
    // An archived agent whose task was dispatched, then requeued when its runtime went offline.
    let busy_agent = app.agent(&ws, &open_task, 1).await;
    let t = s(&app
        .enqueue(&ws, &busy_agent, json!({ "max_attempts": 2 }))
        .await["id"]);
    assert_eq!(
        app.claim(&ws, &open_task, 1, 0).await["tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = app
        .delete(&format!("/api/v1/agents/{busy_agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = app
        .post(
            "/api/v1/daemon/deregister",
            &ws.daemon,
            json!({ "runtime_ids": [archived_only, no_agents, live_agent, open_task] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(task_status(&app, &ws, &t).await, "queued");

    for rt in [&archived_only, &no_agents] {
        eventually(
            Duration::from_secs(6),
            "the runtime is collected",
            || async {
                app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member)
                    .await
                    .status
                    == StatusCode::NOT_FOUND
            },
        )
        .await;
        let deleted = await_event(&app, &ws, "runtime.deleted", rt).await;
        let offline = await_event(&app, &ws, "runtime.offline", rt).await;
        let after = ts(&deleted["occurred_at"]) - ts(&offline["occurred_at"]);
        assert!(
            after.to_std().unwrap() >= ttl,
            "collected {} ms after going offline (offline_runtime_ttl {ttl:?})",
            ms(after)
        );
    }
    let r = app
        .get(&format!("/api/v1/agents/{gone_agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);

    // The other two stay, tick after tick.
    await_ticks(&app.pool, max_run_id(&app.pool).await, 5).await;
    for rt in [&live_agent, &open_task] {
        assert_eq!(runtime_status(&app, &ws, rt).await, "offline");
    }
    assert_eq!(agent_status(&app, &ws, &kept_agent).await, "offline");
    assert_eq!(task_status(&app, &ws, &t).await, "queued");
    let evs = all_events(&app, &ws).await;
    for rt in [&live_agent, &open_task] {
        assert!(of(&evs, "runtime.deleted", rt).is_empty());
    }
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 5. event log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_older_than_event_retention_are_deleted() {
    let retention = Duration::from_secs(1);
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.event_retention = retention;
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "chatty").await;
    let agent = app.agent(&ws, &rt, 1).await;
    // Read from the table: GET /events delivers only below a cluster-wide transaction horizon, which
    // a long transaction in a parallel test can hold back for longer than the retention.
    let ws_id: Uuid = ws.id.parse().unwrap();
    let old: Vec<i64> = sqlx::query_scalar("SELECT id FROM events WHERE workspace_id = $1")
        .bind(ws_id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(old.len() >= 2, "registration and agent events: {old:?}");
    let mark = max_run_id(&app.pool).await;
    eventually(
        Duration::from_secs(6),
        "old events disappear from GET /events",
        || async {
            let evs = all_events(&app, &ws).await;
            !evs.iter().any(|e| old.contains(&e["id"].as_i64().unwrap()))
        },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY($1)")
        .bind(&old)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the rows are deleted, not just hidden");
    let gc: i64 = runs_after(&app.pool, mark)
        .await
        .iter()
        .filter(|r| r.1 == "events_gc")
        .map(|r| r.4 as i64)
        .sum();
    assert!(gc >= old.len() as i64, "events_gc recorded {gc} rows");
    // A young event is still there.
    let r = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &ws.member,
            json!({ "name": "renamed" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    await_event(&app, &ws, "agent.updated", &agent).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn event_retention_deletes_from_the_old_end_of_the_log_a_batch_at_a_time() {
    // The sweep reads the log by id from its old end (no index on occurred_at). Ids follow time
    // but not exactly: an event may be younger than one written after it (its transaction started
    // later). Seed such a log on a bare migrated database and run the sweep's statement.
    let url = common::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    paddock::db::MIGRATOR.run(&pool).await.unwrap();
    // `ages` in hours, in id order.
    async fn seed(pool: &sqlx::PgPool, ages: &[i32]) -> Vec<i64> {
        sqlx::query_scalar(
            "INSERT INTO events (workspace_id, type, subject_id, payload, occurred_at)
             SELECT gen_random_uuid(), 'task.completed', gen_random_uuid(), '{}',
                    now() - make_interval(hours => a)
             FROM unnest($1::int[]) WITH ORDINALITY AS u (a, o) ORDER BY o
             RETURNING id",
        )
        .bind(ages)
        .fetch_all(pool)
        .await
        .unwrap()
    }
    async fn left(pool: &sqlx::PgPool) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM events ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap()
    }
    let day = Duration::from_secs(86400);
    let sweep = |limit: i64| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            paddock::db::sweeps::delete_old_events(&mut conn, day, limit)
                .await
                .unwrap()
        }
    };
    // 30 h, 30 h, 2 h (a late writer's younger event), 30 h × 3, then young ones.
    let ids = seed(&pool, &[30, 30, 2, 30, 30, 30, 1, 0]).await;
    // A batch of 4 from the old end: of those four, the three old ones.
    assert_eq!(sweep(4).await, 3);
    assert_eq!(left(&pool).await, [ids[2], ids[4], ids[5], ids[6], ids[7]]);
    // The younger event now heads the log: the sweep waits until it is old itself, rather than
    // read past it (a whole log when nothing is old).
    assert_eq!(sweep(100).await, 0);
    sqlx::query("UPDATE events SET occurred_at = now() - interval '25 hours' WHERE id = $1")
        .bind(ids[2])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(sweep(100).await, 3);
    assert_eq!(left(&pool).await, [ids[6], ids[7]]);
    assert_eq!(sweep(100).await, 0, "nothing old is left");
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Leadership, healthy state, sweep_runs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn exactly_one_replica_sweeps_and_another_takes_over_when_it_dies() {
    let a = TestApp::spawn_with(fast).await;
    // A alone: it leads.
    let leader: String = eventually_some(Duration::from_secs(5), "replica A sweeps", || async {
        runs_after(&a.pool, 0).await.first().map(|r| r.2.clone())
    })
    .await;
    let b = a.replica(|_| {}).await;
    let pool = b.pool.clone();
    let mark = max_run_id(&pool).await;
    await_ticks(&pool, mark, 6).await;
    let runs = runs_after(&pool, mark).await;
    let replicas: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        replicas,
        [leader.as_str()].into(),
        "two replicas swept while both were up"
    );
    // Each tick runs each sweep once: no two replicas' ticks interleave.
    let ticks = runs.iter().filter(|r| r.1 == "stale_runtimes").count();
    let gcs = runs.iter().filter(|r| r.1 == "events_gc").count();
    assert!(
        ticks.abs_diff(gcs) <= 1,
        "{ticks} ticks, {gcs} events_gc runs"
    );

    // The leader goes away: B takes over within ~2 sweep intervals.
    let mark = max_run_id(&pool).await;
    let stopping = Utc::now();
    a.stop().await.unwrap();
    let first: Run = eventually_some(Duration::from_secs(5), "replica B sweeps", || async {
        runs_after(&pool, mark)
            .await
            .into_iter()
            .find(|r| r.2 != leader)
    })
    .await;
    let took = first.3 - stopping;
    eprintln!(
        "take-over: first sweep of the new leader {} ms after stop",
        ms(took)
    );
    assert!(
        took.to_std().unwrap_or_default() <= TICK * 2 + Duration::from_millis(200),
        "the new leader swept {} ms after the old one stopped (sweep_interval {TICK:?})",
        ms(took)
    );
    await_ticks(&pool, first.0 - 1, 4).await;
    let after: Vec<Run> = runs_after(&pool, first.0 - 1).await;
    assert!(
        after.iter().all(|r| r.2 == first.2),
        "after take-over, rows from several replicas: {:?}",
        after
            .iter()
            .map(|r| &r.2)
            .collect::<std::collections::BTreeSet<_>>()
    );
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_sweep_of_healthy_state_changes_nothing_and_records_its_runs() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "healthy").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let beats = Heartbeater::start(&app, &ws, &[&rt], TICK);
    let running = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let queued = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let c = app.claim(&ws, &rt, 1, 0).await;
    let att = s(&c["tasks"][0]["attempt_id"]);
    let r = app
        .report(&ws, &running, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let events_before = app.count("events").await;

    let mark = max_run_id(&app.pool).await;
    await_ticks(&app.pool, mark, 5).await;
    // Runs recorded in the tick that was under way at `mark` may be partial: look at whole ticks.
    let runs = runs_after(&app.pool, mark).await;
    let first_tick = runs.iter().position(|r| r.1 == "stale_runtimes").unwrap();
    let runs = &runs[first_tick..];
    for sweep in [
        "stale_runtimes",
        "dispatch_timeout",
        "running_timeout",
        "queued_expiry",
        "collector",
        "events_gc",
    ] {
        let n = runs.iter().filter(|r| r.1 == sweep).count();
        assert!(n >= 4, "{sweep} recorded {n} runs in 5 ticks: {runs:?}");
    }
    for r in runs {
        assert_eq!(r.4, 0, "a sweep changed rows of healthy state: {r:?}");
        assert!(r.5.is_none(), "a sweep failed: {r:?}");
    }
    assert_eq!(
        app.count("events").await,
        events_before,
        "a sweep wrote events"
    );
    assert_eq!(task_status(&app, &ws, &running).await, "running");
    assert_eq!(task_status(&app, &ws, &queued).await, "queued");
    assert_eq!(runtime_status(&app, &ws, &rt).await, "online");
    assert_all_online(&beats.stop().await);
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cost does not grow with task history
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sweep_queries_use_active_row_indexes() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "historian").await;
    let agent = app.agent(&ws, &rt, 3).await;
    // A few active rows through the API: one queued, one dispatched, one running.
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(s(&app.enqueue(&ws, &agent, json!({})).await["id"]));
        }
        v
    };
    let c = app.claim(&ws, &rt, 2, 0).await;
    let att = s(&c["tasks"][0]["attempt_id"]);
    let started = s(&c["tasks"][0]["task_id"]);
    let r = app
        .report(&ws, &started, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(ids.len(), 3);

    // History: 200k finished tasks, and many runtimes, online (fresh) and offline (recently).
    let (ws_id, rt_id, agent_id): (Uuid, Uuid, Uuid) = (
        ws.id.parse().unwrap(),
        rt.parse().unwrap(),
        agent.parse().unwrap(),
    );
    let seeding = Instant::now();
    for chunk in 0..10 {
        sqlx::query(
            "INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, status, payload, attempt, \
                                attempt_id, enqueued_at, dispatched_at, started_at, finished_at)
             SELECT gen_random_uuid(), $1, $2, $3, 'completed', '{}'::jsonb, 1, gen_random_uuid(),
                    now() - make_interval(secs => g * 10), now() - make_interval(secs => g * 10 - 1),
                    now() - make_interval(secs => g * 10 - 2), now() - make_interval(secs => g * 10 - 5)
             FROM generate_series($4::int, $4::int + 19999) g",
        )
        .bind(ws_id)
        .bind(agent_id)
        .bind(rt_id)
        .bind(chunk * 20000 + 1)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name, status, last_seen_at, offline_at)
         SELECT gen_random_uuid(), $1, 'seed-' || g, 'seed', 'seed',
                CASE WHEN g % 2 = 0 THEN 'online' ELSE 'offline' END,
                now() - make_interval(secs => g % 60),
                CASE WHEN g % 2 = 0 THEN NULL ELSE now() - make_interval(secs => g % 3600) END
         FROM generate_series(1, 20000) g",
    )
    .bind(ws_id)
    .execute(&app.pool)
    .await
    .unwrap();
    // Event history, half of it past a one-day retention.
    sqlx::query(
        "INSERT INTO events (workspace_id, type, subject_id, payload, occurred_at)
         SELECT $1, 'task.completed', gen_random_uuid(), '{}', now() - make_interval(secs => g * 2)
         FROM generate_series(1, 100000) g",
    )
    .bind(ws_id)
    .execute(&app.pool)
    .await
    .unwrap();
    // Transcripts of 20k finished tasks (5 messages each), half past a week, and revocations.
    for sql in [
        "INSERT INTO task_transcripts (task_id, attempt, bytes, first_at)
         SELECT id, 1, 50, now() - (row_number() OVER ()) * interval '1 minute'
         FROM (SELECT id FROM tasks WHERE status = 'completed' LIMIT 20000) t",
        "INSERT INTO task_messages (task_id, attempt, seq, kind, content)
         SELECT task_id, 1, g, 'text', 'hello' FROM task_transcripts, generate_series(0, 4) g",
        "INSERT INTO revoked_attempts (attempt_id, task_id, workspace_id, runtime_id, revoked_at)
         SELECT gen_random_uuid(), task_id, gen_random_uuid(), gen_random_uuid(),
                now() - (row_number() OVER ()) * interval '10 seconds'
         FROM task_transcripts",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    // A queued backlog of 20k tasks on another runtime's agent, with concurrency keys: the claim
    // of `rt` must not read it.
    let other_rt = app.runtime(&ws, "other").await;
    let other_agent = app.agent(&ws, &other_rt, 1).await;
    sqlx::query(
        "INSERT INTO tasks (id, workspace_id, agent_id, runtime_id, payload, concurrency_key, claim_key)
         SELECT gen_random_uuid(), $1, $2, $3, '{}'::jsonb, 'repo-' || (g % 100), g
         FROM generate_series(1, 20000) g",
    )
    .bind(ws_id)
    .bind(other_agent.parse::<Uuid>().unwrap())
    .bind(other_rt.parse::<Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "ANALYZE tasks, runtimes, agents, events, task_transcripts, task_messages, revoked_attempts",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    eprintln!("seeded history in {:?}", seeding.elapsed());

    let secs = |n: u64| format!("'{n}'::float8");
    let some_runtimes = format!("ARRAY['{rt}']::uuid[]");
    // (sweep, statement, the plan must use one of these indexes, no Seq Scan on this table either)
    let cases: Vec<(&str, String, &[&str], &str)> = vec![
        (
            "stale_dispatched",
            include_str!("../queries/sweeps/stale_dispatched.sql").replace("$1", "500"),
            &[
                "tasks_dispatched_deadline",
                "tasks_active_agent",
                "tasks_active_runtime",
            ],
            "tasks",
        ),
        (
            "stale_running",
            include_str!("../queries/sweeps/stale_running.sql").replace("$1", "500"),
            &[
                "tasks_running_deadline",
                "tasks_active_agent",
                "tasks_active_runtime",
            ],
            "tasks",
        ),
        (
            "expire_queued",
            include_str!("../queries/sweeps/expire_queued.sql").replace("$1", "500"),
            &["tasks_queued_deadline"],
            "tasks",
        ),
        (
            "stale_runtime_candidates",
            include_str!("../queries/sweeps/stale_runtime_candidates.sql")
                .replace("$1", &secs(150))
                .replace("$2", "500"),
            &["runtimes_online_seen"],
            "runtimes",
        ),
        (
            "collect_runtimes",
            include_str!("../queries/sweeps/collect_runtimes.sql")
                .replace("$1", &secs(7 * 86400))
                .replace("$2", "500"),
            &["runtimes_offline_since"],
            "tasks",
        ),
        (
            "mark_stale_offline",
            include_str!("../queries/sweeps/mark_stale_offline.sql")
                .replace("$1", &some_runtimes)
                .replace("$2", &secs(150)),
            &["runtimes_pkey", "runtimes_online_seen"],
            "runtimes",
        ),
        (
            "delete_old_events",
            include_str!("../queries/sweeps/delete_old_events.sql")
                .replace("$1", &secs(86400))
                .replace("$2", "5000"),
            &["events_pkey"],
            "events",
        ),
        (
            "transcripts_gc",
            include_str!("../queries/transcripts/expire.sql")
                .replace("$1", &secs(7 * 86400))
                .replace("$2", "100")
                .replace("$3", "16777216"),
            &["task_transcripts_first_at"],
            "task_transcripts",
        ),
        (
            "attempt_liveness: active attempts",
            include_str!("../queries/liveness/active_attempts.sql").replace("$1", "10000"),
            &["tasks_active_runtime", "tasks_active_agent"],
            "tasks",
        ),
        (
            "attempt_liveness: offline grace",
            include_str!("../queries/liveness/offline_tasks.sql")
                .replace("$1", &secs(60))
                .replace("$2", "500"),
            // Either side of the join is an active-row index: offline runtimes, or active tasks.
            &[
                "runtimes_offline_since",
                "tasks_active_runtime",
                "tasks_active_agent",
            ],
            "tasks",
        ),
        (
            "attempt_liveness: old revocations",
            include_str!("../queries/liveness/forget_revoked.sql")
                .replace("$1", &secs(86400))
                .replace("$2", "5000"),
            &["revoked_attempts_at"],
            "revoked_attempts",
        ),
        (
            "claim",
            include_str!("../queries/tasks/claim.sql")
                .replace("$1", &format!("'{rt}'::uuid"))
                .replace("$2", &format!("'{ws_id}'::uuid"))
                .replace("$3", "10")
                .replace("$4", "60000"),
            &["tasks_claim"],
            "tasks",
        ),
        (
            "blocked (why a queued task waits)",
            include_str!("../queries/tasks/blocked.sql")
                .replace("$1", &format!("ARRAY['{}']::uuid[]", ids[2]))
                .replace("$2", &format!("'{ws_id}'::uuid")),
            &["tasks_pkey"],
            "runtimes",
        ),
        (
            "task retention",
            include_str!("../queries/sweeps/delete_old_tasks.sql")
                .replace("$1", &secs(30 * 86400))
                .replace("$2", "500"),
            &["tasks_finished_at"],
            "tasks",
        ),
        (
            "bulk cancel by key",
            include_str!("../queries/tasks/to_cancel.sql")
                .replace("$1", &format!("'{ws_id}'::uuid"))
                .replace("$2", "ARRAY['queued', 'dispatched', 'running']")
                .replace("$3", "NULL")
                .replace("$4", "NULL")
                .replace("$5", "'repo-7'")
                .replace("$6", "9223372036854775807")
                .replace("$7", "200"),
            &["tasks_claim", "tasks_active_agent"],
            "tasks",
        ),
        (
            "active_of_runtimes (failing an offline runtime's tasks)",
            include_str!("../queries/tasks/active_of_runtimes.sql").replace("$1", &some_runtimes),
            &["tasks_active_runtime", "tasks_active_agent"],
            "tasks",
        ),
    ];
    let mut failures = Vec::new();
    for (name, sql, want, no_seq_on) in cases {
        let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {name}: {e}"));
        let mut nodes = Vec::new();
        plan_nodes(&plan[0]["Plan"], &mut nodes);
        let indexes: Vec<&str> = nodes
            .iter()
            .map(|n| n.2.as_str())
            .filter(|i| !i.is_empty())
            .collect();
        if !want.iter().any(|w| indexes.contains(w)) {
            failures.push(format!("{name}: plan uses none of {want:?}: {nodes:?}"));
        }
        let mut rels = vec!["tasks", no_seq_on];
        rels.dedup();
        for rel in rels {
            if nodes.iter().any(|n| n.0 == "Seq Scan" && n.1 == rel) {
                failures.push(format!("{name}: Seq Scan on {rel}: {nodes:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Start-up check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_threshold_not_above_flush_heartbeat_and_sweep_intervals_is_refused_at_start() {
    let mut settings = Settings::default();
    fast(&mut settings);
    for (stale, ok) in [(500, false), (600, false), (601, true), (1500, true)] {
        settings.stale_threshold = Duration::from_millis(stale);
        match settings.validate() {
            Ok(()) => assert!(
                ok,
                "stale_threshold {stale} ms accepted with 3 × 200 ms intervals"
            ),
            Err(e) => {
                assert!(!ok, "stale_threshold {stale} ms refused: {e}");
                assert!(e.contains("stale_threshold"), "{e}");
            }
        }
    }

    let url = common::fresh_database().await;
    let mut settings = common::test_settings(&url);
    fast(&mut settings);
    settings.stale_threshold = Duration::from_millis(600);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        paddock::serve(settings, listener, CancellationToken::new()),
    )
    .await
    .expect("serve with an invalid stale_threshold must return, not serve");
    let err = res.expect_err("serve accepted stale_threshold = flush + heartbeat + sweep");
    let msg = format!("{err:#}");
    assert!(msg.contains("stale_threshold"), "{msg}");
}
