//! Fault injection: a daemon that loses its task and reports late (DESIGN.md §3 fencing).
//!
//! A daemon claims and starts a task, then disappears (stops heartbeating, misses the dispatch
//! deadline, or deregisters). The server takes the attempt away and gives the task a new attempt;
//! every report the daemon then sends for its first attempt must be refused with
//! `409 attempt_superseded` and change nothing, and the second attempt's result is the one kept.
//!
//! Conditions are awaited with `common::eventually`; the only sleep is the pacing of a heartbeat
//! loop (load, not synchronisation).

mod common;

use std::time::{Duration, Instant};

use common::api::{agent_status, deregister, heartbeat, report_batch, runtime_status, task};
use common::json::s;
use common::problem::assert_problem;
use common::settings::TICK;
use common::{TestApp, Ws, eventually};
use paddock::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Shorter than `common::settings::STALE` (1.5 s), so that a silent daemon loses its task sooner.
const STALE: Duration = Duration::from_millis(1000);

/// `common::settings::fast` (sweeps every 200 ms), but runtimes stale after 1 s (> 3 × 200 ms: a
/// valid configuration) and the first retry after 50 ms.
fn fast(s: &mut Settings) {
    common::settings::fast(s);
    s.stale_threshold = STALE;
    s.retry_backoff_base = Duration::from_millis(50);
    s.retry_backoff_max = Duration::from_millis(200);
}

/// Event types about one subject, in id order, straight from the table (no delivery horizon).
/// (The whole sequence, not `common::db::count_events`: a refused report must write no event at
/// all.)
async fn events_of(app: &TestApp, subject: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT type FROM events WHERE subject_id = $1 ORDER BY id")
        .bind(subject.parse::<Uuid>().unwrap())
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// The fields a refused report must leave alone.
fn snapshot(t: &Value) -> Value {
    json!({
        "status": t["status"], "attempt": t["attempt"], "attempt_id": t["attempt_id"],
        "progress": t["progress"], "result": t["result"], "error": t["error"],
        "failure_reason": t["failure_reason"], "started_at": t["started_at"],
        "finished_at": t["finished_at"], "run_after": t["run_after"],
        "attempts": t["attempts"],
    })
}

/// The body of a report `action` for `attempt`, tagged with who sent it (so that a kept result
/// shows which attempt wrote it). Not shared with `daemon_protocol`'s untagged bodies.
fn report_body(action: &str, attempt: &str, tag: &str) -> Value {
    match action {
        "start" => json!({ "attempt_id": attempt }),
        "progress" => json!({ "attempt_id": attempt, "progress": { "by": tag } }),
        "complete" => json!({ "attempt_id": attempt, "result": { "by": tag } }),
        "fail" => json!({ "attempt_id": attempt, "error": format!("failed by {tag}") }),
        other => panic!("unknown action {other}"),
    }
}

/// Sends one report and checks it worked.
async fn report_ok(
    app: &TestApp,
    ws: &Ws,
    id: &str,
    action: &str,
    attempt: &str,
    tag: &str,
) -> Value {
    let r = app
        .report(ws, id, action, report_body(action, attempt, tag))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{action} of {tag}: {:?}", r.body);
    r.body
}

/// Every late report of `attempt` (single calls and one batch) is refused with
/// 409 `attempt_superseded` and leaves the task and its events exactly as they were.
/// Returns how many refusals were checked.
async fn late_reports_are_refused(app: &TestApp, ws: &Ws, id: &str, attempt: &str) -> usize {
    let before = snapshot(&task(app, ws, id).await);
    let events_before = events_of(app, id).await;
    let mut refused = 0;
    for action in ["start", "progress", "complete", "fail"] {
        let r = app
            .report(
                ws,
                id,
                action,
                report_body(action, attempt, "the late attempt"),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "attempt_superseded"),
            "late {action} of attempt {attempt}: {:?}",
            r.body
        );
        assert_problem(
            &r,
            StatusCode::CONFLICT,
            "attempt_superseded",
            &format!("late {action} of attempt {attempt}"),
        );
        refused += 1;
    }
    let updates: Vec<Value> = ["start", "progress", "complete", "fail"]
        .iter()
        .map(|action| {
            let mut u = report_body(action, attempt, "the late attempt (batch)");
            u["task_id"] = json!(id);
            u["action"] = json!(action);
            u
        })
        .collect();
    let results = report_batch(app, ws, json!(updates)).await;
    assert_eq!(results.len(), 4, "{results:?}");
    for res in results {
        assert_eq!(res["status"], 409, "batch: {res}");
        assert_eq!(res["error"]["code"], "attempt_superseded", "batch: {res}");
        refused += 1;
    }
    assert_eq!(
        snapshot(&task(app, ws, id).await),
        before,
        "a refused late report changed the task"
    );
    assert_eq!(
        events_of(app, id).await,
        events_before,
        "a refused late report wrote events"
    );
    refused
}

