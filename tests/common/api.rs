//! Small API calls shared by the test binaries: reads of one resource, batch reports, heartbeats,
//! deregistration, `/readyz`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::json::s;
use super::{Resp, TestApp, Ws, eventually};

/// `GET /tasks/{id}` (with its attempts); asserts 200 and returns the body.
pub async fn task(app: &TestApp, ws: &Ws, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/tasks/{id}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// `POST /daemon/report {updates}`; asserts 200 and returns the per-update results.
pub async fn report_batch(app: &TestApp, ws: &Ws, updates: Value) -> Vec<Value> {
    let r = app
        .post(
            "/api/v1/daemon/report",
            &ws.daemon,
            json!({ "updates": updates }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["results"].as_array().expect("results").clone()
}

/// `POST /daemon/report {updates}` sent from a task of its own: its status and JSON answer.
pub fn report_spawned(
    app: &TestApp,
    ws: &Ws,
    updates: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let req = app
        .http
        .post(format!("{}/api/v1/daemon/report", app.base))
        .bearer_auth(&ws.daemon)
        .json(&json!({ "updates": updates }));
    tokio::spawn(async move {
        let r = req.send().await.expect("report sent");
        let status = r.status();
        (status, r.json().await.expect("a JSON answer"))
    })
}

/// `GET /runtimes/{id}`; asserts 200 and returns the body.
pub async fn runtime(app: &TestApp, ws: &Ws, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/runtimes/{id}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// The `status` of a runtime, through `GET /runtimes/{id}` (which must answer 200).
pub async fn runtime_status(app: &TestApp, ws: &Ws, id: &str) -> String {
    s(&runtime(app, ws, id).await["status"])
}

/// The `status` of an agent, through `GET /agents/{id}` (which must answer 200).
pub async fn agent_status(app: &TestApp, ws: &Ws, id: &str) -> String {
    let r = app.get(&format!("/api/v1/agents/{id}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    s(&r.body["status"])
}

/// One heartbeat of the workspace's daemon for `ids`; the reply as it came (no assertion).
pub async fn heartbeat(app: &TestApp, ws: &Ws, ids: &[&str]) -> Resp {
    app.post(
        "/api/v1/daemon/heartbeat",
        &ws.daemon,
        json!({ "runtime_ids": ids }),
    )
    .await
}

/// One heartbeat for `ids` that must answer 200; returns the reply body.
pub async fn heartbeat_ok(app: &TestApp, ws: &Ws, ids: &[&str]) -> Value {
    let r = heartbeat(app, ws, ids).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// Deregisters one online runtime; asserts 200 and that exactly this runtime went offline.
pub async fn deregister(app: &TestApp, ws: &Ws, rt: &str) {
    let r = app
        .post(
            "/api/v1/daemon/deregister",
            &ws.daemon,
            json!({ "runtime_ids": [rt] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["offline"], json!([rt]), "{:?}", r.body);
}

/// `GET /readyz` (no token); the reply as it came.
pub async fn readyz(app: &TestApp) -> Resp {
    app.request(reqwest::Method::GET, "/readyz", None, None)
        .await
}

/// Awaits (up to 5 s) `/readyz` answering 503 with Redis `down` and PostgreSQL `up`.
pub async fn await_readyz_redis_down(app: &TestApp) {
    eventually(
        Duration::from_secs(5),
        "readyz reports Redis down",
        || async {
            let r = readyz(app).await;
            r.status == StatusCode::SERVICE_UNAVAILABLE
                && r.body["checks"]["redis"] == "down"
                && r.body["checks"]["postgres"] == "up"
        },
    )
    .await;
}

/// A long-poll claim (`POST /daemon/claim` with `wait_ms`) running in the background; the handle
/// answers the claim's reply.
pub fn long_poll(
    app: &TestApp,
    ws: &Ws,
    runtime: &str,
    max_tasks: i64,
    wait_ms: i64,
) -> tokio::task::JoinHandle<paddock_client::api::ClaimReply> {
    let client = app.client(&ws.daemon);
    let body = paddock_client::api::Claim {
        runtime_id: runtime.parse().expect("a runtime id"),
        max_tasks: max_tasks.try_into().expect("max_tasks in range"),
        wait_ms: wait_ms.try_into().expect("wait_ms in range"),
    };
    tokio::spawn(async move { client.claim(&body).await.expect("claim") })
}

/// `PATCH /agents/{id} {"paused": paused}`; asserts 200 and returns the agent.
pub async fn set_paused(app: &TestApp, ws: &Ws, agent: &str, paused: bool) -> Value {
    let r = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &ws.member,
            json!({ "paused": paused }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}
