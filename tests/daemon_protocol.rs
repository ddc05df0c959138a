//! The daemon protocol of DESIGN.md §3–§4: registration, heartbeats, fenced reports, retries,
//! cancellation, batched reports, deregistration and agent status.
//!
//! Every test names the clause it proves. Nothing here sleeps to synchronise: conditions are awaited
//! with `common::eventually` or a long-poll claim, and latencies are measured with `Instant`.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::api::{agent_status, deregister, heartbeat_ok, report_batch, report_spawned, task};
use common::db::{count_events, hold, waiting_on_locks};
use common::json::{s, ts};
use common::{TestApp, Ws};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const ACTIONS: [&str; 4] = ["start", "progress", "complete", "fail"];

/// The body of a report `action` for `attempt`. (Not shared with `faults_late_daemon`, whose bodies
/// carry a tag naming the sender: the tests assert the stored results, so the bodies must stay.)
fn report_body(action: &str, attempt: &str) -> Value {
    match action {
        "start" => json!({ "attempt_id": attempt }),
        "progress" => json!({ "attempt_id": attempt, "progress": { "pct": 10 } }),
        "complete" => json!({ "attempt_id": attempt, "result": { "ok": true } }),
        "fail" => json!({ "attempt_id": attempt, "error": "boom" }),
        other => panic!("unknown action {other}"),
    }
}

/// Claims exactly one task (no waiting); returns (task_id, attempt_id). (`faults_late_daemon` has
/// its own: it long-polls, takes the first task and returns the attempt number too.)
async fn claim_one(app: &TestApp, ws: &Ws, rt: &str) -> (String, String) {
    let c = app.claim(ws, rt, 1, 0).await;
    let tasks = c["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "expected one claimed task: {c}");
    (s(&tasks[0]["task_id"]), s(&tasks[0]["attempt_id"]))
}

async fn ok_report(app: &TestApp, ws: &Ws, id: &str, action: &str, attempt: &str) -> Value {
    let r = app
        .report(ws, id, action, report_body(action, attempt))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{action}: {:?}", r.body);
    r.body
}

/// A workspace with one runtime and one agent of the given limit.
async fn setup(app: &TestApp, max_concurrent: i64) -> (Ws, String, String) {
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop-1").await;
    let agent = app.agent(&ws, &rt, max_concurrent).await;
    (ws, rt, agent)
}

/// Enqueues `n` tasks for the agent and claims them all; returns each task's id and attempt id, in
/// enqueue order.
async fn enqueue_and_claim(
    app: &TestApp,
    ws: &Ws,
    rt: &str,
    agent: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s(&app.enqueue(ws, agent, json!({})).await["id"]));
    }
    let c = app.claim(ws, rt, n as i64, 0).await;
    let tasks = c["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), n, "{c}");
    ids.into_iter()
        .map(|id| {
            let t = tasks
                .iter()
                .find(|t| t["task_id"] == id.as_str())
                .expect("claimed");
            let attempt = s(&t["attempt_id"]);
            (id, attempt)
        })
        .collect()
}

/// Asserts a batch report's results, one per update and in order: each names its update's task and
/// has the wanted status, and then the task's status (200) or the error code (refusals).
fn assert_results(results: &[Value], want: &[(&str, u16, &str)]) {
    assert_eq!(results.len(), want.len(), "{results:?}");
    for (i, (res, &(id, status, then))) in results.iter().zip(want).enumerate() {
        assert_eq!(res["task_id"], id, "result {i} is for its update: {res}");
        assert_eq!(res["status"], status, "result {i}: {res}");
        if status == 200 {
            assert_eq!(res["task"]["status"], then, "result {i}: {res}");
        } else {
            assert_eq!(res["error"]["code"], then, "result {i}: {res}");
        }
    }
}

fn status_in_heartbeat(reply: &Value, id: &str) -> String {
    let rts = reply["runtimes"].as_array().unwrap();
    let found: Vec<&Value> = rts.iter().filter(|r| r["runtime_id"] == id).collect();
    assert_eq!(found.len(), 1, "runtime {id} should appear once in {reply}");
    s(&found[0]["status"])
}

// ───────────────────────────── registration ─────────────────────────────