/// A daemon heartbeating one runtime every 200 ms in a spawned task, until stopped.
struct Heartbeater {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Heartbeater {
    fn start(app: &TestApp, ws: &Ws, rt: &str) -> Self {
        let stop = CancellationToken::new();
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/api/v1/daemon/heartbeat", app.base),
            ws.daemon.clone(),
        );
        let body = json!({ "runtime_ids": [rt] });
        let token2 = stop.clone();
        let handle = tokio::spawn(async move {
            let (mut ok, mut bad) = (0, Vec::new());
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = token2.cancelled() => return (ok, bad),
                }
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    Ok(r) => bad.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => bad.push(e.to_string()),
                }
            }
        });
        Self { stop, handle }
    }

    async fn stop(self) -> usize {
        self.stop.cancel();
        let (ok, bad) = self.handle.await.expect("heartbeater");
        assert!(bad.is_empty(), "failed heartbeats: {bad:?}");
        ok
    }
}

/// Claims one task for `rt`, long-polling up to 5 s; returns (task id, attempt id, attempt).
async fn claim_one(app: &TestApp, ws: &Ws, rt: &str) -> (String, String, i64) {
    let c = app.claim(ws, rt, 1, 5000).await;
    let t = c["tasks"]
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("nothing claimed: {c}"))
        .clone();
    (
        s(&t["task_id"]),
        s(&t["attempt_id"]),
        t["attempt"].as_i64().unwrap(),
    )
}

/// The second attempt starts, reports progress and completes; afterwards a late `complete` of the
/// first attempt is refused and a repeated `complete` of the second keeps the stored result.
async fn second_attempt_completes_and_keeps_its_result(
    app: &TestApp,
    ws: &Ws,
    id: &str,
    a1: &str,
    a2: &str,
) {
    report_ok(app, ws, id, "start", a2, "attempt 2").await;
    report_ok(app, ws, id, "progress", a2, "attempt 2").await;
    let done = report_ok(app, ws, id, "complete", a2, "attempt 2").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], json!({ "by": "attempt 2" }));

    let r = app
        .report(ws, id, "complete", report_body("complete", a1, "attempt 1"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "attempt_superseded"),
        "late complete after completion: {:?}",
        r.body
    );
    // A daemon retrying its own complete after a lost response gets 200 and the stored state:
    // the result it sends the second time is not written.
    let again = app
        .report(
            ws,
            id,
            "complete",
            report_body("complete", a2, "a retry of attempt 2"),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);

    let t = task(app, ws, id).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(t["attempt_id"], a2);
    assert_eq!(
        t["result"],
        json!({ "by": "attempt 2" }),
        "result overwritten: {t}"
    );
    let evs = events_of(app, id).await;
    let completed = evs.iter().filter(|e| *e == "task.completed").count();
    assert_eq!(completed, 1, "task.completed events: {evs:?}");
}

/// (attempt, attempt_id, outcome, failure_reason) of each attempt; the open attempt (appended by
/// `GET /tasks/{id}`) has outcome `open`.
fn attempts(t: &Value) -> Vec<(i64, String, String, Value)> {
    t["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                s(&a["attempt_id"]),
                a["outcome"].as_str().unwrap_or("open").to_owned(),
                a["failure_reason"].clone(),
            )
        })
        .collect()
}

