//! Hostile input: generated JSON bodies (proptest) and hand-picked nasties against every writing
//! endpoint. Whatever arrives, the answer is never a 5xx, every 4xx is problem+json, and a refused
//! request writes nothing.

mod common;

use common::db::counts;
use common::{TestApp, Ws};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends `body` (raw bytes) and checks the invariants; returns the status.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> StatusCode {
    let before = counts(app).await;
    let res = app
        .http
        .request(method.clone(), format!("{}{}", app.base, path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("request");
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = res.text().await.unwrap_or_default();
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    assert!(
        !status.is_server_error(),
        "{method} {path} answered {status} to {shown}: {text}"
    );
    if status.is_client_error() {
        assert!(
            ct.starts_with("application/problem+json"),
            "{method} {path} {status}: content-type {ct}"
        );
        let problem: Value = serde_json::from_str(&text).expect("problem body is JSON");
        assert!(
            problem["code"].is_string() && problem["status"] == status.as_u16(),
            "{problem}"
        );
        assert_eq!(
            counts(app).await,
            before,
            "{method} {path} refused {shown} but wrote something"
        );
    }
    status
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!("00000000-0000-0000-0000-000000000000")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body with one field replaced by an arbitrary value (or removed, or one added).
fn mutate(valid: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = valid
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    (0..keys.len().max(1) + 1, json_value(), any::<bool>()).prop_map(move |(i, v, remove)| {
        let mut body = valid.clone();
        let obj = body.as_object_mut().expect("object");
        match keys.get(i) {
            Some(k) if remove => {
                obj.remove(k);
            }
            Some(k) => {
                obj.insert(k.clone(), v);
            }
            None => {
                obj.insert("unexpected_field".into(), v);
            }
        }
        body
    })
}

struct Fixture {
    app: TestApp,
    ws: Ws,
    rt: String,
    agent: String,
    /// Running, on `attempt`.
    task: String,
    attempt: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "hostile").await;
    let agent = app.agent(&ws, &rt, 5).await;
    let task = app.enqueue(&ws, &agent, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claimed = app.claim(&ws, &rt, 1, 0).await;
    let attempt = claimed["tasks"][0]["attempt_id"]
        .as_str()
        .expect("the fixture's task is claimed")
        .to_owned();
    let started = app
        .report(&ws, &task, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    Fixture {
        app,
        ws,
        rt,
        agent,
        task,
        attempt,
    }
}

fn endpoints(f: &Fixture) -> Vec<(reqwest::Method, String, String, Value)> {
    use reqwest::Method;
    let (m, d) = (f.ws.member.clone(), f.ws.daemon.clone());
    let attempt = "00000000-0000-0000-0000-000000000001";
    vec![
        (
            Method::POST,
            "/api/v1/tasks".into(),
            m.clone(),
            json!({ "agent_id": f.agent, "payload": {}, "priority": 0, "max_attempts": 1 }),
        ),
        (
            Method::POST,
            "/api/v1/agents".into(),
            m.clone(),
            json!({ "name": "a", "runtime_id": f.rt, "max_concurrent_tasks": 1, "definition": {} }),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{}", f.agent),
            m.clone(),
            json!({ "name": "b", "definition": {} }),
        ),
        (
            Method::POST,
            format!("/api/v1/workspaces/{}/tokens", f.ws.id),
            m,
            json!({ "kind": "member", "name": "n" }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/register".into(),
            d.clone(),
            json!({ "daemon_id": "x", "provider": "p" }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/heartbeat".into(),
            d.clone(),
            json!({ "runtime_ids": [f.rt] }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/claim".into(),
            d.clone(),
            json!({ "runtime_id": f.rt, "max_tasks": 1, "wait_ms": 0 }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/complete", f.task),
            d.clone(),
            json!({ "attempt_id": attempt, "result": {} }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/fail", f.task),
            d.clone(),
            json!({ "attempt_id": attempt, "error": "e" }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/heartbeat".into(),
            d.clone(),
            json!({ "runtime_ids": [f.rt], "attempts": [f.attempt] }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/messages", f.task),
            d.clone(),
            json!({ "attempt_id": f.attempt, "messages": [
                { "seq": 0, "kind": "text", "content": "hi", "data": { "k": 1 } }
            ] }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/progress", f.task),
            d.clone(),
            json!({ "attempt_id": f.attempt, "usage": { "input_tokens": 1, "cost_usd": 0.5 },
                    "session": { "id": "s", "work_dir": "/w" } }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/report".into(),
            d,
            json!({ "updates": [{ "task_id": f.task, "attempt_id": attempt, "action": "start" }] }),
        ),
    ]
}

#[test]
fn generated_bodies_never_get_a_5xx_and_refusals_write_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(fixture());
    let mut total = 0;
    for (method, path, token, valid) in endpoints(&f) {
        // A fixed seed: the same bodies on every run, so a failure is reproducible and CI is stable.
        let config = Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let strategy = prop_oneof![mutate(valid.clone()), json_value()];
        runner
            .run(&strategy, |body| {
                let bytes = serde_json::to_vec(&body).unwrap();
                rt.block_on(send(&f.app, method.clone(), &path, &token, bytes));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        total += 24;
    }
    println!("hostile: generated bodies={total} server_errors=0");
}

#[tokio::test]
async fn hand_picked_nasties_are_4xx_problems_and_write_nothing() {
    let f = fixture().await;
    let (app, m, d) = (&f.app, f.ws.member.as_str(), f.ws.daemon.as_str());
    let post = reqwest::Method::POST;
    let messages = format!("/api/v1/tasks/{}/messages", f.task);
    let progress = format!("/api/v1/tasks/{}/progress", f.task);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!(
        r#"{{"agent_id":"{}","payload":{}{}}}"#,
        f.agent,
        r#"{"a":"#.repeat(5000),
        "}".repeat(5000)
    );
    let long_name =
        json!({ "name": "x".repeat(100_000), "runtime_id": f.rt, "definition": {} }).to_string();
    // serde_json stops at depth 128 (axum calls that a data error, 422, at the top level and a syntax
    // error, 400, inside an object).
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        (
            "/api/v1/tasks",
            m,
            deep.clone().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/tasks",
            m,
            deep_obj.into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/tasks",
            m,
            format!(
                r#"{{"agent_id":"{}","payload":{{"nul":"a\u0000b"}}}}"#,
                f.agent
            )
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/agents",
            m,
            json!({ "name": "nul\u{0}name", "runtime_id": f.rt, "definition": { "k": "v\u{0}" } })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/agents",
            m,
            long_name.into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/tasks",
            m,
            vec![b'{', 0xff, 0xfe, b'}'],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/tasks",
            m,
            format!(r#"{{"agent_id":"{}","payload":{{"s":"\udc00"}}}}"#, f.agent).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/daemon/claim",
            d,
            format!(r#"{{"runtime_id":"{}","max_tasks":1e30}}"#, f.rt).into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/daemon/claim",
            d,
            format!(
                r#"{{"runtime_id":"{}","max_tasks":18446744073709551616}}"#,
                f.rt
            )
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/daemon/claim",
            d,
            format!(r#"{{"runtime_id":"{}","wait_ms":99999999999}}"#, f.rt).into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/tasks",
            m,
            format!(
                r#"{{"agent_id":"{}","payload":{{}},"priority":-2147483649}}"#,
                f.agent
            )
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/tasks",
            m,
            format!(
                r#"{{"agent_id":"{}","payload":{{}},"priority":NaN}}"#,
                f.agent
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/tasks",
            m,
            format!(r#"{{"agent_id":"{}","payload":{{}}}} trailing"#, f.agent).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/tasks", m, b"".to_vec(), StatusCode::BAD_REQUEST),
        (
            "/api/v1/daemon/heartbeat",
            d,
            json!({ "runtime_ids": vec![f.rt.clone(); 1001] })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/tasks",
            m,
            vec![b' '; 2 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            &messages,
            d,
            json!({ "attempt_id": f.attempt, "messages": [
                { "seq": 0, "kind": "text", "content": "nul\u{0}here" }
            ] })
            .to_string()
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &messages,
            d,
            json!({ "attempt_id": f.attempt, "messages": [
                { "seq": 0, "kind": "text", "content": "x", "data": { "k": "v\u{0}" } }
            ] })
            .to_string()
            .into_bytes(),
            // `data` is stored as `json`, which keeps the `\u0000` escape as written (unlike jsonb).
            StatusCode::OK,
        ),
        (
            &messages,
            d,
            format!(
                r#"{{"attempt_id":"{}","messages":[{{"seq":9223372036854775808,"kind":"text","content":"x"}}]}}"#,
                f.attempt
            )
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &messages,
            d,
            json!({ "attempt_id": f.attempt, "messages": [
                { "seq": 0, "kind": "text", "content": "x", "data": [1, 2] }
            ] })
            .to_string()
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &messages,
            d,
            json!({ "attempt_id": f.attempt, "messages": { "seq": 0 } })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &progress,
            d,
            json!({ "attempt_id": f.attempt, "usage": { "input_tokens": -1 } })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &progress,
            d,
            json!({ "attempt_id": f.attempt, "session": { "id": "s".repeat(100_000) } })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/daemon/heartbeat",
            d,
            json!({ "runtime_ids": [f.rt], "attempts": vec![f.attempt.clone(); 20_000] })
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (path, token, body, want) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        let got = send(app, post.clone(), path, token, body).await;
        assert_eq!(got, want, "{path} {shown}");
    }
}