#[tokio::test]
async fn register_is_idempotent_on_workspace_daemon_id_and_provider() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;

    let body = json!({ "daemon_id": "laptop-1", "provider": "claude-code" });
    let first = app
        .post("/api/v1/daemon/register", &ws.daemon, body.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["status"], "online");
    assert_eq!(
        first.body["heartbeat_interval_ms"], 15000,
        "default heartbeat interval told to daemons"
    );
    let id = s(&first.body["runtime_id"]);

    let second = app.post("/api/v1/daemon/register", &ws.daemon, body).await;
    assert_eq!(
        second.body["runtime_id"],
        id.as_str(),
        "same runtime on re-registration: {:?}",
        second.body
    );
    assert_eq!(second.body["heartbeat_interval_ms"], 15000);
    assert_eq!(app.count("runtimes").await, 1);
    assert_eq!(
        second.status,
        StatusCode::OK,
        "re-registration answers 200, not 201: {:?}",
        second.body
    );
    assert_eq!(
        count_events(&app.pool, "runtime.registered", &id).await,
        1,
        "re-registration is not a new registration"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn register_with_another_provider_or_workspace_is_another_runtime() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let first = app
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            json!({ "daemon_id": "laptop-1", "provider": "claude-code" }),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let id = s(&first.body["runtime_id"]);

    let other = app
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            json!({ "daemon_id": "laptop-1", "provider": "codex" }),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{:?}", other.body);
    assert_ne!(
        s(&other.body["runtime_id"]),
        id,
        "another provider is another runtime"
    );

    // Another workspace with the same daemon id and provider gets a runtime of its own.
    let ws2 = app.workspace().await;
    let foreign = app
        .post(
            "/api/v1/daemon/register",
            &ws2.daemon,
            json!({ "daemon_id": "laptop-1", "provider": "claude-code" }),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::CREATED, "{:?}", foreign.body);
    assert_ne!(s(&foreign.body["runtime_id"]), id);
    assert_eq!(app.count("runtimes").await, 3);

    let r = app.get(&format!("/api/v1/runtimes/{id}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["daemon_id"], "laptop-1");
    assert_eq!(r.body["provider"], "claude-code");
    assert_eq!(r.body["status"], "online");
    let r = app
        .get(&format!("/api/v1/runtimes/{id}"), &ws2.member)
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another workspace's runtime is not found"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn reregistering_an_offline_runtime_brings_it_back_online_with_its_agents() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    deregister(&app, &ws, &rt).await;
    assert_eq!(agent_status(&app, &ws, &agent).await, "offline");

    let r = app
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            json!({ "daemon_id": "laptop-1", "provider": "claude-code" }),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(r.body["runtime_id"], rt.as_str());
    assert_eq!(r.body["status"], "online");
    let got = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(got.body["status"], "online");
    assert_eq!(
        count_events(&app.pool, "runtime.online", &rt).await,
        1,
        "coming back is a runtime.online event"
    );
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "idle",
        "its agent is no longer offline"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn register_tells_the_configured_heartbeat_interval() {
    let app = TestApp::spawn_with(|s| s.heartbeat_interval = Duration::from_secs(7)).await;
    let ws = app.workspace().await;
    let r = app
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            json!({ "daemon_id": "d", "provider": "p" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["heartbeat_interval_ms"], 7000);
    app.stop().await.unwrap();
}

// ───────────────────────────── heartbeat ─────────────────────────────

#[tokio::test]
async fn heartbeat_answers_online_for_known_runtimes_and_unknown_for_others() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let a = app.runtime(&ws, "d-a").await;
    let b = app.runtime(&ws, "d-b").await;
    let ws2 = app.workspace().await;
    let foreign = app.runtime(&ws2, "d-a").await;
    let unknown = Uuid::new_v4().to_string();

    let reply = heartbeat_ok(&app, &ws, &[&a, &b, &unknown, &foreign]).await;
    assert_eq!(reply["runtimes"].as_array().unwrap().len(), 4, "{reply}");
    assert_eq!(status_in_heartbeat(&reply, &a), "online");
    assert_eq!(status_in_heartbeat(&reply, &b), "online");
    assert_eq!(status_in_heartbeat(&reply, &unknown), "unknown");
    assert_eq!(
        status_in_heartbeat(&reply, &foreign),
        "unknown",
        "another workspace's runtime is unknown here"
    );
    assert_eq!(reply["cancel"], json!([]));

    // An unknown id stays unknown on the next beat too (nothing was created for it).
    let again = heartbeat_ok(&app, &ws, &[&unknown]).await;
    assert_eq!(status_in_heartbeat(&again, &unknown), "unknown");
    assert_eq!(app.count("runtimes").await, 3);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn heartbeat_from_an_offline_runtime_brings_it_back_online() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;

    deregister(&app, &ws, &rt).await;
    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(r.body["status"], "offline");
    assert_eq!(agent_status(&app, &ws, &agent).await, "offline");
    assert_eq!(count_events(&app.pool, "runtime.online", &rt).await, 0);

    let reply = heartbeat_ok(&app, &ws, &[&rt]).await;
    assert_eq!(status_in_heartbeat(&reply, &rt), "online");

    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["status"], "online",
        "GET /runtimes/{{id}} after the heartbeat: {:?}",
        r.body
    );
    assert_eq!(
        count_events(&app.pool, "runtime.online", &rt).await,
        1,
        "one runtime.online event"
    );
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "idle",
        "its agent is back too"
    );

    // A second beat changes nothing more.
    heartbeat_ok(&app, &ws, &[&rt]).await;
    assert_eq!(count_events(&app.pool, "runtime.online", &rt).await, 1);

    // And it can take work again.
    app.enqueue(&ws, &agent, json!({})).await;
    claim_one(&app, &ws, &rt).await;
    app.stop().await.unwrap();
}

// ───────────────────────────── fencing ─────────────────────────────

#[tokio::test]
async fn report_with_another_attempt_id_is_refused_as_attempt_superseded_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let t = app.enqueue(&ws, &agent, json!({ "max_attempts": 3 })).await;
    let id = s(&t["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    let stranger = Uuid::new_v4().to_string();

    for phase in ["dispatched", "running"] {
        let before = task(&app, &ws, &id).await;
        assert_eq!(before["status"], phase);
        let events_before = app.count("events").await;
        for action in ACTIONS {
            let r = app
                .report(&ws, &id, action, report_body(action, &stranger))
                .await;
            assert_eq!(
                r.status,
                StatusCode::CONFLICT,
                "{action} while {phase}: {:?}",
                r.body
            );
            assert_eq!(
                r.code(),
                "attempt_superseded",
                "{action} while {phase}: {:?}",
                r.body
            );
        }
        assert_eq!(
            task(&app, &ws, &id).await,
            before,
            "a refused report changes nothing ({phase})"
        );
        assert_eq!(
            app.count("events").await,
            events_before,
            "a refused report writes no event ({phase})"
        );
        assert_eq!(app.count("ops.attempts").await, 0);
        if phase == "dispatched" {
            ok_report(&app, &ws, &id, "start", &attempt).await;
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn report_in_the_wrong_state_is_refused_as_invalid_transition() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 2).await;
    let t = app.enqueue(&ws, &agent, json!({})).await;
    let id = s(&t["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;

    let before = task(&app, &ws, &id).await;
    let events_before = app.count("events").await;
    for action in ["complete", "progress"] {
        let r = app
            .report(&ws, &id, action, report_body(action, &attempt))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "{action} while dispatched: {:?}",
            r.body
        );
        assert_eq!(
            r.code(),
            "invalid_transition",
            "{action} while dispatched: {:?}",
            r.body
        );
    }
    assert_eq!(task(&app, &ws, &id).await, before, "nothing changed");
    assert_eq!(app.count("events").await, events_before, "no event");

    // Completed, then a fail (or a progress) of the same attempt is a wrong state too.
    ok_report(&app, &ws, &id, "start", &attempt).await;
    ok_report(&app, &ws, &id, "complete", &attempt).await;
    for action in ["fail", "progress"] {
        let r = app
            .report(&ws, &id, action, report_body(action, &attempt))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "{action} after complete: {:?}",
            r.body
        );
        assert_eq!(
            r.code(),
            "invalid_transition",
            "{action} after complete: {:?}",
            r.body
        );
    }
    let after = task(&app, &ws, &id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["result"], json!({ "ok": true }));

    // Failed for good, then a complete of the same attempt is refused.
    let t2 = app.enqueue(&ws, &agent, json!({})).await;
    let id2 = s(&t2["id"]);
    let (_, attempt2) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id2, "fail", &attempt2).await;
    let r = app
        .report(&ws, &id2, "complete", report_body("complete", &attempt2))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_transition");
    assert_eq!(task(&app, &ws, &id2).await["status"], "failed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_start_answers_200_with_the_current_state_and_no_second_event() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;

    let first = ok_report(&app, &ws, &id, "start", &attempt).await;
    assert_eq!(first["status"], "running");
    let again = ok_report(&app, &ws, &id, "start", &attempt).await;
    assert_eq!(again["status"], "running");
    assert_eq!(
        again["started_at"], first["started_at"],
        "the repeat changes nothing"
    );
    assert_eq!(count_events(&app.pool, "task.running", &id).await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_complete_answers_200_with_the_current_state_and_no_second_event() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &attempt).await;

    let first = ok_report(&app, &ws, &id, "complete", &attempt).await;
    assert_eq!(first["status"], "completed");
    // A repeat with a different result is still "already applied": the first result stands.
    let r = app
        .report(
            &ws,
            &id,
            "complete",
            json!({ "attempt_id": attempt, "result": { "ok": false } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(r.body["result"], json!({ "ok": true }));
    assert_eq!(r.body["finished_at"], first["finished_at"]);
    assert_eq!(count_events(&app.pool, "task.completed", &id).await, 1);
    assert_eq!(app.count("ops.attempts").await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_fail_answers_200_with_the_current_state_and_no_second_event() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &attempt).await;

    let first = ok_report(&app, &ws, &id, "fail", &attempt).await;
    assert_eq!(first["status"], "failed");
    let again = ok_report(&app, &ws, &id, "fail", &attempt).await;
    assert_eq!(again["status"], "failed");
    assert_eq!(again["finished_at"], first["finished_at"]);
    assert_eq!(count_events(&app.pool, "task.failed", &id).await, 1);
    assert_eq!(app.count("ops.attempts").await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn late_attempt_report_is_refused_after_retry() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(200)).await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);

    let (_, a1) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &a1).await;
    let failed = ok_report(&app, &ws, &id, "fail", &a1).await;
    assert_eq!(
        failed["status"], "queued",
        "retryable failure with attempts left goes back to the queue"
    );
    assert!(
        ts(&failed["run_after"]) > Utc::now(),
        "run_after is in the future: {failed}"
    );
    // The same fail repeated while queued is the lost-response retry: 200, nothing new.
    let again = ok_report(&app, &ws, &id, "fail", &a1).await;
    assert_eq!(again["status"], "queued");
    assert_eq!(count_events(&app.pool, "task.requeued", &id).await, 1);

    // Attempt 2, once the backoff has passed (awaited by the long poll).
    let c = app.claim(&ws, &rt, 1, 5000).await;
    let t = &c["tasks"][0];
    assert_eq!(t["task_id"], id.as_str(), "{c}");
    assert_eq!(t["attempt"], 2);
    let a2 = s(&t["attempt_id"]);
    assert_ne!(a2, a1, "a new attempt has a fresh attempt id");

    let before = task(&app, &ws, &id).await;
    let events_before = app.count("events").await;
    for action in ACTIONS {
        let r = app.report(&ws, &id, action, report_body(action, &a1)).await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "late {action} of attempt 1: {:?}",
            r.body
        );
        assert_eq!(
            r.code(),
            "attempt_superseded",
            "late {action} of attempt 1: {:?}",
            r.body
        );
    }
    assert_eq!(
        task(&app, &ws, &id).await,
        before,
        "late reports change nothing"
    );
    assert_eq!(app.count("events").await, events_before);

    // Attempt 2 is unaffected.
    ok_report(&app, &ws, &id, "start", &a2).await;
    ok_report(&app, &ws, &id, "progress", &a2).await;
    let done = ok_report(&app, &ws, &id, "complete", &a2).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["attempt"], 2);

    // Still refused once the task has finished.
    for action in ACTIONS {
        let r = app.report(&ws, &id, action, report_body(action, &a1)).await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "late {action} after completion: {:?}",
            r.body
        );
        assert_eq!(r.code(), "attempt_superseded");
    }

    let full = task(&app, &ws, &id).await;
    assert_eq!(full["status"], "completed");
    let attempts = full["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{full}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["attempt_id"], a1.as_str());
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["failure_reason"], "agent_error");
    assert_eq!(attempts[0]["runtime_id"], rt.as_str());
    assert!(!attempts[0]["started_at"].is_null());
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["attempt_id"], a2.as_str());
    assert_eq!(attempts[1]["outcome"], "completed");
    assert!(attempts[1]["failure_reason"].is_null());
    assert!(
        attempts[1]["error"].is_null(),
        "attempt 1's error is not attempt 2's: {full}"
    );
    app.stop().await.unwrap();
}