/// DESIGN §3 + §5: R1 claims and starts a task (max_attempts 2) and goes silent; the stale sweep
/// takes R1 offline and puts the task back in the queue (`runtime_offline`). R1 returns (its
/// heartbeat revives it: a second runtime for the same agent cannot exist), claims the task again
/// as attempt 2; every late report of attempt 1 is refused with 409 `attempt_superseded`, and
/// attempt 2's result is stored and never overwritten.
#[tokio::test]
async fn daemon_that_disappears_mid_task_and_returns_after_reassignment_is_refused() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let beats = Heartbeater::start(&app, &ws, &rt);
    let id = s(&app
        .enqueue(
            &ws,
            &agent,
            json!({ "max_attempts": 2, "payload": { "job": 1 } }),
        )
        .await["id"]);

    let (claimed, a1, n) = claim_one(&app, &ws, &rt).await;
    assert_eq!((claimed.as_str(), n), (id.as_str(), 1));
    report_ok(&app, &ws, &id, "start", &a1, "attempt 1").await;
    report_ok(&app, &ws, &id, "progress", &a1, "attempt 1").await;

    // The daemon disappears mid-task.
    let beats_before = beats.stop().await;
    let gone = Instant::now();
    eventually(
        STALE * 5,
        "the silent runtime goes offline and its task back to the queue",
        || async {
            let t = task(&app, &ws, &id).await;
            runtime_status(&app, &ws, &rt).await == "offline"
                && t["status"] == "queued"
                && t["attempts"][0]["failure_reason"] == "runtime_offline"
        },
    )
    .await;
    let offline_after = gone.elapsed();
    let t = task(&app, &ws, &id).await;
    assert_eq!(
        attempts(&t),
        vec![(1, a1.clone(), "failed".into(), json!("runtime_offline"))]
    );
    assert_eq!(
        t["failure_reason"],
        Value::Null,
        "requeued, not failed for good: {t}"
    );
    // DESIGN §5: a sweep updates agent status exactly as the API path does.
    assert_eq!(agent_status(&app, &ws, &agent).await, "offline");
    let evs = events_of(&app, &id).await;
    assert!(evs.contains(&"task.requeued".to_owned()), "{evs:?}");
    let r = app
        .post(
            "/api/v1/daemon/claim",
            &ws.daemon,
            json!({ "runtime_id": rt, "max_tasks": 1 }),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "runtime_offline"),
        "claim while offline: {:?}",
        r.body
    );

    // Late reports while the task waits in the queue, before anyone claimed it again.
    let before = snapshot(&task(&app, &ws, &id).await);
    let events_before = events_of(&app, &id).await;
    for action in ["start", "progress", "complete"] {
        let r = app
            .report(
                &ws,
                &id,
                action,
                report_body(action, &a1, "the late attempt"),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "attempt_superseded"),
            "late {action} while requeued: {:?}",
            r.body
        );
    }
    // The server, not the daemon, failed this attempt (runtime_offline): a late `fail` is no repeat
    // of anything the daemon did, so it is refused like every other late report.
    let late_fail = app
        .report(
            &ws,
            &id,
            "fail",
            report_body("fail", &a1, "the late attempt"),
        )
        .await;
    let late_fail_outcome = match late_fail.code() {
        "" => format!("{} (answered as a repeat)", late_fail.status.as_u16()),
        code => format!("{} {code}", late_fail.status.as_u16()),
    };
    assert_eq!(
        (late_fail.status, late_fail.code()),
        (StatusCode::CONFLICT, "attempt_superseded"),
        "late fail while requeued: {:?}",
        late_fail.body
    );
    assert_eq!(
        snapshot(&task(&app, &ws, &id).await),
        before,
        "late report changed the task"
    );
    assert_eq!(
        events_of(&app, &id).await,
        events_before,
        "late report wrote events"
    );

    // R1 comes back: its heartbeat revives it, and it claims the task as attempt 2.
    let r = heartbeat(&app, &ws, &[&rt]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["runtimes"][0]["status"], "online", "{:?}", r.body);
    assert_eq!(
        agent_status(&app, &ws, &agent).await,
        "idle",
        "agent after the revival"
    );
    let beats = Heartbeater::start(&app, &ws, &rt);
    let (claimed, a2, n) = claim_one(&app, &ws, &rt).await;
    assert_eq!((claimed.as_str(), n), (id.as_str(), 2));
    assert_ne!(a2, a1, "a new attempt needs a new attempt id");
    assert_eq!(agent_status(&app, &ws, &agent).await, "working");

    let refused = late_reports_are_refused(&app, &ws, &id, &a1).await;
    second_attempt_completes_and_keeps_its_result(&app, &ws, &id, &a1, &a2).await;
    let t = task(&app, &ws, &id).await;
    assert_eq!(
        attempts(&t),
        vec![
            (1, a1.clone(), "failed".into(), json!("runtime_offline")),
            (2, a2.clone(), "completed".into(), Value::Null),
        ]
    );
    assert_eq!(agent_status(&app, &ws, &agent).await, "idle");
    let beats_after = beats.stop().await;
    println!(
        "faults: late_daemon path=stale_sweep offline_after={}ms late_refused={refused} \
         late_fail_while_requeued=\"{late_fail_outcome}\" heartbeats={} result_kept=attempt2",
        offline_after.as_millis(),
        beats_before + beats_after,
    );
    app.stop().await.unwrap();
}

