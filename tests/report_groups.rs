//! Group commit of batch reports (`service::report_groups`): while both report writers are busy,
//! the reports that wait are applied together in one transaction, each answered with its own part;
//! a group that fails as a whole is applied again report by report, so that only the report at
//! fault is refused.
//!
//! One test in this binary: it reads the process-wide `paddock_reports_waiting` gauge.

mod common;

use std::time::Duration;

use common::api::report_spawned;
use common::db::{hold, waiting_on_locks};
use common::json::claimed_attempts;
use common::{TestApp, Ws, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// `POST /daemon/report` with a task's `start` and `complete`, sent from a task of its own.
fn complete(
    app: &TestApp,
    ws: &Ws,
    (task, attempt): &(String, String),
    result: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    report_spawned(
        app,
        ws,
        json!([
            { "task_id": task, "attempt_id": attempt, "action": "start" },
            { "task_id": task, "attempt_id": attempt, "action": "complete", "result": result }
        ]),
    )
}

async fn reports_waiting(app: &TestApp) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("paddock_reports_waiting "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The transaction that wrote a task's `task.completed` event.
async fn completed_in(app: &TestApp, task: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT xact_id::text FROM events WHERE type = 'task.completed' AND subject_id = $1",
    )
    .bind(task.parse::<Uuid>().unwrap())
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

/// Both writers blocked on `blockers`, then `queued` sent and seen waiting, then the writers let
/// go: returns the answers of `queued`, in order.
async fn round(
    app: &TestApp,
    ws: &Ws,
    blockers: &[(String, String)],
    queued: &[(&(String, String), Value)],
) -> Vec<(StatusCode, Value)> {
    let mut held = Vec::new();
    for b in blockers {
        held.push(hold(app, &b.0).await);
    }
    // One at a time: two reports that wait together would be taken as one group.
    let mut busy = Vec::new();
    for (i, b) in blockers.iter().enumerate() {
        busy.push(complete(app, ws, b, json!({ "blocker": true })));
        eventually(
            Duration::from_secs(10),
            "the report writer to wait on the held row lock",
            || async { waiting_on_locks(app).await > i as i64 },
        )
        .await;
    }
    let waiting: Vec<_> = queued
        .iter()
        .map(|(t, result)| complete(app, ws, t, result.clone()))
        .collect();
    eventually(
        Duration::from_secs(10),
        "the later reports to wait for a writer",
        || async { reports_waiting(app).await >= queued.len() as f64 },
    )
    .await;
    for tx in held {
        tx.rollback().await.unwrap();
    }
    for b in busy {
        let (status, body) = b.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"][1]["status"], 200, "{body}");
    }
    let mut out = Vec::new();
    for w in waiting {
        out.push(w.await.unwrap());
    }
    out
}

#[tokio::test]
async fn waiting_reports_are_applied_together_and_a_failing_group_report_by_report() {
    // The writers wait on the held rows as long as they are held (no hand-off).
    let app = TestApp::spawn_with(|s| s.report_lock_wait = Duration::ZERO).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 10).await;
    // Each round blocks every writer with a report of its own, then queues two.
    let w = paddock::service::report_groups::WRITERS;
    let per_round = w + 2;
    for _ in 0..2 * per_round {
        app.enqueue(&ws, &agent, json!({})).await;
    }
    let claimed = app.claim(&ws, &rt, 2 * per_round as i64, 0).await;
    let t = claimed_attempts(&claimed);
    assert_eq!(t.len(), 2 * per_round, "{claimed}");
    let (t, u) = t.split_at(per_round);

    // Two reports wait while the writers are busy: one transaction applies both.
    let answers = round(
        &app,
        &ws,
        &t[..w],
        &[(&t[w], json!({ "n": 2 })), (&t[w + 1], json!({ "n": 3 }))],
    )
    .await;
    for ((status, body), (task, _)) in answers.iter().zip(&t[w..]) {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let r = &body["results"][1];
        assert_eq!(r["status"], 200, "{body}");
        assert_eq!(
            r["task_id"],
            task.as_str(),
            "each report gets its own answer: {body}"
        );
        assert_eq!(r["task"]["status"], "completed", "{body}");
    }
    assert_eq!(
        answers[0].1["results"][1]["task"]["result"],
        json!({ "n": 2 })
    );
    assert_eq!(
        answers[1].1["results"][1]["task"]["result"],
        json!({ "n": 3 })
    );
    let (a, b) = (
        completed_in(&app, &t[w].0).await,
        completed_in(&app, &t[w + 1].0).await,
    );
    assert!(
        a.is_some(),
        "the first waiting report wrote its task.completed event"
    );
    assert_eq!(
        a, b,
        "the two waiting reports were written by one transaction"
    );
    let first = completed_in(&app, &t[0].0).await;
    assert_ne!(
        first, a,
        "a report that found a writer free was applied on its own"
    );

    // A group whose one report the database refuses: that report alone is refused.
    let answers = round(
        &app,
        &ws,
        &u[..w],
        &[
            (&u[w], json!({ "s": "a\u{0}b" })),
            (&u[w + 1], json!({ "n": 7 })),
        ],
    )
    .await;
    let (status, bad) = &answers[0];
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, good) = &answers[1];
    assert_eq!(*status, StatusCode::OK, "{good}");
    assert_eq!(good["results"][1]["task"]["status"], "completed", "{good}");
    assert_eq!(good["results"][1]["task"]["result"], json!({ "n": 7 }));
    let r = app
        .get(&format!("/api/v1/tasks/{}", u[w].0), &ws.member)
        .await;
    assert_eq!(
        r.body["status"], "dispatched",
        "the refused report changed nothing: {:?}",
        r.body
    );
    assert!(completed_in(&app, &u[w].0).await.is_none());
    assert!(completed_in(&app, &u[w + 1].0).await.is_some());
    assert_eq!(reports_waiting(&app).await, 0.0);
    app.stop().await.unwrap();

    held_row_in_a_group().await;
}

