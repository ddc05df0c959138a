//! Transcripts, usage and sessions (DESIGN §9): the fenced, idempotent, capped post; reading back in
//! order; the live socket across replicas with its `end`; usage per attempt and summed; sessions
//! offered to a later attempt; retention.

mod common;

use std::time::Duration;

use common::problem::assert_problem;
use common::settings::fast;
use common::{TestApp, Ws, eventually};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A task of its own agent, claimed and started: `(runtime, agent, task, attempt id)`.
async fn running(app: &TestApp, ws: &Ws, extra: Value) -> (String, String, String, String) {
    let rt = app
        .runtime(ws, &format!("d-{}", uuid::Uuid::new_v4()))
        .await;
    let agent = app.agent(ws, &rt, 1).await;
    let task = app.enqueue(ws, &agent, extra).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempt = claim_one(app, ws, &rt).await;
    start(app, ws, &task, &attempt).await;
    (rt, agent, task, attempt)
}

async fn claim_one(app: &TestApp, ws: &Ws, rt: &str) -> String {
    let c = app.claim(ws, rt, 1, 0).await;
    c["tasks"][0]["attempt_id"].as_str().unwrap().to_owned()
}

async fn start(app: &TestApp, ws: &Ws, task: &str, attempt: &str) {
    let r = app
        .report(ws, task, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

fn msg(seq: i64, content: &str) -> Value {
    json!({ "seq": seq, "kind": "text", "content": content })
}

async fn post(
    app: &TestApp,
    token: &str,
    task: &str,
    attempt: &str,
    messages: Value,
) -> common::Resp {
    app.post(
        &format!("/api/v1/tasks/{task}/messages"),
        token,
        json!({ "attempt_id": attempt, "messages": messages }),
    )
    .await
}

async fn post_ok(app: &TestApp, ws: &Ws, task: &str, attempt: &str, messages: Value) -> Value {
    let r = post(app, &ws.daemon, task, attempt, messages).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

async fn stored(app: &TestApp) -> i64 {
    app.count("task_messages").await
}

fn seqs(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn messages_are_stored_once_in_seq_order_and_paged_by_cursor() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;

    // Out of order, then a repeat (with other content) and a new one.
    let a = post_ok(
        &app,
        &ws,
        &task,
        &attempt,
        json!([msg(2, "c"), msg(0, "a"), msg(1, "b")]),
    )
    .await;
    assert_eq!(
        a,
        json!({ "accepted": 3, "duplicates": 0, "last_seq": 2, "truncated": false })
    );
    let b = post_ok(
        &app,
        &ws,
        &task,
        &attempt,
        json!([msg(1, "B!"), msg(3, "d")]),
    )
    .await;
    assert_eq!(
        b,
        json!({ "accepted": 1, "duplicates": 1, "last_seq": 3, "truncated": false })
    );
    assert_eq!(stored(&app).await, 4);

    let path = format!("/api/v1/tasks/{task}/messages");
    let first = app.get(&format!("{path}?limit=2"), &ws.member).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(seqs(&first.body), vec![0, 1]);
    assert_eq!(
        first.body["items"][1]["content"], "b",
        "the first stored wins"
    );
    assert_eq!(first.body["items"][0]["attempt"], 1);
    assert_eq!(first.body["items"][0]["kind"], "text");
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), &ws.member)
        .await;
    assert_eq!(seqs(&second.body), vec![2, 3]);
    assert!(
        second.body["next_cursor"].is_null(),
        "the last page: {:?}",
        second.body
    );
    // One attempt, after a seq.
    let after = app
        .get(&format!("{path}?attempt=1&after_seq=1"), &ws.member)
        .await;
    assert_eq!(seqs(&after.body), vec![2, 3]);
    let bad = app.get(&format!("{path}?after_seq=1"), &ws.member).await;
    assert_problem(
        &bad,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "after_seq without attempt",
    );
}

#[tokio::test]
async fn refused_posts_store_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;
    let other = app.workspace().await;
    let big = "x".repeat(64 * 1024 + 1);
    let many: Vec<Value> = (0..501).map(|i| msg(i, "m")).collect();
    for (what, messages, status, code) in [
        (
            "unknown kind",
            json!([{ "seq": 0, "kind": "shout", "content": "x" }]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "oversized content",
            json!([msg(0, &big)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "too many messages",
            json!(many),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "no messages",
            json!([]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "seq < 0",
            json!([msg(-1, "x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let r = post(&app, &ws.daemon, &task, &attempt, messages).await;
        assert_problem(&r, status, code, what);
    }
    let foreign = post(&app, &other.daemon, &task, &attempt, json!([msg(0, "x")])).await;
    assert_problem(
        &foreign,
        StatusCode::NOT_FOUND,
        "not_found",
        "another workspace's task",
    );
    let member = post(&app, &ws.member, &task, &attempt, json!([msg(0, "x")])).await;
    assert_problem(
        &member,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a member token",
    );
    let stale = uuid::Uuid::new_v4().to_string();
    let superseded = post(&app, &ws.daemon, &task, &stale, json!([msg(0, "x")])).await;
    assert_problem(
        &superseded,
        StatusCode::CONFLICT,
        "attempt_superseded",
        "another attempt",
    );
    assert_eq!(stored(&app).await, 0, "nothing stored");
}

#[tokio::test]
async fn a_cancelled_attempt_is_refused_but_the_tail_after_complete_is_kept() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, done, done_attempt) = running(&app, &ws, json!({})).await;
    let r = app
        .report(
            &ws,
            &done,
            "complete",
            json!({ "attempt_id": done_attempt, "result": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let tail = post_ok(
        &app,
        &ws,
        &done,
        &done_attempt,
        json!([msg(9, "last words")]),
    )
    .await;
    assert_eq!(tail["accepted"], 1, "a completed attempt is still current");

    let (_, _, cancelled, c_attempt) = running(&app, &ws, json!({})).await;
    let r = app
        .post(
            &format!("/api/v1/tasks/{cancelled}/cancel"),
            &ws.member,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let refused = post(
        &app,
        &ws.daemon,
        &cancelled,
        &c_attempt,
        json!([msg(0, "x")]),
    )
    .await;
    assert_problem(
        &refused,
        StatusCode::CONFLICT,
        "attempt_superseded",
        "a cancelled attempt",
    );
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn a_transcript_past_transcript_max_bytes_is_cut_and_marked_truncated() {
    let app = TestApp::spawn_with(|s| s.transcript_max_bytes = 1024).await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;
    let part = "y".repeat(400);
    let r = post_ok(
        &app,
        &ws,
        &task,
        &attempt,
        json!([msg(0, &part), msg(1, &part), msg(2, &part), msg(3, "z")]),
    )
    .await;
    assert_eq!(
        r,
        json!({ "accepted": 2, "duplicates": 0, "last_seq": 1, "truncated": true })
    );
    // Later messages are dropped too, even small ones; the answer is 200 so a daemon does not retry.
    let later = post_ok(&app, &ws, &task, &attempt, json!([msg(4, "z")])).await;
    assert_eq!(later["accepted"], 0);
    assert_eq!(later["truncated"], true);
    assert_eq!(stored(&app).await, 2);
}

#[tokio::test]
async fn messages_never_enter_the_event_log() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;
    let before = app.count("events").await;
    let batch: Vec<Value> = (0..50).map(|i| msg(i, "m")).collect();
    post_ok(&app, &ws, &task, &attempt, json!(batch)).await;
    assert_eq!(app.count("events").await, before);
}

/// A raw transcript socket on `app`: the frames until the socket closes, and its close code.
async fn watch_raw(
    app: &TestApp,
    ws: &Ws,
    task: &str,
    query: &str,
) -> tokio::task::JoinHandle<(Vec<Value>, Option<u16>)> {
    let url = format!("ws://{}/api/v1/tasks/{task}/messages/ws{query}", app.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ws.member).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(Ok(m)) = socket.next().await {
            match m {
                WsMessage::Text(t) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
                WsMessage::Close(c) => return (frames, c.map(|c| u16::from(c.code))),
                _ => {}
            }
        }
        (frames, None)
    })
}

fn keys(frames: &[Value]) -> Vec<(i64, i64)> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| (f["attempt"].as_i64().unwrap(), f["seq"].as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_watcher_on_another_replica_gets_the_replay_then_live_messages_then_end() {
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (_, _, task, attempt) = running(&a, &ws, json!({})).await;
    post_ok(&a, &ws, &task, &attempt, json!([msg(0, "a"), msg(1, "b")])).await;
    let watcher = watch_raw(&b, &ws, &task, "").await;
    // Live: written on replica A, read on B as it commits.
    let seen = b.client(&ws.member);
    let mut live = seen.transcript(task.parse().unwrap(), None, Some("1:1".into()));
    post_ok(&a, &ws, &task, &attempt, json!([msg(2, "c")])).await;
    let frame = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("a live frame")
        .unwrap()
        .unwrap();
    assert!(
        matches!(frame, paddock_client::api::TranscriptFrame::Message(ref m) if m.seq == 2),
        "{frame:?}"
    );
    post_ok(&a, &ws, &task, &attempt, json!([msg(3, "d")])).await;
    let r = a
        .report(
            &ws,
            &task,
            "complete",
            json!({ "attempt_id": attempt, "result": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (frames, close) = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .expect("the socket ends")
        .unwrap();
    assert_eq!(
        keys(&frames),
        vec![(1, 0), (1, 1), (1, 2), (1, 3)],
        "replay, then live, in order"
    );
    assert_eq!(
        frames.last().unwrap(),
        &json!({ "type": "end", "status": "completed" })
    );
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn messages_racing_complete_are_all_sent_before_end_and_the_tail_is_stored() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;
    let watcher = watch_raw(&app, &ws, &task, "").await;
    let poster = {
        let (base, http, token, task, attempt) = (
            app.base.clone(),
            app.http.clone(),
            ws.daemon.clone(),
            task.clone(),
            attempt.clone(),
        );
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for seq in 0..40 {
                let r = http
                    .post(format!("{base}/api/v1/tasks/{task}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({ "attempt_id": attempt, "messages": [msg(seq, "racing")] }))
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                if v["accepted"] == 1 {
                    accepted.push(seq);
                }
            }
            accepted
        })
    };
    // Complete while the posts go on.
    eventually(Duration::from_secs(10), "some messages stored", || async {
        stored(&app).await >= 5
    })
    .await;
    let r = app
        .report(
            &ws,
            &task,
            "complete",
            json!({ "attempt_id": attempt, "result": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let before_complete = stored(&app).await;
    let accepted = poster.await.unwrap();
    assert_eq!(
        accepted.len(),
        40,
        "every message is accepted, those after complete too"
    );
    let (frames, close) = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(close, Some(1000));
    let got = keys(&frames);
    assert!(
        got.len() as i64 >= before_complete,
        "everything committed before the task ended is sent before end: {} < {before_complete}",
        got.len()
    );
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no frame twice");
    assert_eq!(stored(&app).await, 40, "the tail is stored");
}

#[tokio::test]
async fn the_socket_follows_the_task_across_attempts_or_keeps_to_one() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(1)).await;
    let ws = app.workspace().await;
    let (rt, _, task, first) = running(&app, &ws, json!({ "max_attempts": 2 })).await;
    post_ok(&app, &ws, &task, &first, json!([msg(0, "first try")])).await;
    let r = app
        .report(
            &ws,
            &task,
            "fail",
            json!({ "attempt_id": first, "error": "boom" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let second = eventually_claim(&app, &ws, &rt).await;
    start(&app, &ws, &task, &second).await;
    post_ok(&app, &ws, &task, &second, json!([msg(0, "second try")])).await;
    let all = watch_raw(&app, &ws, &task, "").await;
    let one = watch_raw(&app, &ws, &task, "?attempt=2").await;
    let r = app
        .report(
            &ws,
            &task,
            "complete",
            json!({ "attempt_id": second, "result": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (all, _) = all.await.unwrap();
    let (one, _) = one.await.unwrap();
    assert_eq!(keys(&all), vec![(1, 0), (2, 0)]);
    assert_eq!(keys(&one), vec![(2, 0)]);
}

async fn eventually_claim(app: &TestApp, ws: &Ws, rt: &str) -> String {
    common::wait::eventually_some(
        Duration::from_secs(10),
        "the retry is claimable",
        || async {
            let c = app.claim(ws, rt, 1, 0).await;
            c["tasks"][0]["attempt_id"].as_str().map(str::to_owned)
        },
    )
    .await
}

fn usage(input: i64, output: i64, cost: f64) -> Value {
    json!({ "model": "m1", "input_tokens": input, "output_tokens": output,
            "cache_read_tokens": 1, "cache_write_tokens": 2, "cost_usd": cost })
}

#[tokio::test]
async fn usage_is_cumulative_per_attempt_and_summed_on_the_task() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(1)).await;
    let ws = app.workspace().await;
    let (rt, agent, task, first) = running(&app, &ws, json!({ "max_attempts": 2 })).await;
    for u in [usage(10, 5, 0.1), usage(20, 10, 0.2)] {
        let r = app
            .report(
                &ws,
                &task,
                "progress",
                json!({ "attempt_id": first, "progress": {}, "usage": u }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let t = common::api::task(&app, &ws, &task).await;
    assert_eq!(t["usage"]["input_tokens"], 20, "the last report wins: {t}");
    let r = app
        .report(
            &ws,
            &task,
            "fail",
            json!({ "attempt_id": first, "error": "x", "usage": usage(30, 15, 0.3) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let second = eventually_claim(&app, &ws, &rt).await;
    // The batch report carries usage too.
    let results = common::api::report_batch(
        &app,
        &ws,
        json!([
            { "task_id": task, "attempt_id": second, "action": "start" },
            { "task_id": task, "attempt_id": second, "action": "complete", "result": {}, "usage": usage(1, 1, 0.01) }
        ]),
    )
    .await;
    assert!(results.iter().all(|r| r["status"] == 200), "{results:?}");
    let t = common::api::task(&app, &ws, &task).await;
    assert_eq!(t["usage"]["input_tokens"], 31, "{t}");
    assert_eq!(t["usage"]["output_tokens"], 16);
    assert!((t["usage"]["cost_usd"].as_f64().unwrap() - 0.31).abs() < 1e-9);
    let per_attempt: Vec<i64> = t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["usage"]["input_tokens"].as_i64().unwrap())
        .collect();
    assert_eq!(per_attempt, vec![30, 1]);

    // Operators read it per day, as the read-only role.
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("SET ROLE paddock_readonly")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (tasks, input, cost): (i64, i64, f64) = sqlx::query_as(
        "SELECT tasks, input_tokens::int8, cost_usd::float8 FROM ops.usage_daily WHERE agent_id = $1",
    )
    .bind(agent.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    assert_eq!((tasks, input), (1, 31));
    assert!((cost - 0.31).abs() < 1e-9);
}

#[tokio::test]
async fn a_later_attempt_is_offered_the_session_of_an_earlier_one() {
    let app = TestApp::spawn_with(|s| s.retry_backoff_base = Duration::from_millis(1)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d-sessions").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({ "max_attempts": 2 })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claim = app.claim(&ws, &rt, 1, 0).await;
    assert!(
        claim["tasks"][0].get("prior_session").is_none(),
        "a first attempt has none: {claim}"
    );
    let first = claim["tasks"][0]["attempt_id"].as_str().unwrap().to_owned();
    start(&app, &ws, &task, &first).await;
    let session = json!({ "id": "sess-1", "work_dir": "/work/t1" });
    let r = app
        .report(
            &ws,
            &task,
            "progress",
            json!({ "attempt_id": first, "progress": {}, "session": session }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            &ws,
            &task,
            "fail",
            json!({ "attempt_id": first, "error": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let claim = common::wait::eventually_some(Duration::from_secs(10), "the retry", || async {
        let c = app.claim(&ws, &rt, 1, 0).await;
        (!c["tasks"].as_array().unwrap().is_empty()).then_some(c)
    })
    .await;
    assert_eq!(
        claim["tasks"][0]["prior_session"],
        json!({ "id": "sess-1", "work_dir": "/work/t1", "runtime_id": rt })
    );
}

#[tokio::test]
async fn bad_usage_and_sessions_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_, _, task, attempt) = running(&app, &ws, json!({})).await;
    for (what, extra) in [
        (
            "negative tokens",
            json!({ "usage": { "input_tokens": -1 } }),
        ),
        ("negative cost", json!({ "usage": { "cost_usd": -0.5 } })),
        (
            "a string for tokens",
            json!({ "usage": { "input_tokens": "many" } }),
        ),
        ("an empty session id", json!({ "session": { "id": "" } })),
        (
            "an unknown usage field",
            json!({ "usage": { "tokens": 1 } }),
        ),
    ] {
        let mut body = json!({ "attempt_id": attempt, "progress": { "p": 1 } });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = app.report(&ws, &task, "progress", body).await;
        assert_problem(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            what,
        );
    }
    let t = common::api::task(&app, &ws, &task).await;
    assert!(t["progress"].is_null() && t["usage"].is_null(), "{t}");
}

#[tokio::test]
async fn transcripts_past_transcript_retention_are_deleted_by_the_sweep() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.transcript_retention = Duration::from_secs(3600);
    })
    .await;
    let ws = app.workspace().await;
    let (_, _, old, old_attempt) = running(&app, &ws, json!({})).await;
    let (_, _, new, new_attempt) = running(&app, &ws, json!({})).await;
    post_ok(
        &app,
        &ws,
        &old,
        &old_attempt,
        json!([msg(0, "old"), msg(1, "old")]),
    )
    .await;
    post_ok(&app, &ws, &new, &new_attempt, json!([msg(0, "new")])).await;
    sqlx::query(
        "UPDATE task_transcripts SET first_at = now() - interval '2 hours' WHERE task_id = $1",
    )
    .bind(old.parse::<uuid::Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the old transcript is deleted",
        || async { stored(&app).await == 1 },
    )
    .await;
    let left: Vec<String> = sqlx::query_scalar("SELECT content FROM task_messages")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["new"]);
}
