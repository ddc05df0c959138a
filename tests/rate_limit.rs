//! Per-token rate limit: over the limit a request answers 429 `rate_limited` with `Retry-After`,
//! writes nothing, and other tokens are unaffected.

mod common;

use common::TestApp;
use common::api::heartbeat_ok;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn over_the_limit_answers_429_with_retry_after_and_writes_nothing() {
    let app = TestApp::spawn_with(|s| s.rate_limit = 5).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let tasks_before = app.count("tasks").await;

    // 60 requests at once: far more than the burst (2 × 5) can absorb in the time they take.
    let body = json!({ "agent_id": agent, "payload": {} });
    let replies = futures::future::join_all(
        (0..60).map(|_| app.post("/api/v1/tasks", &ws.member, body.clone())),
    )
    .await;
    let mut created = 0;
    let mut limited = None;
    for r in replies {
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => limited = Some(r),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    let r = limited.expect("the limit never triggered");
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(
        (5..60).contains(&created),
        "a burst of at least the rate is allowed, not all: got {created}"
    );
    assert_eq!(
        app.count("tasks").await,
        tasks_before + created,
        "a limited request wrote a task"
    );

    // Another token of the same workspace has its own budget.
    heartbeat_ok(&app, &ws, &[&rt]).await;
}
