//! Attempt liveness (DESIGN §10), against a real Redis: heartbeats that list the daemon's attempts
//! get revoked ones back in `cancel` while they list them; an active attempt a reconciling daemon
//! leaves unlisted fails `attempt_lost` after `attempt_lost_grace` (and is retried); a daemon that
//! lists nothing keeps today's behaviour; `offline_grace` keeps the attempts of a runtime that comes
//! back.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::task;
use common::heartbeater::Heartbeater;
use common::settings::{TICK, fast};
use common::wait::holds_for;
use common::{TestApp, Ws, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

const GRACE: Duration = Duration::from_millis(800);

fn reconciling(s: &mut paddock::Settings) {
    fast(s);
    s.attempt_lost_grace = Some(GRACE);
    s.retry_backoff_base = Duration::from_millis(1);
}

/// A runtime with an agent and a running task: `(runtime, task, attempt id)`.
async fn running(app: &TestApp, ws: &Ws, daemon: &str, body: Value) -> (String, String, String) {
    let rt = app.runtime(ws, daemon).await;
    let agent = app.agent(ws, &rt, 1).await;
    let id = app.enqueue(ws, &agent, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claim = app.claim(ws, &rt, 1, 0).await;
    let attempt = claim["tasks"][0]["attempt_id"].as_str().unwrap().to_owned();
    let r = app
        .report(ws, &id, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    (rt, id, attempt)
}

async fn listing(app: &TestApp, ws: &Ws, rt: &str, attempts: &[&str]) -> Value {
    let r = app
        .post(
            "/api/v1/daemon/heartbeat",
            &ws.daemon,
            json!({ "runtime_ids": [rt], "attempts": attempts }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

fn cancels(reply: &Value) -> Vec<String> {
    reply["cancel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attempt_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_listed_revoked_attempt_comes_back_in_cancel_while_the_daemon_lists_it() {
    let app = TestApp::spawn_with(reconciling).await;
    let ws = app.workspace().await;
    let (rt, id, attempt) = running(&app, &ws, "d1", json!({})).await;
    assert!(cancels(&listing(&app, &ws, &rt, &[&attempt]).await).is_empty());
    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for round in 0..3 {
        let reply = listing(&app, &ws, &rt, &[&attempt]).await;
        assert_eq!(
            cancels(&reply),
            vec![attempt.clone()],
            "reply {round}: {reply}"
        );
        assert_eq!(reply["cancel"][0]["task_id"], id.as_str());
    }
    // Once the daemon stops listing it, it is not told again.
    assert!(cancels(&listing(&app, &ws, &rt, &[]).await).is_empty());
    assert!(cancels(&listing(&app, &ws, &rt, &[]).await).is_empty());
}

#[tokio::test]
async fn an_unlisted_attempt_of_a_reconciling_daemon_fails_attempt_lost_and_is_retried() {
    let app = TestApp::spawn_with(reconciling).await;
    let ws = app.workspace().await;
    let (rt, id, attempt) = running(&app, &ws, "d1", json!({ "max_attempts": 2 })).await;
    // The daemon lost the process: it heartbeats, listing nothing.
    let held = Arc::new(Mutex::new(Vec::<String>::new()));
    let beats = Heartbeater::listing(&app, &ws, &[&rt], held.clone(), TICK);
    eventually(
        Duration::from_secs(15),
        "the attempt fails attempt_lost",
        || async {
            let t = task(&app, &ws, &id).await;
            t["status"] == "queued" && t["attempt"] == 1
        },
    )
    .await;
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["attempts"][0]["failure_reason"], "attempt_lost", "{t}");
    assert_eq!(t["attempts"][0]["attempt_id"], attempt.as_str());
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'reason' FROM events WHERE type = 'task.requeued' AND subject_id = $1",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(reasons, vec!["attempt_lost"]);

    // The retry, listed, keeps running past the grace.
    let claim = common::wait::eventually_some(Duration::from_secs(10), "the retry", || async {
        let c = app.claim(&ws, &rt, 1, 0).await;
        c["tasks"][0]["attempt_id"].as_str().map(str::to_owned)
    })
    .await;
    held.lock().unwrap().push(claim.clone());
    let r = app
        .report(&ws, &id, "start", json!({ "attempt_id": claim }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    holds_for(GRACE * 3, "the listed retry keeps running", || async {
        task(&app, &ws, &id).await["status"] == "running"
    })
    .await;
    // And the daemon that still listed the lost attempt would be told to stop it.
    assert_eq!(
        cancels(&listing(&app, &ws, &rt, &[&attempt, &claim]).await),
        vec![attempt]
    );
    beats.stop().await;
}

#[tokio::test]
async fn a_daemon_that_does_not_list_attempts_keeps_its_attempts_running() {
    let app = TestApp::spawn_with(reconciling).await;
    let ws = app.workspace().await;
    let (rt, id, _) = running(&app, &ws, "d1", json!({})).await;
    let beats = Heartbeater::start(&app, &ws, &[&rt], TICK);
    holds_for(GRACE * 4, "the task keeps running", || async {
        task(&app, &ws, &id).await["status"] == "running"
    })
    .await;
    beats.stop().await;
}

#[tokio::test]
async fn offline_grace_keeps_the_attempts_of_a_runtime_that_comes_back_and_fails_them_later() {
    let app = TestApp::spawn_with(|s| {
        reconciling(s);
        s.offline_grace = Duration::from_secs(4);
    })
    .await;
    let ws = app.workspace().await;
    let (rt, id, attempt) = running(&app, &ws, "d1", json!({})).await;
    let (gone, gone_task, _) = running(&app, &ws, "d2", json!({})).await;
    // Both fall silent: they go offline, but their tasks keep running within the grace.
    eventually(
        Duration::from_secs(10),
        "both runtimes go offline",
        || async {
            common::api::runtime_status(&app, &ws, &rt).await == "offline"
                && common::api::runtime_status(&app, &ws, &gone).await == "offline"
        },
    )
    .await;
    assert_eq!(task(&app, &ws, &id).await["status"], "running");
    // One comes back, listing its attempt: it stays running past the grace.
    let held = Arc::new(Mutex::new(vec![attempt.clone()]));
    let beats = Heartbeater::listing(&app, &ws, &[&rt], held, TICK);
    eventually(Duration::from_secs(10), "the runtime is back", || async {
        common::api::runtime_status(&app, &ws, &rt).await == "online"
    })
    .await;
    // The other fails with runtime_offline once the grace is over.
    eventually(
        Duration::from_secs(15),
        "the silent runtime's task fails",
        || async { task(&app, &ws, &gone_task).await["status"] == "failed" },
    )
    .await;
    assert_eq!(
        task(&app, &ws, &gone_task).await["failure_reason"],
        "runtime_offline"
    );
    assert_eq!(task(&app, &ws, &id).await["status"], "running");
    beats.stop().await;
}
