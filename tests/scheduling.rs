//! Scheduling controls (DESIGN §12): fairness across agents, priority aging, concurrency keys,
//! per-task timeouts, pause and drain, bulk cancel, why a task waits, task retention.

mod common;

use std::time::{Duration, Instant};

use common::api::task;
use common::json::{claimed_ids as ids_of, s};
use common::{TestApp, Ws, api, eventually, settings};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn enqueue_n(app: &TestApp, ws: &Ws, agent: &str, n: usize, extra: Value) -> Vec<String> {
    let tasks: Vec<Value> = (0..n)
        .map(|_| {
            let mut t = json!({ "agent_id": agent, "payload": {} });
            t.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            t
        })
        .collect();
    let r = app
        .post("/api/v1/tasks/batch", &ws.member, json!({ "tasks": tasks }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 201, "{r}");
            s(&r["task"]["id"])
        })
        .collect()
}

/// Starts and completes a claimed task.
async fn finish(app: &TestApp, ws: &Ws, claimed: &Value) {
    let (id, att) = (s(&claimed["task_id"]), s(&claimed["attempt_id"]));
    let r = app
        .report(ws, &id, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            ws,
            &id,
            "complete",
            json!({ "attempt_id": att, "result": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

// ───────────────────────────── fairness ─────────────────────────────

#[tokio::test]
async fn a_small_agents_task_is_claimed_while_a_large_agents_backlog_waits() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let big = app.agent(&ws, &rt, 100).await;
    let small = app.agent(&ws, &rt, 100).await;
    let backlog = enqueue_n(&app, &ws, &big, 50, json!({})).await;
    let mine = enqueue_n(&app, &ws, &small, 2, json!({})).await;

    // One claim of 4 takes the agents in turn: big, small, big, small.
    let c = app.claim(&ws, &rt, 4, 0).await;
    assert_eq!(
        ids_of(&c),
        [
            backlog[0].clone(),
            mine[0].clone(),
            backlog[1].clone(),
            mine[1].clone()
        ],
        "{c}"
    );

    // Across claims: the agent served least recently goes first.
    let more = enqueue_n(&app, &ws, &small, 1, json!({})).await;
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(
        ids_of(&c),
        std::slice::from_ref(&backlog[2]),
        "both served last claim: FIFO"
    );
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(
        ids_of(&c),
        std::slice::from_ref(&more[0]),
        "the small agent was served least recently"
    );
    // A higher priority still wins over fairness.
    let urgent = enqueue_n(&app, &ws, &big, 1, json!({ "priority": 5 })).await;
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(ids_of(&c), std::slice::from_ref(&urgent[0]));
}

// ───────────────────────────── aging ─────────────────────────────

/// A steady flood of priority-10 tasks, one claimed (and completed) at a time: the priority-0 task
/// enqueued first is claimed once it has waited 10 aging steps, not starved. Returns how long it
/// waited, or None if it was not claimed within `within`.
async fn starve(aging: Duration, within: Duration) -> Option<Duration> {
    let app = TestApp::spawn_with(|s| s.priority_aging = aging).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let low = s(&app.enqueue(&ws, &agent, json!({ "priority": 0 })).await["id"]);
    let t0 = Instant::now();
    enqueue_n(&app, &ws, &agent, 2, json!({ "priority": 10 })).await;
    while t0.elapsed() < within {
        enqueue_n(&app, &ws, &agent, 1, json!({ "priority": 10 })).await;
        let c = app.claim(&ws, &rt, 1, 0).await;
        let t = &c["tasks"][0];
        if s(&t["task_id"]) == low {
            return Some(t0.elapsed());
        }
        finish(&app, &ws, t).await;
    }
    None
}

#[tokio::test]
async fn a_priority_0_task_is_claimed_under_a_flood_of_priority_10_within_the_aging_bound() {
    let step = Duration::from_millis(100);
    let waited = starve(step, Duration::from_secs(10))
        .await
        .expect("the priority-0 task was starved");
    println!("priority 0 under a flood of 10, aging {step:?}: claimed after {waited:?}");
    assert!(
        waited >= step * 10,
        "claimed before it could have aged 10 steps: {waited:?}"
    );
    assert!(
        waited < step * 10 + Duration::from_secs(3),
        "claimed long after 10 steps: {waited:?}"
    );
}

#[tokio::test]
async fn without_aging_the_flood_starves_priority_0() {
    assert_eq!(starve(Duration::ZERO, Duration::from_secs(2)).await, None);
}

// ───────────────────────────── concurrency keys ─────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_key_holds_under_16_concurrent_claimers_over_two_replicas() {
    let app = TestApp::spawn().await;
    let replica = app.replica(|_| {}).await;
    let ws = app.workspace().await;
    let mut fleet = Vec::new();
    for i in 0..16 {
        let rt = app.runtime(&ws, &format!("d{i}")).await;
        let agent = app.agent(&ws, &rt, 10).await;
        enqueue_n(&app, &ws, &agent, 3, json!({ "concurrency_key": "repo-a" })).await;
        enqueue_n(
            &app,
            &ws,
            &agent,
            2,
            json!({ "concurrency_key": "repo-b", "concurrency_limit": 2 }),
        )
        .await;
        fleet.push(rt);
    }
    let active = |key: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM tasks WHERE concurrency_key = $1 AND status IN ('dispatched', 'running')",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let mut done = 0;
    for round in 0..12 {
        let claims = fleet.iter().enumerate().map(|(i, rt)| {
            let target = if i % 2 == 0 { &app } else { &replica };
            target.claim(&ws, rt, 10, 0)
        });
        let replies = futures::future::join_all(claims).await;
        let (a, b) = (active("repo-a").await, active("repo-b").await);
        assert!(
            a <= 1,
            "round {round}: {a} tasks of repo-a active (limit 1)"
        );
        assert!(
            b <= 2,
            "round {round}: {b} tasks of repo-b active (limit 2)"
        );
        for reply in &replies {
            for t in reply["tasks"].as_array().unwrap() {
                finish(&app, &ws, t).await;
                done += 1;
            }
        }
    }
    assert!(
        done >= 12 + 12,
        "the keys still made progress: {done} tasks done"
    );
}

#[tokio::test]
async fn a_freed_key_slot_wakes_a_waiting_claim_on_another_runtime() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (rt1, rt2) = (app.runtime(&ws, "a").await, app.runtime(&ws, "b").await);
    let (a1, a2) = (app.agent(&ws, &rt1, 1).await, app.agent(&ws, &rt2, 1).await);
    enqueue_n(&app, &ws, &a1, 1, json!({ "concurrency_key": "k" })).await;
    let waiting = enqueue_n(&app, &ws, &a2, 1, json!({ "concurrency_key": "k" })).await;
    let first = app.claim(&ws, &rt1, 1, 0).await;
    assert_eq!(first["tasks"].as_array().unwrap().len(), 1);
    let blocked = task(&app, &ws, &waiting[0]).await;
    assert_eq!(blocked["blocked"]["reason"], "key_at_capacity", "{blocked}");
    let poll = api::long_poll(&app, &ws, &rt2, 1, 10_000);
    // The scenario, not a synchronisation: the slot frees ~200 ms into the poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "claimed while the key was taken");
    finish(&app, &ws, &first["tasks"][0]).await;
    let freed = Instant::now();
    let reply = poll.await.unwrap();
    assert_eq!(reply.tasks.len(), 1);
    assert_eq!(reply.tasks[0].task_id.to_string(), waiting[0]);
    assert!(
        freed.elapsed() < Duration::from_millis(500),
        "woken {:?} after the slot freed",
        freed.elapsed()
    );
}

// ───────────────────────────── per-task timeouts ─────────────────────────────

#[tokio::test]
async fn per_task_timeouts_override_the_defaults() {
    let app = TestApp::spawn_with(settings::fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let hb = common::heartbeater::Heartbeater::start(&app, &ws, &[&rt], settings::TICK);
    let agent = app.agent(&ws, &rt, 10).await;
    let quick = s(&app
        .enqueue(&ws, &agent, json!({ "dispatch_timeout": "300ms" }))
        .await["id"]);
    let slow = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let t = task(&app, &ws, &quick).await;
    assert_eq!(t["dispatch_timeout_ms"], 300);
    assert_eq!(t["running_timeout_ms"], 150 * 60 * 1000, "the default");
    let claimed = app.claim(&ws, &rt, 2, 0).await;
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 2);
    eventually(
        Duration::from_secs(5),
        "the quick task's dispatch timeout",
        || async { task(&app, &ws, &quick).await["failure_reason"] == "dispatch_timeout" },
    )
    .await;
    assert_eq!(task(&app, &ws, &slow).await["status"], "dispatched");

    // Running timeout, in milliseconds.
    let run = s(&app
        .enqueue(&ws, &agent, json!({ "running_timeout": 400 }))
        .await["id"]);
    let c = app.claim(&ws, &rt, 1, 0).await;
    let att = s(&c["tasks"][0]["attempt_id"]);
    assert_eq!(s(&c["tasks"][0]["task_id"]), run);
    let r = app
        .report(&ws, &run, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    eventually(Duration::from_secs(5), "the running timeout", || async {
        task(&app, &ws, &run).await["failure_reason"] == "running_timeout"
    })
    .await;

    // Queued TTL.
    let paused = app.agent(&ws, &rt, 1).await;
    api::set_paused(&app, &ws, &paused, true).await;
    let old = s(&app
        .enqueue(&ws, &paused, json!({ "queued_ttl": "500ms" }))
        .await["id"]);
    let kept = s(&app.enqueue(&ws, &paused, json!({})).await["id"]);
    eventually(Duration::from_secs(5), "the queued TTL", || async {
        task(&app, &ws, &old).await["failure_reason"] == "queued_expired"
    })
    .await;
    assert_eq!(task(&app, &ws, &kept).await["status"], "queued");
    drop(hb);
}

#[tokio::test]
async fn timeouts_beyond_max_task_timeout_or_malformed_are_refused() {
    let app = TestApp::spawn_with(|s| s.max_task_timeout = Duration::from_secs(3 * 3600)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let before = app.count("tasks").await;
    for body in [
        json!({ "agent_id": agent, "payload": {}, "running_timeout": "4h" }),
        json!({ "agent_id": agent, "payload": {}, "queued_ttl": 10_800_001 }),
        json!({ "agent_id": agent, "payload": {}, "dispatch_timeout": "soon" }),
        json!({ "agent_id": agent, "payload": {}, "dispatch_timeout": 0 }),
        json!({ "agent_id": agent, "payload": {}, "concurrency_limit": 2 }),
        json!({ "agent_id": agent, "payload": {}, "concurrency_key": "" }),
        json!({ "agent_id": agent, "payload": {}, "concurrency_key": "k", "concurrency_limit": 0 }),
    ] {
        let r = app.post("/api/v1/tasks", &ws.member, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
    }
    assert_eq!(app.count("tasks").await, before);
    let ok = app
        .enqueue(
            &ws,
            &agent,
            json!({ "queued_ttl": "1h", "concurrency_key": "k" }),
        )
        .await;
    assert_eq!(ok["queued_ttl_ms"], 3_600_000);
    assert_eq!(ok["concurrency_key"], "k");
    assert_eq!(ok["concurrency_limit"], 1);
}

// ───────────────────────────── pause and drain ─────────────────────────────

#[tokio::test]
async fn a_paused_agents_tasks_stay_queued_until_it_is_resumed() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let a = api::set_paused(&app, &ws, &agent, true).await;
    assert_eq!(a["paused"], true);
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    assert!(ids_of(&app.claim(&ws, &rt, 1, 0).await).is_empty());
    assert_eq!(
        task(&app, &ws, &id).await["blocked"]["reason"],
        "agent_paused"
    );

    let poll = api::long_poll(&app, &ws, &rt, 1, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished());
    let a = api::set_paused(&app, &ws, &agent, false).await;
    assert_eq!(a["paused"], false);
    let resumed = Instant::now();
    let reply = poll.await.unwrap();
    assert_eq!(reply.tasks.len(), 1, "the resumed agent's task is claimed");
    assert!(resumed.elapsed() < Duration::from_millis(500));
    let updated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'agent.updated' AND payload->>'paused' IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(updated, 2, "one agent.updated per change");
}

#[tokio::test]
async fn a_draining_runtime_gets_no_claims_and_its_running_tasks_finish() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 5).await;
    let ids = enqueue_n(&app, &ws, &agent, 3, json!({})).await;
    let running = app.claim(&ws, &rt, 1, 0).await;
    let r = app
        .post(
            &format!("/api/v1/runtimes/{rt}/drain"),
            &ws.member,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["draining"], true);
    let again = app
        .post(
            &format!("/api/v1/runtimes/{rt}/drain"),
            &ws.member,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let c = app.claim(&ws, &rt, 5, 0).await;
    assert!(
        ids_of(&c).is_empty(),
        "a draining runtime claims nothing: {c}"
    );
    assert_eq!(
        task(&app, &ws, &ids[1]).await["blocked"]["reason"],
        "runtime_draining"
    );
    finish(&app, &ws, &running["tasks"][0]).await;
    assert_eq!(task(&app, &ws, &ids[0]).await["status"], "completed");
    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(r.body["draining"], true);

    let r = app
        .post(
            &format!("/api/v1/runtimes/{rt}/undrain"),
            &ws.member,
            json!({}),
        )
        .await;
    assert_eq!(r.body["draining"], false);
    assert_eq!(ids_of(&app.claim(&ws, &rt, 5, 0).await), ids[1..]);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT type FROM events WHERE type LIKE 'runtime.%drain%' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["runtime.draining", "runtime.undrained"]);
    let r = app
        .post(
            &format!("/api/v1/runtimes/{rt}/drain"),
            &ws.daemon,
            json!({}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "members drain, daemons do not"
    );
}

// ───────────────────────────── bulk cancel ─────────────────────────────

#[tokio::test]
async fn bulk_cancel_takes_every_matching_task_in_batches_with_events_and_notices() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 2).await;
    let other = app.agent(&ws, &rt, 1).await;
    enqueue_n(&app, &ws, &agent, 450, json!({})).await;
    let spared = enqueue_n(&app, &ws, &other, 1, json!({})).await;
    let active = app.claim(&ws, &rt, 1, 0).await;
    let active_id = s(&active["tasks"][0]["task_id"]);
    assert!(!spared.contains(&active_id));

    let r = app
        .post("/api/v1/tasks/cancel", &ws.member, json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a filter is required"
    );
    let r = app
        .post(
            "/api/v1/tasks/cancel",
            &ws.member,
            json!({ "agent_id": agent, "status": ["completed"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = app
        .post(
            "/api/v1/tasks/cancel",
            &ws.member,
            json!({ "agent_id": agent, "status": ["queued"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["cancelled"], 449);
    assert_eq!(task(&app, &ws, &active_id).await["status"], "dispatched");
    let r = app
        .post(
            "/api/v1/tasks/cancel",
            &ws.member,
            json!({ "runtime_id": rt, "status": ["dispatched", "running"] }),
        )
        .await;
    assert_eq!(r.body["cancelled"], 1);
    assert_eq!(task(&app, &ws, &spared[0]).await["status"], "queued");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task.cancelled'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(events, 450, "one task.cancelled per task");
    // The active task's daemon is told.
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(c["cancel"][0]["task_id"], json!(active_id), "{c}");
}

// ───────────────────────────── why is it waiting? ─────────────────────────────

#[tokio::test]
async fn blocked_names_the_first_reason_and_behind_position_1_is_claimed_next() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_secs(60)).await;
    let ws = app.workspace().await;
    let rt = app
        .runtime_with(
            &ws,
            json!({ "daemon_id": "d", "provider": "claude-code", "max_concurrency": 3 }),
        )
        .await;
    let agent = app.agent(&ws, &rt, 2).await;
    let q = enqueue_n(&app, &ws, &agent, 3, json!({})).await;
    let why = |id: String| {
        let (app, ws) = (&app, &ws);
        async move { task(app, ws, &id).await["blocked"].clone() }
    };
    assert_eq!(
        why(q[0].clone()).await,
        json!({ "reason": "behind", "position": 1 })
    );
    assert_eq!(
        why(q[2].clone()).await,
        json!({ "reason": "behind", "position": 3 })
    );
    // GET /tasks?status=queued shows it too.
    let list = app.get("/api/v1/tasks?status=queued", &ws.member).await;
    let items = list.body["items"].as_array().unwrap();
    assert!(
        items.iter().all(|t| t["blocked"]["reason"] == "behind"),
        "{:?}",
        list.body
    );
    assert_eq!(
        ids_of(&app.claim(&ws, &rt, 1, 0).await),
        std::slice::from_ref(&q[0]),
        "position 1 goes next"
    );
    assert_eq!(why(q[1].clone()).await["position"], 1);

    // The agent's slots: 2, one taken; take the second.
    let c2 = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(ids_of(&c2), std::slice::from_ref(&q[1]));
    let b = why(q[2].clone()).await;
    assert_eq!(b["reason"], "agent_at_capacity", "{b}");
    assert_eq!(b["detail"], "2 of the agent's 2 slots in use");

    // Runtime capacity: 3, with 2 held by the agent; a second agent fills the third.
    let agent2 = app.agent(&ws, &rt, 5).await;
    enqueue_n(&app, &ws, &agent2, 1, json!({})).await;
    let w = enqueue_n(&app, &ws, &agent2, 1, json!({})).await;
    app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(why(w[0].clone()).await["reason"], "runtime_at_capacity");

    // A key at its limit comes before the runtime's capacity.
    let agent3 = app.agent(&ws, &rt, 5).await;
    let k1 = enqueue_n(&app, &ws, &agent3, 2, json!({ "concurrency_key": "k" })).await;
    sqlx::query("UPDATE tasks SET status = 'dispatched', attempt = 1, attempt_id = gen_random_uuid(), dispatched_at = now() WHERE id = $1::uuid")
        .bind(&k1[0])
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(why(k1[1].clone()).await["reason"], "key_at_capacity");

    // Paused, draining and offline, in that order.
    api::set_paused(&app, &ws, &agent, true).await;
    assert_eq!(why(q[2].clone()).await["reason"], "agent_paused");
    api::set_paused(&app, &ws, &agent, false).await;
    app.post(
        &format!("/api/v1/runtimes/{rt}/drain"),
        &ws.member,
        json!({}),
    )
    .await;
    assert_eq!(why(q[2].clone()).await["reason"], "runtime_draining");
    api::deregister(&app, &ws, &rt).await;
    assert_eq!(why(q[2].clone()).await["reason"], "runtime_offline");
}

#[tokio::test]
async fn a_retried_task_waits_for_its_run_after() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_secs(60)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);
    let c = app.claim(&ws, &rt, 1, 0).await;
    let att = s(&c["tasks"][0]["attempt_id"]);
    let r = app
        .report(
            &ws,
            &id,
            "fail",
            json!({ "attempt_id": att, "error": "boom" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["status"], "queued");
    assert_eq!(t["blocked"]["reason"], "run_after", "{t}");
    assert!(ids_of(&app.claim(&ws, &rt, 1, 0).await).is_empty());
}

// ───────────────────────────── retention ─────────────────────────────

#[tokio::test]
async fn task_retention_deletes_old_terminal_tasks_with_their_attempts_and_transcripts() {
    let app = TestApp::spawn_with(|s| {
        settings::fast(s);
        s.task_retention = Duration::from_secs(3600);
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d").await;
    let hb = common::heartbeater::Heartbeater::start(&app, &ws, &[&rt], settings::TICK);
    let agent = app.agent(&ws, &rt, 2).await;
    let ids = enqueue_n(&app, &ws, &agent, 3, json!({})).await;
    let c = app.claim(&ws, &rt, 2, 0).await;
    for t in c["tasks"].as_array().unwrap() {
        let (id, att) = (s(&t["task_id"]), s(&t["attempt_id"]));
        app.report(&ws, &id, "start", json!({ "attempt_id": att }))
            .await;
        let r = app
            .post(
                &format!("/api/v1/tasks/{id}/messages"),
                &ws.daemon,
                json!({ "attempt_id": att, "messages": [{ "seq": 0, "kind": "text", "content": "hi" }] }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        app.report(
            &ws,
            &id,
            "complete",
            json!({ "attempt_id": att, "result": {} }),
        )
        .await;
    }
    // One finished two hours ago, one just now; the third is still queued.
    let (old, recent) = (&ids[0], &ids[1]);
    sqlx::query("UPDATE tasks SET finished_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(old)
        .execute(&app.pool)
        .await
        .unwrap();
    let rows = |table: &'static str, id: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM {table} WHERE task_id = $1::uuid"
            ))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(rows("task_messages", old.clone()).await, 1);
    eventually(
        Duration::from_secs(5),
        "the old task is deleted",
        || async {
            app.get(&format!("/api/v1/tasks/{old}"), &ws.member)
                .await
                .status
                == StatusCode::NOT_FOUND
        },
    )
    .await;
    assert_eq!(rows("task_messages", old.clone()).await, 0);
    assert_eq!(rows("task_attempts", old.clone()).await, 0);
    assert_eq!(task(&app, &ws, recent).await["status"], "completed");
    assert_eq!(task(&app, &ws, &ids[2]).await["status"], "queued");
    assert_eq!(rows("task_messages", recent.clone()).await, 1);
    drop(hb);
}

// ───────────────────────────── pools ─────────────────────────────

async fn pool_agent(app: &TestApp, ws: &Ws, selector: Value, slots: i64) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            &ws.member,
            json!({ "name": "pool", "runtime_selector": selector, "max_concurrent_tasks": slots,
                    "definition": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["runtime_id"].is_null());
    s(&r.body["id"])
}

async fn labelled(app: &TestApp, ws: &Ws, daemon: &str, provider: &str, labels: Value) -> String {
    app.runtime_with(
        ws,
        json!({ "daemon_id": daemon, "provider": provider, "labels": labels }),
    )
    .await
}

#[tokio::test]
async fn a_pool_agents_tasks_go_to_any_online_runtime_of_its_pool() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let a = labelled(
        &app,
        &ws,
        "a",
        "claude-code",
        json!({ "gpu": "yes", "region": "eu" }),
    )
    .await;
    let b = labelled(&app, &ws, "b", "claude-code", json!({ "gpu": "no" })).await;
    let c = labelled(&app, &ws, "c", "codex", json!({ "gpu": "yes" })).await;
    let r = app.get(&format!("/api/v1/runtimes/{a}"), &ws.member).await;
    assert_eq!(r.body["labels"], json!({ "gpu": "yes", "region": "eu" }));
    let agent = pool_agent(
        &app,
        &ws,
        json!({ "provider": "claude-code", "labels": { "gpu": "yes" } }),
        5,
    )
    .await;
    let t = app.enqueue(&ws, &agent, json!({})).await;
    let id = s(&t["id"]);
    assert!(
        t["runtime_id"].is_null(),
        "a pool task has no runtime until dispatched: {t}"
    );
    assert_eq!(task(&app, &ws, &id).await["blocked"]["reason"], "behind");
    assert!(
        ids_of(&app.claim(&ws, &b, 5, 0).await).is_empty(),
        "labels differ"
    );
    assert!(
        ids_of(&app.claim(&ws, &c, 5, 0).await).is_empty(),
        "provider differs"
    );
    assert_eq!(
        ids_of(&app.claim(&ws, &a, 5, 0).await),
        std::slice::from_ref(&id)
    );
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["runtime_id"], json!(a));
    assert_eq!(t["attempts"][0]["runtime_id"], json!(a));

    // The admission gate is over the pool: offline when no runtime of it is online.
    api::deregister(&app, &ws, &a).await;
    let r = app
        .post(
            "/api/v1/tasks",
            &ws.member,
            json!({ "agent_id": agent, "payload": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "runtime_offline");
    let lonely = pool_agent(&app, &ws, json!({ "provider": "nobody" }), 1).await;
    let r = app
        .post(
            "/api/v1/tasks",
            &ws.member,
            json!({ "agent_id": lonely, "payload": {} }),
        )
        .await;
    assert_eq!(r.code(), "runtime_offline");

    // Bound or pooled, not both, not neither.
    for body in [
        json!({ "name": "x", "definition": {} }),
        json!({ "name": "x", "definition": {}, "runtime_id": b, "runtime_selector": { "provider": "codex" } }),
        json!({ "name": "x", "definition": {}, "runtime_selector": { "provider": "codex", "labels": { "": "x" } } }),
    ] {
        let r = app.post("/api/v1/agents", &ws.member, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn a_pool_wakes_a_waiting_claim_and_holds_its_agents_slots_across_runtimes() {
    let app = TestApp::spawn().await;
    let replica = app.replica(|_| {}).await;
    let ws = app.workspace().await;
    let mut fleet = Vec::new();
    for i in 0..8 {
        fleet.push(
            labelled(
                &app,
                &ws,
                &format!("d{i}"),
                "claude-code",
                json!({ "pool": "p" }),
            )
            .await,
        );
    }
    let agent = pool_agent(
        &app,
        &ws,
        json!({ "provider": "claude-code", "labels": { "pool": "p" } }),
        3,
    )
    .await;
    let poll = api::long_poll(&app, &ws, &fleet[5], 1, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished());
    let first = app.enqueue(&ws, &agent, json!({})).await;
    let queued = Instant::now();
    let reply = poll.await.unwrap();
    assert_eq!(reply.tasks[0].task_id.to_string(), s(&first["id"]));
    assert!(
        queued.elapsed() < Duration::from_millis(500),
        "woken {:?} after",
        queued.elapsed()
    );

    enqueue_n(&app, &ws, &agent, 20, json!({})).await;
    let claims = fleet.iter().enumerate().map(|(i, rt)| {
        let target = if i % 2 == 0 { &app } else { &replica };
        target.claim(&ws, rt, 5, 0)
    });
    let replies = futures::future::join_all(claims).await;
    let got: usize = replies
        .iter()
        .map(|r| r["tasks"].as_array().unwrap().len())
        .sum();
    assert_eq!(got, 2, "3 slots, one held already: {replies:?}");
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE agent_id = $1::uuid AND status IN ('dispatched', 'running')",
    )
    .bind(&agent)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(active, 3);
}

#[tokio::test]
async fn a_retry_of_a_pool_task_prefers_the_runtime_that_holds_its_session() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(10)).await;
    let ws = app.workspace().await;
    let a = labelled(&app, &ws, "a", "claude-code", json!({})).await;
    let b = labelled(&app, &ws, "b", "claude-code", json!({})).await;
    let agent = pool_agent(&app, &ws, json!({ "provider": "claude-code" }), 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 3 })).await["id"]);
    let c = app.claim(&ws, &a, 1, 0).await;
    let att = s(&c["tasks"][0]["attempt_id"]);
    let r = app
        .report(&ws, &id, "start", json!({ "attempt_id": att }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(&ws, &id, "progress", json!({ "attempt_id": att, "progress": {}, "session": { "id": "sess-1", "work_dir": "/w" } }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            &ws,
            &id,
            "fail",
            json!({ "attempt_id": att, "error": "flaky" }),
        )
        .await;
    assert_eq!(r.body["status"], "queued", "{:?}", r.body);
    assert!(
        r.body["runtime_id"].is_null(),
        "back to the pool: {:?}",
        r.body
    );
    eventually(Duration::from_secs(5), "the retry is due", || async {
        task(&app, &ws, &id).await["blocked"]["reason"] == "behind"
    })
    .await;
    assert!(
        ids_of(&app.claim(&ws, &b, 1, 0).await).is_empty(),
        "held for the runtime with the session"
    );
    let c = app.claim(&ws, &a, 1, 0).await;
    assert_eq!(ids_of(&c), std::slice::from_ref(&id));
    assert_eq!(c["tasks"][0]["prior_session"]["id"], "sess-1", "{c}");

    // With the session's runtime gone, any runtime of the pool takes the retry.
    let att = s(&c["tasks"][0]["attempt_id"]);
    let r = app
        .report(
            &ws,
            &id,
            "fail",
            json!({ "attempt_id": att, "error": "again" }),
        )
        .await;
    assert_eq!(r.body["status"], "queued");
    api::deregister(&app, &ws, &a).await;
    eventually(
        Duration::from_secs(5),
        "another runtime takes it",
        || async { ids_of(&app.claim(&ws, &b, 1, 0).await) == std::slice::from_ref(&id) },
    )
    .await;
}