// ───────────────────────────── retries ─────────────────────────────

#[tokio::test]
async fn retry_is_not_claimable_before_its_backoff_and_the_long_poll_gets_it_at_run_after() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(500)).await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);
    let (_, a1) = claim_one(&app, &ws, &rt).await;

    let failed = ok_report(&app, &ws, &id, "fail", &a1).await;
    let failed_at = Instant::now();
    assert_eq!(failed["status"], "queued");
    assert!(
        failed["failure_reason"].is_null(),
        "a requeued task has no failure reason yet: {failed}"
    );

    let now = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(now["tasks"], json!([]), "claimed before run_after: {now}");

    let c = app.claim(&ws, &rt, 1, 5000).await;
    let waited = failed_at.elapsed();
    assert_eq!(c["tasks"][0]["task_id"], id.as_str(), "{c}");
    assert_eq!(c["tasks"][0]["attempt"], 2);
    println!("retry received by the long poll {waited:?} after the failure (backoff 500ms)");
    assert!(
        waited >= Duration::from_millis(300),
        "claimed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "long poll not woken at run_after: {waited:?}"
    );

    let (dispatched_at, run_after): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT dispatched_at, run_after FROM tasks WHERE id = $1")
            .bind(id.parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        dispatched_at >= run_after,
        "dispatched at {dispatched_at}, before run_after {run_after}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn non_retryable_failure_fails_at_once_with_agent_error() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 5 })).await["id"]);
    let (_, a1) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &a1).await;

    let r = app
        .report(
            &ws,
            &id,
            "fail",
            json!({ "attempt_id": a1, "error": "bad input", "retryable": false }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["failure_reason"], "agent_error");
    assert_eq!(r.body["error"], "bad input");
    assert!(!r.body["finished_at"].is_null());
    assert_eq!(count_events(&app.pool, "task.failed", &id).await, 1);
    assert_eq!(count_events(&app.pool, "task.requeued", &id).await, 0);
    assert_eq!(app.claim(&ws, &rt, 1, 0).await["tasks"], json!([]));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn exhausted_attempts_fail_the_task_for_good() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(100)).await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);

    let (_, a1) = claim_one(&app, &ws, &rt).await;
    assert_eq!(
        ok_report(&app, &ws, &id, "fail", &a1).await["status"],
        "queued"
    );
    let c = app.claim(&ws, &rt, 1, 5000).await;
    assert_eq!(c["tasks"][0]["attempt"], 2, "{c}");
    let a2 = s(&c["tasks"][0]["attempt_id"]);
    let last = ok_report(&app, &ws, &id, "fail", &a2).await;
    assert_eq!(last["status"], "failed", "no attempts left: {last}");
    assert_eq!(last["failure_reason"], "agent_error");
    assert_eq!(last["attempt"], 2);

    let full = task(&app, &ws, &id).await;
    let outcomes: Vec<&Value> = full["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("failed"), &json!("failed")]);
    // Nothing comes back, even after waiting longer than the backoff.
    let c = app.claim(&ws, &rt, 1, 400).await;
    assert_eq!(c["tasks"], json!([]));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn retry_backoff_doubles_per_attempt_and_is_capped() {
    let base = Duration::from_millis(250);
    let max = Duration::from_millis(1000);
    let app = TestApp::spawn_with(|s| {
        s.retry_backoff_base = base;
        s.retry_backoff_max = max;
    })
    .await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 5 })).await["id"]);
    let expected_ms = [250i64, 500, 1000, 1000];

    for (i, want) in expected_ms.iter().enumerate() {
        let attempt_no = i as i64 + 1;
        let c = app.claim(&ws, &rt, 1, 5000).await;
        assert_eq!(c["tasks"][0]["attempt"], attempt_no, "{c}");
        let attempt = s(&c["tasks"][0]["attempt_id"]);
        let sent = Utc::now();
        let r = ok_report(&app, &ws, &id, "fail", &attempt).await;
        let received = Utc::now();
        assert_eq!(r["status"], "queued");
        let run_after = ts(&r["run_after"]);
        let delay = (run_after - sent).num_milliseconds();
        println!(
            "attempt {attempt_no} failed: run_after = fail time + {delay} ms (expected {want} ms)"
        );
        // The server picks run_after = (its now, between `sent` and `received`) + backoff: bracketed
        // with 5 ms of slack, which tells 250 from 500 from 1000 whatever the load.
        let want_d = chrono::Duration::milliseconds(*want);
        let slack = chrono::Duration::milliseconds(5);
        assert!(
            run_after >= sent + want_d - slack && run_after <= received + want_d + slack,
            "attempt {attempt_no}: run_after is fail time + {delay} ms (request took {} ms), \
             expected {want} ms",
            (received - sent).num_milliseconds()
        );
        // Against the server's own clock: the attempt row's finished_at (its transaction's start).
        let finished: DateTime<Utc> =
            sqlx::query_scalar("SELECT finished_at FROM ops.attempts WHERE attempt_id = $1")
                .bind(attempt.parse::<Uuid>().unwrap())
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let server_delay = (run_after - finished).num_milliseconds();
        assert!(
            server_delay >= want - 5 && server_delay <= want + 150,
            "attempt {attempt_no}: run_after - finished_at = {server_delay} ms, expected about {want} ms"
        );
    }
    let c = app.claim(&ws, &rt, 1, 5000).await;
    assert_eq!(c["tasks"][0]["attempt"], 5);
    let last = ok_report(&app, &ws, &id, "fail", &s(&c["tasks"][0]["attempt_id"])).await;
    assert_eq!(last["status"], "failed");
    assert_eq!(
        task(&app, &ws, &id).await["attempts"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    app.stop().await.unwrap();
}

// ───────────────────────────── cancellation ─────────────────────────────

#[tokio::test]
async fn cancel_of_a_queued_task_is_final_and_it_is_never_claimed() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 3 })).await["id"]);

    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["failure_reason"], "cancelled");
    assert_eq!(count_events(&app.pool, "task.cancelled", &id).await, 1);

    let c = app.claim(&ws, &rt, 1, 300).await;
    assert_eq!(
        c["tasks"],
        json!([]),
        "a cancelled task is never claimed: {c}"
    );
    assert_eq!(
        c["cancel"],
        json!([]),
        "nothing to tell a daemon that never had it"
    );
    let full = task(&app, &ws, &id).await;
    assert_eq!(full["status"], "cancelled");
    assert_eq!(full["attempt"], 0);
    assert_eq!(full["attempts"], json!([]));
    assert_eq!(count_events(&app.pool, "task.dispatched", &id).await, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_of_a_running_task_is_final_at_once_and_the_daemon_learns_it_in_its_next_heartbeat()
{
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 3 })).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &attempt).await;

    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["failure_reason"], "cancelled");
    // Final in the database at once, with no retry despite attempts left.
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "idle",
        "the cancelled task freed its agent"
    );

    let hb = heartbeat_ok(&app, &ws, &[&rt]).await;
    assert_eq!(
        hb["cancel"],
        json!([{ "task_id": id, "attempt_id": attempt }]),
        "the next heartbeat tells the daemon: {hb}"
    );

    for action in ACTIONS {
        let r = app
            .report(&ws, &id, action, report_body(action, &attempt))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "{action} after cancel: {:?}",
            r.body
        );
    }
    let full = task(&app, &ws, &id).await;
    assert_eq!(full["status"], "cancelled");
    assert_eq!(full["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(full["attempts"][0]["outcome"], "cancelled");
    assert_eq!(count_events(&app.pool, "task.cancelled", &id).await, 1);
    assert_eq!(
        app.claim(&ws, &rt, 1, 0).await["tasks"],
        json!([]),
        "not requeued"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_reaches_a_daemon_the_liveness_store_had_lost_in_its_next_heartbeat() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &attempt).await;
    // The runtime's liveness key is gone (expired, or Redis restarted empty): there is nothing to
    // flag when the cancellation comes, and the runtime is still online in Postgres.
    let redis = redis::Client::open(app.settings.redis_url.clone().unwrap()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:live:{}:{}", app.settings.redis_prefix, ws.id, rt);
    let dropped: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dropped, 1, "the runtime had a liveness key");

    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let flagged: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!flagged, "the cancellation created no liveness key");

    let hb = heartbeat_ok(&app, &ws, &[&rt]).await;
    assert_eq!(
        hb["cancel"],
        json!([{ "task_id": id, "attempt_id": attempt }]),
        "the next heartbeat tells the daemon: {hb}"
    );
    assert_eq!(hb["runtimes"][0]["status"], "online", "{hb}");
    let hb = heartbeat_ok(&app, &ws, &[&rt]).await;
    assert_eq!(hb["cancel"], json!([]), "told once: {hb}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_of_a_dispatched_task_reaches_the_daemon_in_its_next_claim_reply() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;

    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "cancelled");

    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(
        c["cancel"],
        json!([{ "task_id": id, "attempt_id": attempt }]),
        "{c}"
    );
    assert_eq!(c["tasks"], json!([]));

    let r = app
        .report(&ws, &id, "start", report_body("start", &attempt))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(task(&app, &ws, &id).await["status"], "cancelled");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_completed_task_is_an_invalid_transition() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let (_, attempt) = claim_one(&app, &ws, &rt).await;
    ok_report(&app, &ws, &id, "start", &attempt).await;
    ok_report(&app, &ws, &id, "complete", &attempt).await;
    let before = task(&app, &ws, &id).await;

    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_transition");
    assert_eq!(task(&app, &ws, &id).await, before);
    assert_eq!(count_events(&app.pool, "task.cancelled", &id).await, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancelling_twice_answers_200_with_one_event() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 1).await;
    let id = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    claim_one(&app, &ws, &rt).await;

    let first = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let second = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_eq!(second.body["status"], "cancelled");
    assert_eq!(second.body["finished_at"], first.body["finished_at"]);
    assert_eq!(count_events(&app.pool, "task.cancelled", &id).await, 1);
    assert_eq!(app.count("ops.attempts").await, 1);
    app.stop().await.unwrap();
}