/// DESIGN §5 sweep 2 + §3: a daemon that claims and never starts loses the attempt at
/// `dispatch_timeout`; the task is retried (attempt 2) and attempt 1's reports are refused.
#[tokio::test]
async fn attempt_lost_to_dispatch_timeout_is_refused_after_reassignment() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.dispatch_timeout = Duration::from_millis(800);
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "slow-starter").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let beats = Heartbeater::start(&app, &ws, &rt);
    let id = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]);
    let (_, a1, _) = claim_one(&app, &ws, &rt).await;
    let claimed_at = Instant::now();
    // The daemon sits on the attempt; the long poll hands out attempt 2 once the sweep requeued it.
    let (claimed, a2, n) = claim_one(&app, &ws, &rt).await;
    let reassigned_after = claimed_at.elapsed();
    assert_eq!((claimed.as_str(), n), (id.as_str(), 2));
    assert!(
        reassigned_after >= Duration::from_millis(800),
        "reassigned before dispatch_timeout: {reassigned_after:?}"
    );
    let t = task(&app, &ws, &id).await;
    assert_eq!(
        attempts(&t),
        vec![
            (1, a1.clone(), "failed".into(), json!("dispatch_timeout")),
            (2, a2.clone(), "open".into(), Value::Null),
        ]
    );
    let refused = late_reports_are_refused(&app, &ws, &id, &a1).await;
    second_attempt_completes_and_keeps_its_result(&app, &ws, &id, &a1, &a2).await;
    beats.stop().await;
    println!(
        "faults: late_daemon path=dispatch_timeout reassigned_after={}ms late_refused={refused} result_kept=attempt2",
        reassigned_after.as_millis()
    );
    app.stop().await.unwrap();
}

/// DESIGN §4 `deregister`: the runtime goes offline now and its running task fails with
/// `runtime_offline` — retried when attempts are left (the returning daemon's late reports of
/// attempt 1 are refused, attempt 2's result is kept), failed for good otherwise (late reports
/// are refused and the task stays failed).
#[tokio::test]
async fn deregistered_daemons_late_reports_are_refused() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "leaving").await;
    let agent = app.agent(&ws, &rt, 2).await;
    let retried = s(&app
        .enqueue(&ws, &agent, json!({ "max_attempts": 2, "priority": 1 }))
        .await["id"]);
    let single = s(&app.enqueue(&ws, &agent, json!({ "max_attempts": 1 })).await["id"]);
    let c = app.claim(&ws, &rt, 2, 0).await;
    let got = common::json::claimed_attempts(&c);
    assert_eq!(got.len(), 2, "{c}");
    let a1 = got.iter().find(|(t, _)| *t == retried).unwrap().1.clone();
    let b1 = got.iter().find(|(t, _)| *t == single).unwrap().1.clone();
    report_ok(&app, &ws, &retried, "start", &a1, "attempt 1").await;
    report_ok(&app, &ws, &single, "start", &b1, "attempt 1").await;

    deregister(&app, &ws, &rt).await;
    assert_eq!(runtime_status(&app, &ws, &rt).await, "offline");
    let t = task(&app, &ws, &retried).await;
    assert_eq!(t["status"], "queued", "{t}");
    let t = task(&app, &ws, &single).await;
    assert_eq!(
        (&t["status"], &t["failure_reason"]),
        (&json!("failed"), &json!("runtime_offline")),
        "{t}"
    );

    // The single-attempt task failed for good: its attempt is still the current one, so the late
    // reports are refused as transitions out of a failed task (docs/api.md fencing table).
    let before = snapshot(&t);
    let mut single_codes = Vec::new();
    for action in ["progress", "complete"] {
        let r = app
            .report(
                &ws,
                &single,
                action,
                report_body(action, &b1, "after deregister"),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "late {action}: {:?}",
            r.body
        );
        assert_eq!(
            r.code(),
            "attempt_superseded",
            "late {action}: {:?}",
            r.body
        );
        single_codes.push(format!("{action}={}", r.code()));
    }
    assert_eq!(snapshot(&task(&app, &ws, &single).await), before);

    // The daemon registers again (back online) and gets the retried task as attempt 2.
    let r = app
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            json!({ "daemon_id": "leaving", "provider": "claude-code" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["runtime_id"], rt);
    let beats = Heartbeater::start(&app, &ws, &rt);
    let (claimed, a2, n) = claim_one(&app, &ws, &rt).await;
    assert_eq!((claimed.as_str(), n), (retried.as_str(), 2));
    let refused = late_reports_are_refused(&app, &ws, &retried, &a1).await;
    second_attempt_completes_and_keeps_its_result(&app, &ws, &retried, &a1, &a2).await;
    let t = task(&app, &ws, &retried).await;
    assert_eq!(
        attempts(&t),
        vec![
            (1, a1.clone(), "failed".into(), json!("runtime_offline")),
            (2, a2.clone(), "completed".into(), Value::Null),
        ]
    );
    // Nothing brought the single-attempt task back.
    let t = task(&app, &ws, &single).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["result"], Value::Null);
    beats.stop().await;
    println!(
        "faults: late_daemon path=deregister late_refused={refused} single_attempt_late=[{}] result_kept=attempt2",
        single_codes.join(",")
    );
    app.stop().await.unwrap();
}
