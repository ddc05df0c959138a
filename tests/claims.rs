//! `POST /daemon/claim` (DESIGN.md §4): order, limits, `run_after`, offline/unknown runtimes,
//! exclusive dispatch under concurrent claimers, long-poll wake-up latency and `wait_ms` bounds.
//!
//! Every test names the clause it proves. Nothing here sleeps to synchronise; latencies are measured
//! with `Instant`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::api::deregister;
use common::json::{claimed_ids as ids_of, s};
use common::{TestApp, Ws};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn claimed(reply: &Value) -> &Vec<Value> {
    reply["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {reply}"))
}

/// Start and complete a claimed task.
async fn finish(app: &TestApp, ws: &Ws, t: &Value) {
    let id = s(&t["task_id"]);
    let attempt = &t["attempt_id"];
    let r = app
        .report(ws, &id, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "start {id}: {:?}", r.body);
    let r = app
        .report(
            ws,
            &id,
            "complete",
            json!({ "attempt_id": attempt, "result": { "ok": true } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "complete {id}: {:?}", r.body);
}

/// Dispatched + running tasks of a runtime.
async fn active_of_runtime(app: &TestApp, rt: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE runtime_id = $1 AND status IN ('dispatched', 'running')",
    )
    .bind(rt.parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn claim_raw(app: &TestApp, ws: &Ws, body: Value) -> common::Resp {
    app.post("/api/v1/daemon/claim", &ws.daemon, body).await
}

/// Enqueues `n` tasks round-robin over `agents`, eight at a time; returns their ids.
async fn enqueue_many(app: &TestApp, ws: &Ws, agents: &[String], n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let agent = agents[i % agents.len()].clone();
            async move {
                s(&app
                    .enqueue(ws, &agent, json!({ "payload": { "i": i } }))
                    .await["id"])
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

// ───────────────────────────── order ─────────────────────────────

#[tokio::test]
async fn claim_order_is_priority_desc_then_fifo() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    // One agent: across agents, equal priorities take turns (tests/scheduling.rs).
    let agent = app.agent(&ws, &rt, 100).await;
    let priorities = [0, 5, -1, 5, 0, 10, -1, 0, 5];
    let mut enqueued = Vec::new();
    for p in priorities {
        let t = app.enqueue(&ws, &agent, json!({ "priority": p })).await;
        enqueued.push((p, s(&t["id"])));
    }
    // Expected: stable sort by priority desc keeps FIFO within a priority.
    let mut expected = enqueued.clone();
    expected.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    // A partial claim takes the best ones, not just any three.
    let first = app.claim(&ws, &rt, 3, 0).await;
    assert_eq!(ids_of(&first), expected[..3], "first claim of 3: {first}");
    let prios: Vec<&Value> = claimed(&first).iter().map(|t| &t["priority"]).collect();
    assert_eq!(prios, [&json!(10), &json!(5), &json!(5)]);

    let rest = app.claim(&ws, &rt, 10, 0).await;
    assert_eq!(ids_of(&rest), expected[3..], "the rest, in order: {rest}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn claim_reply_carries_the_task_fields() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let t = app
        .enqueue(
            &ws,
            &agent,
            json!({ "priority": 7, "payload": { "prompt": "x" } }),
        )
        .await;
    let c = app.claim(&ws, &rt, 1, 0).await;
    let got = &claimed(&c)[0];
    assert_eq!(got["task_id"], t["id"]);
    assert_eq!(got["agent_id"], agent.as_str());
    assert_eq!(got["attempt"], 1);
    assert!(
        got["attempt_id"]
            .as_str()
            .is_some_and(|a| a.parse::<Uuid>().is_ok()),
        "{got}"
    );
    assert_eq!(got["definition_version"], 1);
    assert_eq!(got["payload"], json!({ "prompt": "x" }));
    assert_eq!(got["priority"], 7);
    assert_eq!(got["enqueued_at"], t["enqueued_at"]);
    assert_eq!(c["cancel"], json!([]));
    app.stop().await.unwrap();
}

// ───────────────────────────── limits ─────────────────────────────

#[tokio::test]
async fn max_tasks_up_to_100_returns_100_tasks() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1000).await;
    enqueue_many(&app, &ws, std::slice::from_ref(&agent), 120).await;

    let c = app.claim(&ws, &rt, 100, 0).await;
    let ids = ids_of(&c);
    assert_eq!(ids.len(), 100);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        100,
        "distinct tasks"
    );
    let c = app.claim(&ws, &rt, 100, 0).await;
    assert_eq!(claimed(&c).len(), 20, "the remaining 20");

    let r = claim_raw(&app, &ws, json!({ "runtime_id": rt, "max_tasks": 101 })).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "max_tasks above 100: {:?}",
        r.body
    );
    assert_eq!(r.code(), "validation_failed");
    let r = claim_raw(&app, &ws, json!({ "runtime_id": rt, "max_tasks": 0 })).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "max_tasks 0: {:?}",
        r.body
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn agent_never_holds_more_than_max_concurrent_tasks() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 2).await;
    enqueue_many(&app, &ws, std::slice::from_ref(&agent), 5).await;

    let c = app.claim(&ws, &rt, 10, 0).await;
    assert_eq!(claimed(&c).len(), 2, "agent limit 2: {c}");
    assert_eq!(
        claimed(&app.claim(&ws, &rt, 10, 0).await).len(),
        0,
        "both slots held"
    );

    finish(&app, &ws, &claimed(&c)[0]).await;
    let c2 = app.claim(&ws, &rt, 10, 0).await;
    assert_eq!(claimed(&c2).len(), 1, "one slot freed: {c2}");
    assert_eq!(active_of_runtime(&app, &rt).await, 2);

    // A running (started) task holds its slot just like a dispatched one.
    let t = &claimed(&c2)[0];
    let r = app
        .report(
            &ws,
            &s(&t["task_id"]),
            "start",
            json!({ "attempt_id": t["attempt_id"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(claimed(&app.claim(&ws, &rt, 10, 0).await).len(), 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn runtime_never_holds_more_than_its_max_concurrency() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app
        .runtime_with(
            &ws,
            json!({ "daemon_id": "d", "provider": "p", "max_concurrency": 3 }),
        )
        .await;
    let agents = [app.agent(&ws, &rt, 5).await, app.agent(&ws, &rt, 5).await];
    enqueue_many(&app, &ws, &agents, 10).await;

    // Several claims at once still share the runtime's 3 slots.
    let replies = futures::future::join_all((0..4).map(|_| app.claim(&ws, &rt, 10, 0))).await;
    let mut held: Vec<Value> = replies.iter().flat_map(|r| claimed(r).clone()).collect();
    assert_eq!(held.len(), 3, "runtime max_concurrency 3: {replies:?}");
    assert_eq!(active_of_runtime(&app, &rt).await, 3);

    let mut done = 0;
    while done < 10 {
        let t = held.remove(0);
        finish(&app, &ws, &t).await;
        done += 1;
        let c = app.claim(&ws, &rt, 10, 0).await;
        held.extend(claimed(&c).iter().cloned());
        let active = active_of_runtime(&app, &rt).await;
        assert!(
            active <= 3,
            "runtime holds {active} tasks, max_concurrency is 3"
        );
        assert_eq!(active as usize, held.len());
        if done <= 7 {
            assert_eq!(
                held.len(),
                3,
                "a freed slot is taken again while work is queued"
            );
        }
    }
    assert!(held.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status <> 'completed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn run_after_is_honoured_for_a_requeued_task() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_secs(2)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 10).await;
    let retried = s(&app
        .enqueue(&ws, &agent, json!({ "priority": 100, "max_attempts": 2 }))
        .await["id"]);
    let c = app.claim(&ws, &rt, 1, 0).await;
    let attempt = &claimed(&c)[0]["attempt_id"];
    let r = app
        .report(
            &ws,
            &retried,
            "fail",
            json!({ "attempt_id": attempt, "error": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "queued");
    let failed_at = Instant::now();

    // Queued with a higher priority than anything else, but not claimable yet; others are.
    let other = s(&app.enqueue(&ws, &agent, json!({ "priority": 0 })).await["id"]);
    let c = app.claim(&ws, &rt, 10, 0).await;
    assert_eq!(
        ids_of(&c),
        std::slice::from_ref(&other),
        "only the task without a future run_after: {c}"
    );
    assert_eq!(claimed(&app.claim(&ws, &rt, 10, 0).await).len(), 0);

    let c = app.claim(&ws, &rt, 10, 5000).await;
    let waited = failed_at.elapsed();
    assert_eq!(ids_of(&c), std::slice::from_ref(&retried), "{c}");
    assert!(
        waited >= Duration::from_millis(1500),
        "claimed {waited:?} after the failure, backoff 2s"
    );
    let (dispatched_at, run_after): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT dispatched_at, run_after FROM tasks WHERE id = $1")
            .bind(retried.parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        dispatched_at >= run_after,
        "dispatched at {dispatched_at} before run_after {run_after}"
    );
    app.stop().await.unwrap();
}

// ───────────────────────────── offline and unknown runtimes ─────────────────────────────

#[tokio::test]
async fn claim_for_an_offline_runtime_is_refused_with_runtime_offline() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    deregister(&app, &ws, &rt).await;

    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 0 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "runtime_offline");
    // A long poll is refused at once too, not after waiting.
    let t0 = Instant::now();
    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 5000 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        t0.elapsed()
    );

    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued", "nothing dispatched");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn claim_for_an_unknown_runtime_is_not_found() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": Uuid::new_v4(), "max_tasks": 1 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    assert_eq!(r.code(), "not_found");

    // Another workspace's runtime is not found either.
    let ws2 = app.workspace().await;
    let rt2 = app.runtime(&ws2, "d").await;
    let r = claim_raw(&app, &ws, json!({ "runtime_id": rt2, "max_tasks": 1 })).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    app.stop().await.unwrap();
}

// ───────────────────────────── exclusive dispatch ─────────────────────────────

/// Claimers working one runtime until `total` of its tasks have been claimed; each claimed task is
/// started and completed. Returns every (task id, agent id) it got, in claim order.
async fn claim_loop(
    app: Arc<TestApp>,
    ws: Ws,
    rt: String,
    worker: usize,
    claimed_total: Arc<AtomicUsize>,
    total: usize,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = Vec::new();
    let mut round = 0usize;
    while claimed_total.load(Ordering::SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "worker {worker}: not all tasks claimed within 120 s"
        );
        let max = 1 + ((worker + round) % 7) as i64;
        round += 1;
        let c = app.claim(&ws, &rt, max, 0).await;
        let tasks = claimed(&c).clone();
        assert!(
            tasks.len() as i64 <= max,
            "claim of {max} returned {}",
            tasks.len()
        );
        claimed_total.fetch_add(tasks.len(), Ordering::SeqCst);
        for t in &tasks {
            got.push((s(&t["task_id"]), s(&t["agent_id"])));
            finish(&app, &ws, t).await;
        }
    }
    got
}

/// Runs `workers` claimers per runtime over all runtimes at once; asserts each task was claimed
/// exactly once, by a claimer of its own runtime, and completed.
async fn assert_exclusive_dispatch(
    runtimes: usize,
    agents_per_runtime: usize,
    tasks_per_runtime: usize,
    workers: usize,
) {
    let app = Arc::new(TestApp::spawn().await);
    let ws = app.workspace().await;
    let mut setups = Vec::new();
    for r in 0..runtimes {
        let rt = app.runtime(&ws, &format!("daemon-{r}")).await;
        let mut agents = Vec::new();
        for _ in 0..agents_per_runtime {
            agents.push(app.agent(&ws, &rt, 1000).await);
        }
        let tasks = enqueue_many(&app, &ws, &agents, tasks_per_runtime).await;
        setups.push((rt, agents, tasks));
    }

    let started = Instant::now();
    let mut handles = Vec::new();
    for (rt, _, tasks) in &setups {
        let counter = Arc::new(AtomicUsize::new(0));
        for w in 0..workers {
            let h = tokio::spawn(claim_loop(
                app.clone(),
                ws.clone(),
                rt.clone(),
                w,
                counter.clone(),
                tasks.len(),
            ));
            handles.push((rt.clone(), h));
        }
    }
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut claimed_by_rt: HashMap<String, String> = HashMap::new();
    let mut agent_of: HashMap<String, String> = HashMap::new();
    for (rt, h) in handles {
        for (task, agent) in h.await.expect("claimer panicked") {
            *times.entry(task.clone()).or_default() += 1;
            claimed_by_rt.insert(task.clone(), rt.clone());
            agent_of.insert(task, agent);
        }
    }
    let elapsed = started.elapsed();
    let total = runtimes * tasks_per_runtime;
    println!(
        "{total} tasks over {runtimes} runtime(s), {} claimers: all claimed and completed in {elapsed:?}",
        runtimes * workers
    );

    let twice: Vec<(&String, &usize)> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks claimed more than once: {twice:?}");
    for (rt, agents, tasks) in &setups {
        for t in tasks {
            assert_eq!(
                times.get(t),
                Some(&1),
                "task {t} claimed {:?} times",
                times.get(t)
            );
            assert_eq!(
                claimed_by_rt[t], *rt,
                "task {t} claimed through another runtime"
            );
            assert!(
                agents.contains(&agent_of[t]),
                "task {t} reported with a foreign agent"
            );
        }
    }
    assert_eq!(
        times.len(),
        total,
        "claimed ids are exactly the enqueued ones"
    );

    let rows: Vec<(String, i32)> = sqlx::query_as("SELECT status, attempt FROM tasks")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), total);
    for (status, attempt) in &rows {
        assert_eq!(status, "completed");
        assert_eq!(*attempt, 1, "each task dispatched once");
    }
    let dispatched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task.dispatched'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(dispatched as usize, total, "one dispatch event per task");
    let app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("app still shared"));
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_claimers_never_get_the_same_task() {
    assert_exclusive_dispatch(1, 3, 500, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_claimers_never_get_the_same_task_over_two_runtimes_in_parallel() {
    assert_exclusive_dispatch(2, 2, 250, 8).await;
}

// ───────────────────────────── long poll ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_poll_claim_is_woken_by_an_enqueue_within_250ms() {
    let app = Arc::new(TestApp::spawn().await);
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 100).await;

    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let poll_started = Instant::now();
        let claim = tokio::spawn({
            let (app, ws, rt) = (app.clone(), ws.clone(), rt.clone());
            async move {
                let reply = app.claim(&ws, &rt, 1, 10_000).await;
                (reply, Instant::now())
            }
        });
        // The scenario, not a synchronisation: the task appears ~200 ms into the poll.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !claim.is_finished(),
            "round {round}: the claim returned before anything was enqueued"
        );
        let enqueue_sent = Instant::now();
        let t = app
            .enqueue(&ws, &agent, json!({ "payload": { "round": round } }))
            .await;
        let enqueued = Instant::now();
        let (reply, answered) = claim.await.unwrap();
        assert_eq!(ids_of(&reply), [s(&t["id"])], "round {round}: {reply}");

        let latency = answered.saturating_duration_since(enqueued);
        println!(
            "long-poll wake-up, round {round}: claim answered {latency:?} after the enqueue response \
             ({:?} after the enqueue request; poll open {:?})",
            answered.saturating_duration_since(enqueue_sent),
            answered - poll_started,
        );
        assert!(
            latency < Duration::from_millis(250),
            "round {round}: woken {latency:?} after the enqueue"
        );
        worst = worst.max(latency);
    }
    println!("long-poll wake-up latency, worst of 5: {worst:?}");
    let app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("app still shared"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn long_poll_with_nothing_to_claim_returns_empty_after_wait_ms() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    app.agent(&ws, &rt, 1).await;

    let t0 = Instant::now();
    let c = app.claim(&ws, &rt, 1, 300).await;
    let waited = t0.elapsed();
    println!("empty long poll of 300 ms answered after {waited:?}");
    assert_eq!(c["tasks"], json!([]));
    assert_eq!(c["cancel"], json!([]));
    assert!(
        waited >= Duration::from_millis(300),
        "answered before wait_ms: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "answered long after wait_ms: {waited:?}"
    );

    // wait_ms 0 (the default) answers at once.
    let t0 = Instant::now();
    let r = claim_raw(&app, &ws, json!({ "runtime_id": rt })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["tasks"], json!([]));
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "default wait took {:?}",
        t0.elapsed()
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn wait_ms_is_capped_at_30000() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    // Something to claim, so the accepted 30 s poll answers at once.
    let t = app.enqueue(&ws, &agent, json!({})).await;

    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 30001 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.code(), "validation_failed");
    let status: String = sqlx::query_scalar("SELECT status FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "queued", "a refused claim dispatches nothing");

    let t0 = Instant::now();
    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 30000 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(ids_of(&r.body), [s(&t["id"])]);
    assert!(t0.elapsed() < Duration::from_secs(2));

    let r = claim_raw(
        &app,
        &ws,
        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": -1 }),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    app.stop().await.unwrap();
}

/// A claim looks before it takes its transaction and locks: with nothing to claim it answers
/// without them, so an idle daemon's long poll costs one statement. Shown by holding the
/// runtime's claim lock elsewhere: the idle claim still answers; once a task is queued, a claim
/// waits for the lock (the full claim still serialises on it) and gets the task when it is freed.
#[tokio::test]
async fn an_idle_claim_answers_without_taking_the_claim_lock() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "idle").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let mut holder = paddock::db::begin(&app.pool).await.unwrap();
    paddock::db::runtimes::lock_for_claim(&mut holder, rt.parse().unwrap())
        .await
        .unwrap();

    let idle = tokio::time::timeout(
        Duration::from_secs(10),
        claim_raw(
            &app,
            &ws,
            json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 0 }),
        ),
    )
    .await
    .expect("an idle claim waited for the claim lock");
    assert_eq!(idle.status, StatusCode::OK, "{:?}", idle.body);
    assert!(claimed(&idle.body).is_empty(), "{:?}", idle.body);

    let task = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let pending = tokio::spawn({
        let (client, rt) = (app.client(&ws.daemon), rt.clone());
        async move {
            client
                .claim(
                    &serde_json::from_value(
                        json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 0 }),
                    )
                    .unwrap(),
                )
                .await
                .expect("claim")
        }
    });
    common::wait::holds_for(
        Duration::from_millis(500),
        "the claim with work waits for the lock",
        || {
            let done = pending.is_finished();
            async move { !done }
        },
    )
    .await;
    holder.rollback().await.unwrap();
    let got = serde_json::to_value(pending.await.unwrap()).unwrap();
    assert_eq!(ids_of(&got), vec![task], "{got}");
    app.stop().await.unwrap();
}

