//! One task's life through the front door: enqueue, claim, start, progress, complete; events logged.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_task_goes_from_queued_to_completed_with_its_events() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop-1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app
        .enqueue(&ws, &agent, json!({ "payload": { "prompt": "hi" } }))
        .await;
    assert_eq!(task["status"], "queued");
    let id = task["id"].as_str().unwrap();

    let claimed = app.claim(&ws, &rt, 1, 0).await;
    let t = &claimed["tasks"][0];
    assert_eq!(t["task_id"], id);
    assert_eq!(t["attempt"], 1);
    let attempt = t["attempt_id"].as_str().unwrap();

    let r = app
        .report(&ws, id, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "running");
    let r = app
        .report(
            &ws,
            id,
            "progress",
            json!({ "attempt_id": attempt, "progress": { "pct": 50 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            &ws,
            id,
            "complete",
            json!({ "attempt_id": attempt, "result": { "ok": true } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(r.body["result"], json!({ "ok": true }));

    let r = app.get(&format!("/api/v1/tasks/{id}"), &ws.member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["attempts"][0]["outcome"], "completed");

    let r = app.get("/api/v1/events?limit=100", &ws.member).await;
    let types: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for want in [
        "runtime.registered",
        "agent.created",
        "task.queued",
        "task.dispatched",
        "agent.status",
        "task.running",
        "task.updated",
        "task.completed",
    ] {
        assert!(types.contains(&want), "missing {want} in {types:?}");
    }
    app.stop().await.unwrap();
}