// ───────────────────────────── batched reports ─────────────────────────────

#[tokio::test]
async fn report_batch_answers_one_result_per_update_in_order_with_the_single_call_rules() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 3).await;
    let claimed = enqueue_and_claim(&app, &ws, &rt, &agent, 3).await;
    let [(a, att_a), (b, att_b), (d, att_d)] = &claimed[..] else {
        unreachable!()
    };
    let stale = Uuid::new_v4().to_string();

    let results = report_batch(
        &app,
        &ws,
        json!([
            { "task_id": a, "attempt_id": att_a, "action": "start" },
            { "task_id": a, "attempt_id": att_a, "action": "complete", "result": { "n": 1 } },
            { "task_id": b, "attempt_id": att_b, "action": "start" },
            { "task_id": d, "attempt_id": stale, "action": "start" },
            { "task_id": d, "attempt_id": att_d, "action": "complete", "result": { "n": 3 } },
            { "task_id": b, "attempt_id": att_b, "action": "start" },
        ]),
    )
    .await;
    assert_results(
        &results,
        &[
            (a, 200, "running"),
            (a, 200, "completed"),
            (b, 200, "running"),
            (d, 409, "attempt_superseded"),
            (d, 409, "invalid_transition"),
            (b, 200, "running"),
        ],
    );

    // Applied, with the events of the accepted updates only.
    let ta = task(&app, &ws, a).await;
    assert_eq!(ta["status"], "completed");
    assert_eq!(ta["result"], json!({ "n": 1 }));
    assert_eq!(task(&app, &ws, b).await["status"], "running");
    assert_eq!(task(&app, &ws, d).await["status"], "dispatched");
    assert_eq!(count_events(&app.pool, "task.completed", a).await, 1);
    assert_eq!(
        count_events(&app.pool, "task.running", b).await,
        1,
        "the repeated start wrote no second event"
    );
    assert_eq!(count_events(&app.pool, "task.running", d).await, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn report_batch_under_prefer_minimal_answers_each_status_and_id_without_the_task() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 2).await;
    let claimed = enqueue_and_claim(&app, &ws, &rt, &agent, 2).await;
    let [(a, att_a), (b, _)] = &claimed[..] else {
        unreachable!()
    };
    let stale = Uuid::new_v4().to_string();
    let r = app
        .post_minimal(
            "/api/v1/daemon/report",
            &ws.daemon,
            json!({ "updates": [
                { "task_id": a, "attempt_id": att_a, "action": "start" },
                { "task_id": a, "attempt_id": att_a, "action": "complete", "result": { "n": 1 } },
                { "task_id": b, "attempt_id": stale, "action": "start" },
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.header("preference-applied"), Some("return=minimal"));
    let results = r.body["results"].as_array().unwrap();
    let got: Vec<(Value, Value)> = results
        .iter()
        .map(|r| (r["task_id"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!(a), json!(200)),
            (json!(a), json!(200)),
            (json!(b), json!(409))
        ]
    );
    for r in &results[..2] {
        assert!(r["task"].is_null() && r["error"].is_null(), "{r}");
    }
    assert_eq!(results[2]["error"]["code"], "attempt_superseded");
    // Applied as without the preference, with its events.
    let ta = task(&app, &ws, a).await;
    assert_eq!(ta["status"], "completed");
    assert_eq!(ta["result"], json!({ "n": 1 }));
    assert_eq!(count_events(&app.pool, "task.running", a).await, 1);
    assert_eq!(count_events(&app.pool, "task.completed", a).await, 1);
    assert_eq!(task(&app, &ws, b).await["status"], "dispatched");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn report_batch_of_start_then_complete_per_task_applies_each_task_in_order() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 4).await;
    let claimed = enqueue_and_claim(&app, &ws, &rt, &agent, 4).await;
    let mut updates = Vec::new();
    for (id, attempt) in &claimed {
        updates.push(json!({ "task_id": id, "attempt_id": attempt, "action": "start" }));
        updates.push(json!({ "task_id": id, "attempt_id": attempt, "action": "complete", "result": { "id": id } }));
    }
    // A third report of the first task: a repeat of its complete, already applied.
    let first = updates[1].clone();
    updates.push(first);
    let results = report_batch(&app, &ws, json!(updates)).await;
    assert_eq!(results.len(), 9, "{results:?}");
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["status"], 200, "result {i}: {res}");
        let want = if i % 2 == 0 && i < 8 {
            "running"
        } else {
            "completed"
        };
        assert_eq!(res["task"]["status"], want, "result {i}: {res}");
        assert_eq!(res["task_id"], updates[i]["task_id"], "result {i}: {res}");
    }
    for (id, _) in &claimed {
        let full = task(&app, &ws, id).await;
        assert_eq!(full["status"], "completed", "{full}");
        assert_eq!(full["result"], json!({ "id": id }), "{full}");
        let kinds: Vec<String> =
            sqlx::query_scalar("SELECT type FROM events WHERE subject_id = $1 ORDER BY id")
                .bind(Uuid::parse_str(id).unwrap())
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            kinds,
            [
                "task.queued",
                "task.dispatched",
                "task.running",
                "task.completed"
            ],
            "each task's events in order, once"
        );
    }
    assert_eq!(agent_status(&app, &ws, &agent).await, "idle");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn report_batch_start_then_complete_written_together_leaves_what_the_two_would() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 3).await;
    let claimed = enqueue_and_claim(&app, &ws, &rt, &agent, 3).await;
    let [(a, att_a), (b, att_b), (r, att_r)] = &claimed[..] else {
        unreachable!()
    };
    // r is running already: its start below is a repeat, its complete the only write.
    let pre = report_batch(
        &app,
        &ws,
        json!([{ "task_id": r, "attempt_id": att_r, "action": "start" }]),
    )
    .await;
    assert_eq!(pre[0]["status"], 200, "{pre:?}");
    let stale = Uuid::new_v4().to_string();
    let results = report_batch(
        &app,
        &ws,
        json!([
            { "task_id": a, "attempt_id": att_a, "action": "start" },
            { "task_id": b, "attempt_id": att_b, "action": "start" },
            { "task_id": r, "attempt_id": att_r, "action": "start" },
            { "task_id": a, "attempt_id": att_a, "action": "complete", "result": { "n": 1 } },
            { "task_id": b, "attempt_id": stale, "action": "complete", "result": { "n": 2 } },
            { "task_id": r, "attempt_id": att_r, "action": "complete", "result": { "n": 3 } },
        ]),
    )
    .await;
    assert_results(
        &results,
        &[
            (a, 200, "running"),
            (b, 200, "running"),
            (r, 200, "running"),
            (a, 200, "completed"),
            (b, 409, "attempt_superseded"),
            (r, 200, "completed"),
        ],
    );
    // a's start answers the task as the start alone leaves it; its complete, as both leave it.
    let (started, done) = (&results[0]["task"], &results[3]["task"]);
    assert!(started["started_at"].is_string(), "{started}");
    assert!(started["finished_at"].is_null(), "{started}");
    assert!(started["result"].is_null(), "{started}");
    assert_eq!(done["started_at"], started["started_at"], "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    assert_eq!(done["result"], json!({ "n": 1 }));
    let ta = task(&app, &ws, a).await;
    assert_eq!(ta["status"], "completed", "{ta}");
    assert_eq!(ta["started_at"], started["started_at"], "{ta}");
    assert_eq!(ta["result"], json!({ "n": 1 }), "{ta}");
    // b was started, and the complete of another attempt changed nothing.
    let tb = task(&app, &ws, b).await;
    assert_eq!(tb["status"], "running", "{tb}");
    assert!(tb["result"].is_null(), "{tb}");
    assert_eq!(task(&app, &ws, r).await["result"], json!({ "n": 3 }));
    for (id, running, completed) in [(a, 1, 1), (b, 1, 0), (r, 1, 1)] {
        assert_eq!(
            count_events(&app.pool, "task.running", id).await,
            running,
            "{id}"
        );
        assert_eq!(
            count_events(&app.pool, "task.completed", id).await,
            completed,
            "{id}"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn report_batch_with_an_invalid_update_is_refused_whole_with_422() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 2).await;
    let claimed = enqueue_and_claim(&app, &ws, &rt, &agent, 2).await;
    let [(a, att_a), (b, att_b)] = &claimed[..] else {
        unreachable!()
    };
    let before_a = task(&app, &ws, a).await;
    let before_b = task(&app, &ws, b).await;
    let events_before = app.count("events").await;

    let r = app
        .post(
            "/api/v1/daemon/report",
            &ws.daemon,
            json!({ "updates": [
                { "task_id": a, "attempt_id": att_a, "action": "start" },
                { "task_id": b, "attempt_id": att_b, "action": "start" },
                { "task_id": b, "attempt_id": att_b, "action": "complete" },
            ] }),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "complete without result: {:?}",
        r.body
    );
    assert_eq!(r.code(), "validation_failed");
    assert_eq!(task(&app, &ws, a).await, before_a, "nothing applied");
    assert_eq!(task(&app, &ws, b).await, before_b, "nothing applied");
    assert_eq!(app.count("events").await, events_before);
    app.stop().await.unwrap();
}

// ───────────────────────────── deregistration ─────────────────────────────

#[tokio::test]
async fn deregister_takes_the_runtime_offline_and_fails_or_requeues_its_active_tasks() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 3).await;
    let running = s(&app.enqueue(&ws, &agent, json!({ "priority": 3 })).await["id"]);
    let dispatched = s(&app.enqueue(&ws, &agent, json!({ "priority": 2 })).await["id"]);
    let retried = s(&app
        .enqueue(&ws, &agent, json!({ "priority": 1, "max_attempts": 2 }))
        .await["id"]);
    let c = app.claim(&ws, &rt, 3, 0).await;
    assert_eq!(c["tasks"].as_array().unwrap().len(), 3, "{c}");
    let run_attempt = s(&c["tasks"][0]["attempt_id"]);
    assert_eq!(c["tasks"][0]["task_id"], running.as_str());
    ok_report(&app, &ws, &running, "start", &run_attempt).await;
    let queued = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    assert_eq!(agent_status(&app, &ws, &agent).await, "working");

    deregister(&app, &ws, &rt).await;

    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(r.body["status"], "offline", "offline at once: {:?}", r.body);
    assert_eq!(count_events(&app.pool, "runtime.offline", &rt).await, 1);

    for id in [&running, &dispatched] {
        let t = task(&app, &ws, id).await;
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["failure_reason"], "runtime_offline", "{t}");
        assert_eq!(t["attempts"][0]["failure_reason"], "runtime_offline");
    }
    let t = task(&app, &ws, &retried).await;
    assert_eq!(
        t["status"], "queued",
        "attempts left: back to the queue: {t}"
    );
    assert_eq!(t["attempts"][0]["outcome"], "failed");
    assert_eq!(t["attempts"][0]["failure_reason"], "runtime_offline");
    assert_eq!(task(&app, &ws, &queued).await["status"], "queued");

    assert_eq!(agent_status(&app, &ws, &agent).await, "offline");

    let r = app
        .post(
            "/api/v1/daemon/claim",
            &ws.daemon,
            json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "runtime_offline");

    // The same attempt's late report is refused.
    let r = app
        .report(
            &ws,
            &running,
            "complete",
            report_body("complete", &run_attempt),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);

    // Deregistering again changes nothing more.
    let r = app
        .post(
            "/api/v1/daemon/deregister",
            &ws.daemon,
            json!({ "runtime_ids": [rt] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(count_events(&app.pool, "runtime.offline", &rt).await, 1);
    app.stop().await.unwrap();
}

// ───────────────────────────── agent status ─────────────────────────────

#[tokio::test]
async fn agent_status_goes_idle_working_idle_with_its_events() {
    let app = TestApp::spawn().await;
    let (ws, rt, agent) = setup(&app, 2).await;
    assert_eq!(agent_status(&app, &ws, &agent).await, "idle");

    let a = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    let b = s(&app.enqueue(&ws, &agent, json!({})).await["id"]);
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "idle",
        "queued work does not make it working"
    );
    let c = app.claim(&ws, &rt, 2, 0).await;
    assert_eq!(c["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(agent_status(&app, &ws, &agent).await, "working");

    let att = |i: usize| s(&c["tasks"][i]["attempt_id"]);
    let ids = [s(&c["tasks"][0]["task_id"]), s(&c["tasks"][1]["task_id"])];
    assert!(ids.contains(&a) && ids.contains(&b));
    ok_report(&app, &ws, &ids[0], "start", &att(0)).await;
    ok_report(&app, &ws, &ids[0], "complete", &att(0)).await;
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "working",
        "one task still held"
    );
    ok_report(&app, &ws, &ids[1], "start", &att(1)).await;
    ok_report(&app, &ws, &ids[1], "complete", &att(1)).await;
    assert_eq!(agent_status(&app, &ws, &agent).await, "idle");

    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'status' FROM events WHERE subject_id = $1 AND type = 'agent.status' ORDER BY id",
    )
    .bind(agent.parse::<Uuid>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        ["working", "idle"],
        "one agent.status event per change"
    );
    app.stop().await.unwrap();
}

/// A batch report on a task whose row another transaction holds (an operator's open session, say)
/// waits for it — but not in the replica's report writers: after `report_lock_wait` it leaves them
/// and waits on its own. More such reports than there are writers, and a report on another task
/// is still applied while the row stays held; once it is let go, the waiting reports are applied.
#[tokio::test]
async fn a_batch_report_held_up_by_a_row_lock_does_not_hold_up_the_others() {
    let app = TestApp::spawn_with(|s| s.report_lock_wait = Duration::from_millis(50)).await;
    let (ws, rt, agent) = setup(&app, 10).await;
    let tasks = enqueue_and_claim(&app, &ws, &rt, &agent, 2).await;
    let (held, free) = (&tasks[0], &tasks[1]);
    let lock = hold(&app, &held.0).await;
    let start = |(task, attempt): &(String, String)| {
        report_spawned(
            &app,
            &ws,
            json!([{ "task_id": task, "attempt_id": attempt, "action": "start" }]),
        )
    };
    // One more than the writers, each waiting on the held row.
    let n = paddock::service::report_groups::WRITERS + 1;
    let mut stuck = Vec::new();
    for i in 0..n {
        stuck.push(start(held));
        common::eventually(
            Duration::from_secs(10),
            "the report to wait on the held row",
            || async { waiting_on_locks(&app).await > i as i64 },
        )
        .await;
    }
    let other = tokio::time::timeout(Duration::from_secs(10), start(free))
        .await
        .expect("a report on another task is applied while the row stays held")
        .unwrap();
    assert_eq!(other.0, StatusCode::OK, "{}", other.1);
    assert_eq!(other.1["results"][0]["status"], 200, "{}", other.1);
    assert!(
        stuck.iter().all(|r| !r.is_finished()),
        "a report answered while its row was held"
    );
    lock.rollback().await.unwrap();
    for r in stuck {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"][0]["status"], 200, "{body}");
    }
    assert_eq!(task(&app, &ws, &held.0).await["status"], "running");
    app.stop().await.unwrap();
}