// ───────────────────────────── plans ─────────────────────────────

/// A claim (its first look, the claim itself) and the heartbeat's store-down check find the
/// runtime by its key even when `runtimes` has no statistics — a fresh or fast-grown table before
/// its autovacuum analyze, or a server without autovacuum. With `status = 'online'` beside the key,
/// the generic plan read the partial index `runtimes_online_provider`: every online runtime of the
/// workspace, each claim (2.6 ms a claim at 10,000 runtimes, against 0.065 ms by the key).
#[tokio::test]
async fn claims_find_their_runtime_by_its_key_in_a_table_without_statistics() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "keyed").await;
    // 10,000 more online runtimes in the workspace, inserted now: no ANALYZE has seen them.
    sqlx::query(
        "INSERT INTO runtimes (id, workspace_id, daemon_id, provider, name)
         SELECT gen_random_uuid(), $1, 'bulk-' || g, 'claude-code', 'bulk-' || g
         FROM generate_series(1, 10000) g",
    )
    .bind(ws.id.parse::<Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let (r, w) = (format!("'{rt}'::uuid"), format!("'{}'::uuid", ws.id));
    let cases = [
        (
            "claim_look",
            include_str!("../queries/tasks/claim_look.sql"),
            "uuid, uuid",
            format!("{r}, {w}"),
        ),
        (
            "claim",
            include_str!("../queries/tasks/claim.sql"),
            "uuid, uuid, bigint, bigint",
            format!("{r}, {w}, 1, 1000"),
        ),
        (
            "online_of",
            include_str!("../queries/runtimes/online_of.sql"),
            "uuid, uuid[]",
            format!("{w}, ARRAY[{r}]"),
        ),
    ];
    // The plans the server runs: generic ones, prepared once per connection.
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut failures = Vec::new();
    for (name, sql, types, args) in cases {
        sqlx::raw_sql(&format!("PREPARE {name} ({types}) AS {sql}"))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("PREPARE {name}: {e}"));
        let plan: Value =
            sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name} ({args})"))
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("EXPLAIN {name}: {e}"));
        let mut nodes = Vec::new();
        common::db::plan_nodes(&plan[0]["Plan"], &mut nodes);
        let runtimes: Vec<_> = nodes.iter().filter(|n| n.1 == "runtimes").collect();
        if runtimes.is_empty() {
            failures.push(format!("{name}: the plan reads no runtimes: {nodes:?}"));
        }
        for n in runtimes {
            if !["runtimes_pkey", "runtimes_workspace_id_id_key"].contains(&n.2.as_str()) {
                failures.push(format!("{name}: runtimes read by {} {}", n.0, n.2));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(conn);
    app.stop().await.unwrap();
}

/// The buffers an `EXPLAIN (ANALYZE, BUFFERS)` says its statement touched.
fn buffers(plan: &Value) -> i64 {
    let p = &plan[0]["Plan"];
    p["Shared Hit Blocks"].as_i64().unwrap() + p["Shared Read Blocks"].as_i64().unwrap()
}

/// A claim counts its runtime's and agents' active tasks through the partial indexes
/// `tasks_active_runtime` and `tasks_active_agent`. A task that has finished leaves its entry
/// there until a vacuum: without one (autovacuum off, or just behind a fast drain), a claim that
/// visited the heap for every such entry, every time, grew with the runtime's history (7,100
/// entries, half the claim's time, midway through a 100k drain). Run as the server runs it —
/// after the claim's locks, in its transaction, with its generic plan — a claim passes the
/// finished tasks once, and the next one does not see them again.
#[tokio::test]
async fn a_claim_does_not_revisit_the_runtimes_finished_tasks() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "history").await;
    let agent = app.agent(&ws, &rt, 1000).await;
    // A backlog of another runtime's agent makes the table as large as a drain's: then, without
    // statistics, the planner reads the counts' index ranges by bitmap.
    // No vacuum may clean the dead entries up between the set-up and the claims.
    sqlx::query("ALTER TABLE tasks SET (autovacuum_enabled = off)")
        .execute(&app.pool)
        .await
        .unwrap();
    let other = app.runtime(&ws, "backlog").await;
    let backlog = app.agent(&ws, &other, 1).await;
    let uuid = |s: &str| s.parse::<Uuid>().unwrap();
    let (w, r) = (uuid(&ws.id), uuid(&rt));
    let insert = "INSERT INTO tasks (id, workspace_id, agent_id, payload)
                  SELECT gen_random_uuid(), $1, $2, '{}' FROM generate_series(1, $3)";
    for (agent, n) in [(&backlog, 100_000), (&agent, 3000)] {
        let q = sqlx::query(insert).bind(w).bind(uuid(agent)).bind(n);
        q.execute(&app.pool).await.unwrap();
    }
    // The 3,000 through dispatched to completed, by statements that pass no index entry.
    for sql in [
        "UPDATE tasks SET status = 'dispatched', runtime_id = $1, attempt = 1,
                          attempt_id = gen_random_uuid(), dispatched_at = now()
         WHERE agent_id = $2",
        "UPDATE tasks SET status = 'completed', finished_at = now() WHERE agent_id = $2",
    ] {
        let q = sqlx::query(sql).bind(r).bind(uuid(&agent));
        q.execute(&app.pool).await.unwrap();
    }

    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "PREPARE claim (uuid, uuid, bigint, bigint) AS {}",
        include_str!("../queries/tasks/claim.sql")
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query(include_str!("../queries/runtimes/lock_for_claim.sql"))
        .bind(1_i64)
        .bind(r)
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut touched = Vec::new();
    for _ in 0..2 {
        let plan: Value = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim ('{r}', '{w}', 50, 1000)"
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let mut nodes = Vec::new();
        common::db::plan_nodes(&plan[0]["Plan"], &mut nodes);
        let bitmap: Vec<_> = nodes
            .iter()
            .filter(|n| n.0 == "Bitmap Heap Scan" && n.1 == "tasks")
            .collect();
        assert!(bitmap.is_empty(), "tasks read by bitmap: {nodes:?}");
        touched.push(buffers(&plan));
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    // The first claim visits the finished tasks' rows (~320 buffers), the second not (~50; ~220
    // by bitmap).
    assert!(
        touched[0] >= 200,
        "the first claim saw no history: {touched:?}"
    );
    assert!(
        touched[1] < 100,
        "the second claim read the history again: {touched:?}"
    );
    drop(conn);
    app.stop().await.unwrap();
}