/// (Part of the test above: it reads the same gauge.) A group with a report on a row another
/// transaction holds, and one on a free task: once the writer's `report_lock_wait` runs out, the
/// group is handed off, the free task's report is applied while the row stays held, and the held
/// task's reports wait for it.
async fn held_row_in_a_group() {
    // Wide enough that the later reports are seen queued while the writers wait.
    let app = TestApp::spawn_with(|s| s.report_lock_wait = Duration::from_secs(3)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 10).await;
    app.enqueue(&ws, &agent, json!({})).await;
    app.enqueue(&ws, &agent, json!({})).await;
    let claimed = app.claim(&ws, &rt, 2, 0).await;
    let t = claimed_attempts(&claimed);
    assert_eq!(t.len(), 2, "{claimed}");
    let (x, y) = (&t[0], &t[1]);
    let lock = hold(&app, &x.0).await;
    // Every writer waits on x's row, one report each.
    let w = paddock::service::report_groups::WRITERS;
    let mut on_x = Vec::new();
    for i in 0..w {
        on_x.push(complete(&app, &ws, x, json!({ "n": i })));
        eventually(
            Duration::from_secs(10),
            "the report writer to wait on the held row lock",
            || async { waiting_on_locks(&app).await > i as i64 },
        )
        .await;
    }
    // Then one more on x and one on y wait for a writer, to be taken as one group.
    on_x.push(complete(&app, &ws, x, json!({ "n": w })));
    eventually(
        Duration::from_secs(10),
        "the third report on x to wait for a writer",
        || async { reports_waiting(&app).await >= 1.0 },
    )
    .await;
    let free = complete(&app, &ws, y, json!({ "free": true }));
    eventually(
        Duration::from_secs(10),
        "the report on y to wait for a writer",
        || async { reports_waiting(&app).await >= 2.0 },
    )
    .await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), free)
        .await
        .expect("the report on the free task is applied while x's row stays held")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][1]["task"]["status"], "completed", "{body}");
    assert!(
        on_x.iter().all(|r| !r.is_finished()),
        "a report on x answered while its row was held"
    );
    lock.rollback().await.unwrap();
    for r in on_x {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The first report on x that got the row completed it; the later ones found it done.
    let done = common::api::task(&app, &ws, &x.0).await;
    assert_eq!(done["status"], "completed", "{done}");
    app.stop().await.unwrap();
}
