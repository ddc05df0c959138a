//! DESIGN §2 (errors) and §4 (ops): every error is RFC 9457 problem+json with a stable code; bad
//! input is refused with the right status and changes nothing; unknown routes are problems too;
//! `/healthz` and `/readyz` answer.

mod common;

use common::api::{deregister, readyz};
use common::db::{TABLES, counts};
use common::problem::{assert_problem, assert_problem_shape};
use common::settings::quiet;
use common::{Resp, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A request with full control of the body bytes and the Content-Type header.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<String>,
) -> Resp {
    let mut req = app.http.request(method, format!("{}{}", app.base, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    Resp::read(req.send().await.expect("request")).await
}

/// Every row of every table, so that an update (not only an insert) would show.
async fn dump(app: &TestApp) -> Value {
    let mut out = serde_json::Map::new();
    for t in TABLES {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x::text), '[]') FROM {t} x"
        ))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        out.insert(t.to_owned(), rows);
    }
    Value::Object(out)
}

/// A workspace with a runtime, an agent, a queued task and a dispatched one (with its attempt).
struct World {
    ws: common::Ws,
    rt: String,
    agent: String,
    queued: String,
    dispatched: String,
    attempt: String,
}

async fn world(app: &TestApp) -> World {
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let dispatched = app.enqueue(&ws, &agent, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claim = app.claim(&ws, &rt, 1, 0).await;
    let attempt = claim["tasks"][0]["attempt_id"].as_str().unwrap().to_owned();
    let queued = app.enqueue(&ws, &agent, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    World {
        ws,
        rt,
        agent,
        queued,
        dispatched,
        attempt,
    }
}

/// One refused request: what to send and what must come back.
struct Case {
    what: String,
    method: Method,
    path: String,
    token: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: StatusCode,
    code: &'static str,
}

fn json_case(
    what: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
    status: StatusCode,
) -> Case {
    Case {
        what: what.to_owned(),
        method,
        path: path.to_owned(),
        token: token.to_owned(),
        content_type: Some("application/json"),
        body: Some(body.to_string()),
        status,
        code: "validation_failed",
    }
}

/// Sends each case and checks its problem, and that neither the row counts nor any row changed.
async fn run_cases(app: &TestApp, cases: Vec<Case>) {
    let before_counts = counts(app).await;
    let before = dump(app).await;
    for c in cases {
        let what = format!("{} ({} {})", c.what, c.method, c.path);
        let r = raw(
            app,
            c.method,
            &c.path,
            Some(&c.token),
            c.content_type,
            c.body,
        )
        .await;
        assert_problem(&r, c.status, c.code, &what);
        assert_eq!(
            counts(app).await,
            before_counts,
            "{what}: row counts changed"
        );
        assert_eq!(dump(app).await, before, "{what}: stored rows changed");
    }
}

#[tokio::test]
async fn every_error_body_is_problem_json_with_type_title_status_detail_code() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let other = app.workspace().await;
    // One of each kind the API produces.
    let samples: Vec<(Resp, StatusCode, &str)> = vec![
        (
            app.request(Method::GET, "/api/v1/tasks", None, None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            app.get("/api/v1/tasks", &w.ws.daemon).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            app.get(&format!("/api/v1/tasks/{}", Uuid::new_v4()), &w.ws.member)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            app.get(&format!("/api/v1/tasks/{}", w.queued), &other.member)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            app.get("/api/v1/tasks/not-a-uuid", &w.ws.member).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            app.post(
                "/api/v1/tasks",
                &w.ws.member,
                json!({ "agent_id": w.agent, "payload": {}, "priority": 5000 }),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            app.report(
                &w.ws,
                &w.dispatched,
                "start",
                json!({ "attempt_id": Uuid::new_v4() }),
            )
            .await,
            StatusCode::CONFLICT,
            "attempt_superseded",
        ),
        (
            app.report(
                &w.ws,
                &w.dispatched,
                "complete",
                json!({ "attempt_id": w.attempt, "result": {} }),
            )
            .await,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
    ];
    for (i, (r, status, code)) in samples.iter().enumerate() {
        assert_problem(r, *status, code, &format!("sample {i}"));
    }
    // A conflict, and runtime_offline.
    let body = json!({ "name": "dup", "slug": "taken" });
    let r = app
        .post("/api/v1/workspaces", &app.admin_token, body.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app.post("/api/v1/workspaces", &app.admin_token, body).await;
    assert_problem(&r, StatusCode::CONFLICT, "conflict", "duplicate slug");
    deregister(&app, &w.ws, &w.rt).await;
    let r = app
        .post(
            "/api/v1/tasks",
            &w.ws.member,
            json!({ "agent_id": w.agent, "payload": {} }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "runtime_offline",
        "enqueue to offline runtime",
    );
    let r = app
        .post(
            "/api/v1/daemon/claim",
            &w.ws.daemon,
            json!({ "runtime_id": w.rt }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "runtime_offline",
        "claim for offline runtime",
    );
}

#[tokio::test]
async fn malformed_json_is_400_validation_failed_and_writes_nothing() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let m = w.ws.member.as_str();
    let d = w.ws.daemon.as_str();
    let admin = app.admin_token.clone();
    let agent_path = format!("/api/v1/agents/{}", w.agent);
    let tokens_path = format!("/api/v1/workspaces/{}/tokens", w.ws.id);
    let start_path = format!("/api/v1/tasks/{}/start", w.dispatched);
    let mut cases = Vec::new();
    for (body, label) in [
        ("{not json", "garbage"),
        ("{\"na", "truncated"),
        ("\"unterminated", "unterminated string"),
        ("{,}", "stray comma"),
        ("nul", "bad literal"),
        ("", "empty body"),
    ] {
        for (method, path, token) in [
            (Method::POST, "/api/v1/tasks", m),
            (Method::POST, "/api/v1/agents", m),
            (Method::PATCH, agent_path.as_str(), m),
            (Method::POST, "/api/v1/workspaces", admin.as_str()),
            (Method::POST, tokens_path.as_str(), admin.as_str()),
            (Method::POST, "/api/v1/daemon/register", d),
            (Method::POST, "/api/v1/daemon/heartbeat", d),
            (Method::POST, "/api/v1/daemon/claim", d),
            (Method::POST, "/api/v1/daemon/report", d),
            (Method::POST, "/api/v1/daemon/deregister", d),
            (Method::POST, start_path.as_str(), d),
        ] {
            cases.push(Case {
                what: format!("malformed JSON: {label}"),
                method,
                path: path.to_owned(),
                token: token.to_owned(),
                content_type: Some("application/json"),
                body: Some(body.to_owned()),
                status: StatusCode::BAD_REQUEST,
                code: "validation_failed",
            });
        }
    }
    run_cases(&app, cases).await;
}

#[tokio::test]
async fn wrong_types_unknown_fields_and_out_of_range_values_are_422_and_write_nothing() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let (m, d) = (w.ws.member.as_str(), w.ws.daemon.as_str());
    let admin = app.admin_token.clone();
    let u = StatusCode::UNPROCESSABLE_ENTITY;
    let task = |extra: Value| {
        let mut b = json!({ "agent_id": w.agent, "payload": { "n": 1 } });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let agent = |extra: Value| {
        let mut b = json!({ "name": "a", "runtime_id": w.rt, "definition": {} });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let claim = |extra: Value| {
        let mut b = json!({ "runtime_id": w.rt });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let post = Method::POST;
    let agent_path = format!("/api/v1/agents/{}", w.agent);
    let tokens_path = format!("/api/v1/workspaces/{}/tokens", w.ws.id);
    let t = |action: &str| format!("/api/v1/tasks/{}/{action}", w.dispatched);
    let long = "x".repeat(201);
    let cases = vec![
        // POST /tasks
        json_case(
            "priority 5000",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "priority": 5000 })),
            u,
        ),
        json_case(
            "priority -1001",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "priority": -1001 })),
            u,
        ),
        json_case(
            "priority a string",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "priority": "high" })),
            u,
        ),
        json_case(
            "priority a float",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "priority": 1.5 })),
            u,
        ),
        json_case(
            "max_attempts 0",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "max_attempts": 0 })),
            u,
        ),
        json_case(
            "max_attempts 101",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "max_attempts": 101 })),
            u,
        ),
        json_case(
            "payload an array",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "payload": [1, 2] })),
            u,
        ),
        json_case(
            "payload a string",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "payload": "hi" })),
            u,
        ),
        json_case(
            "payload null",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "payload": null })),
            u,
        ),
        json_case(
            "payload missing",
            post.clone(),
            "/api/v1/tasks",
            m,
            json!({ "agent_id": w.agent }),
            u,
        ),
        json_case(
            "agent_id not a uuid",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "agent_id": "agent-1" })),
            u,
        ),
        json_case(
            "agent_id a number",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "agent_id": 7 })),
            u,
        ),
        json_case(
            "unknown field",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "colour": "red" })),
            u,
        ),
        json_case(
            "idempotency_key empty",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "idempotency_key": "" })),
            u,
        ),
        json_case(
            "idempotency_key 201 chars",
            post.clone(),
            "/api/v1/tasks",
            m,
            task(json!({ "idempotency_key": long })),
            u,
        ),
        json_case(
            "body an array",
            post.clone(),
            "/api/v1/tasks",
            m,
            json!([task(json!({}))]),
            u,
        ),
        // POST /agents
        json_case(
            "name empty",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "name": "" })),
            u,
        ),
        json_case(
            "name blank",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "name": "   " })),
            u,
        ),
        json_case(
            "name 201 chars",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "name": long })),
            u,
        ),
        json_case(
            "name a number",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "name": 5 })),
            u,
        ),
        json_case(
            "max_concurrent_tasks 0",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "max_concurrent_tasks": 0 })),
            u,
        ),
        json_case(
            "max_concurrent_tasks 1001",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "max_concurrent_tasks": 1001 })),
            u,
        ),
        json_case(
            "definition an array",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "definition": [] })),
            u,
        ),
        json_case(
            "definition missing",
            post.clone(),
            "/api/v1/agents",
            m,
            json!({ "name": "a", "runtime_id": w.rt }),
            u,
        ),
        json_case(
            "runtime_id not a uuid",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "runtime_id": "rt" })),
            u,
        ),
        json_case(
            "unknown field",
            post.clone(),
            "/api/v1/agents",
            m,
            agent(json!({ "owner": "me" })),
            u,
        ),
        // PATCH /agents/{id}
        json_case(
            "patch name empty",
            Method::PATCH,
            &agent_path,
            m,
            json!({ "name": "" }),
            u,
        ),
        json_case(
            "patch name 201 chars",
            Method::PATCH,
            &agent_path,
            m,
            json!({ "name": long }),
            u,
        ),
        json_case(
            "patch definition a string",
            Method::PATCH,
            &agent_path,
            m,
            json!({ "definition": "v2" }),
            u,
        ),
        json_case(
            "patch max_concurrent_tasks 0",
            Method::PATCH,
            &agent_path,
            m,
            json!({ "max_concurrent_tasks": 0 }),
            u,
        ),
        json_case(
            "patch unknown field",
            Method::PATCH,
            &agent_path,
            m,
            json!({ "runtime_id": w.rt }),
            u,
        ),
        // POST /daemon/claim
        json_case(
            "max_tasks 0",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "max_tasks": 0 })),
            u,
        ),
        json_case(
            "max_tasks 101",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "max_tasks": 101 })),
            u,
        ),
        json_case(
            "wait_ms 30001",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "wait_ms": 30001 })),
            u,
        ),
        json_case(
            "wait_ms -1",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "wait_ms": -1 })),
            u,
        ),
        json_case(
            "wait_ms a string",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "wait_ms": "10" })),
            u,
        ),
        json_case(
            "runtime_id missing",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            json!({ "max_tasks": 1 }),
            u,
        ),
        json_case(
            "unknown field",
            post.clone(),
            "/api/v1/daemon/claim",
            d,
            claim(json!({ "lease": 5 })),
            u,
        ),
        // POST /daemon/register, heartbeat, deregister
        json_case(
            "daemon_id empty",
            post.clone(),
            "/api/v1/daemon/register",
            d,
            json!({ "daemon_id": "", "provider": "p" }),
            u,
        ),
        json_case(
            "provider 201 chars",
            post.clone(),
            "/api/v1/daemon/register",
            d,
            json!({ "daemon_id": "x", "provider": long }),
            u,
        ),
        json_case(
            "max_concurrency 0",
            post.clone(),
            "/api/v1/daemon/register",
            d,
            json!({ "daemon_id": "x", "provider": "p", "max_concurrency": 0 }),
            u,
        ),
        json_case(
            "register unknown field",
            post.clone(),
            "/api/v1/daemon/register",
            d,
            json!({ "daemon_id": "x", "provider": "p", "os": "linux" }),
            u,
        ),
        json_case(
            "heartbeat without ids",
            post.clone(),
            "/api/v1/daemon/heartbeat",
            d,
            json!({ "runtime_ids": [] }),
            u,
        ),
        json_case(
            "heartbeat ids a string",
            post.clone(),
            "/api/v1/daemon/heartbeat",
            d,
            json!({ "runtime_ids": w.rt }),
            u,
        ),
        json_case(
            "deregister without ids",
            post.clone(),
            "/api/v1/daemon/deregister",
            d,
            json!({ "runtime_ids": [] }),
            u,
        ),
        json_case(
            "deregister bad id",
            post.clone(),
            "/api/v1/daemon/deregister",
            d,
            json!({ "runtime_ids": ["nope"] }),
            u,
        ),
        // Reports
        json_case(
            "start without attempt_id",
            post.clone(),
            &t("start"),
            d,
            json!({}),
            u,
        ),
        json_case(
            "start attempt_id not a uuid",
            post.clone(),
            &t("start"),
            d,
            json!({ "attempt_id": "1" }),
            u,
        ),
        json_case(
            "progress not an object",
            post.clone(),
            &t("progress"),
            d,
            json!({ "attempt_id": w.attempt, "progress": 50 }),
            u,
        ),
        json_case(
            "complete result a string",
            post.clone(),
            &t("complete"),
            d,
            json!({ "attempt_id": w.attempt, "result": "ok" }),
            u,
        ),
        json_case(
            "fail error too long",
            post.clone(),
            &t("fail"),
            d,
            json!({ "attempt_id": w.attempt, "error": "e".repeat(16 * 1024 + 1) }),
            u,
        ),
        json_case(
            "fail retryable a string",
            post.clone(),
            &t("fail"),
            d,
            json!({ "attempt_id": w.attempt, "error": "e", "retryable": "no" }),
            u,
        ),
        json_case(
            "report without updates",
            post.clone(),
            "/api/v1/daemon/report",
            d,
            json!({ "updates": [] }),
            u,
        ),
        // A valid first update must not be applied when a later one is malformed.
        json_case(
            "report with one malformed update",
            post.clone(),
            "/api/v1/daemon/report",
            d,
            json!({ "updates": [
                { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "start" },
                { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "complete" },
            ] }),
            u,
        ),
        json_case(
            "report with unknown action",
            post.clone(),
            "/api/v1/daemon/report",
            d,
            json!({ "updates": [
                { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "start" },
                { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "explode" },
            ] }),
            u,
        ),
        // Workspaces and tokens
        json_case(
            "workspace name empty",
            post.clone(),
            "/api/v1/workspaces",
            &admin,
            json!({ "name": "" }),
            u,
        ),
        json_case(
            "workspace slug invalid",
            post.clone(),
            "/api/v1/workspaces",
            &admin,
            json!({ "name": "n", "slug": "Bad Slug" }),
            u,
        ),
        json_case(
            "workspace slug leading dash",
            post.clone(),
            "/api/v1/workspaces",
            &admin,
            json!({ "name": "n", "slug": "-x" }),
            u,
        ),
        json_case(
            "workspace name without a slug in it",
            post.clone(),
            "/api/v1/workspaces",
            &admin,
            json!({ "name": "!!!" }),
            u,
        ),
        json_case(
            "workspace unknown field",
            post.clone(),
            "/api/v1/workspaces",
            &admin,
            json!({ "name": "n", "plan": "pro" }),
            u,
        ),
        json_case(
            "token kind unknown",
            post.clone(),
            &tokens_path,
            &admin,
            json!({ "kind": "root", "name": "x" }),
            u,
        ),
        json_case(
            "token name empty",
            post.clone(),
            &tokens_path,
            m,
            json!({ "kind": "member", "name": "" }),
            u,
        ),
        json_case(
            "token kind missing",
            post.clone(),
            &tokens_path,
            m,
            json!({ "name": "x" }),
            u,
        ),
    ];
    run_cases(&app, cases).await;
    // Still as the world left it: the malformed report did not start the task.
    let r = app
        .get(&format!("/api/v1/tasks/{}", w.dispatched), &w.ws.member)
        .await;
    assert_eq!(r.body["status"], "dispatched");
    let r = app
        .get(&format!("/api/v1/tasks/{}", w.queued), &w.ws.member)
        .await;
    assert_eq!(r.body["status"], "queued");
}

#[tokio::test]
async fn bad_uuid_in_path_is_400_validation_failed() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let (m, d) = (w.ws.member.as_str(), w.ws.daemon.as_str());
    let admin = app.admin_token.clone();
    let mut cases = Vec::new();
    for bad in ["not-a-uuid", "123", "0000000-0000-0000-0000-000000000000"] {
        for (method, path, token, body) in [
            (Method::GET, format!("/api/v1/runtimes/{bad}"), m, None),
            (Method::GET, format!("/api/v1/agents/{bad}"), m, None),
            (
                Method::PATCH,
                format!("/api/v1/agents/{bad}"),
                m,
                Some(json!({ "name": "x" })),
            ),
            (Method::DELETE, format!("/api/v1/agents/{bad}"), m, None),
            (Method::GET, format!("/api/v1/tasks/{bad}"), m, None),
            (Method::POST, format!("/api/v1/tasks/{bad}/cancel"), m, None),
            (
                Method::POST,
                format!("/api/v1/tasks/{bad}/start"),
                d,
                Some(json!({ "attempt_id": w.attempt })),
            ),
            (
                Method::POST,
                format!("/api/v1/tasks/{bad}/complete"),
                d,
                Some(json!({ "attempt_id": w.attempt, "result": {} })),
            ),
            (
                Method::GET,
                format!("/api/v1/daemon/agents/{bad}/definition"),
                d,
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/workspaces/{bad}/tokens"),
                admin.as_str(),
                Some(json!({ "kind": "member", "name": "x" })),
            ),
            (
                Method::DELETE,
                format!("/api/v1/tokens/{bad}"),
                admin.as_str(),
                None,
            ),
        ] {
            cases.push(Case {
                what: format!("bad id `{bad}`"),
                method,
                path,
                token: token.to_owned(),
                content_type: body.as_ref().map(|_| "application/json"),
                body: body.map(|b| b.to_string()),
                status: StatusCode::BAD_REQUEST,
                code: "validation_failed",
            });
        }
    }
    run_cases(&app, cases).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400_validation_failed() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let m = w.ws.member.as_str();
    let mut cases = Vec::new();
    for path in [
        "/api/v1/tasks?limit=0",
        "/api/v1/tasks?limit=501",
        "/api/v1/tasks?limit=ten",
        "/api/v1/tasks?status=exploded",
        "/api/v1/tasks?cursor=abc",
        "/api/v1/tasks?agent_id=not-a-uuid",
        "/api/v1/tasks?runtime_id=42",
        "/api/v1/agents?include_archived=maybe",
        "/api/v1/agents?limit=-1",
        "/api/v1/runtimes?cursor=nope",
        "/api/v1/events?after=abc",
        "/api/v1/events?limit=0",
    ] {
        cases.push(Case {
            what: "bad query".into(),
            method: Method::GET,
            path: path.to_owned(),
            token: m.to_owned(),
            content_type: None,
            body: None,
            status: StatusCode::BAD_REQUEST,
            code: "validation_failed",
        });
    }
    run_cases(&app, cases).await;
}

#[tokio::test]
async fn missing_content_type_is_400_validation_failed_and_writes_nothing() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let (m, d) = (w.ws.member.as_str(), w.ws.daemon.as_str());
    let admin = app.admin_token.clone();
    let good_task = json!({ "agent_id": w.agent, "payload": {} }).to_string();
    let good_agent = json!({ "name": "a", "runtime_id": w.rt, "definition": {} }).to_string();
    let good_ws = json!({ "name": "New one" }).to_string();
    let good_reg = json!({ "daemon_id": "d2", "provider": "p" }).to_string();
    let good_start = json!({ "attempt_id": w.attempt }).to_string();
    let start_path = format!("/api/v1/tasks/{}/start", w.dispatched);
    let mut cases = Vec::new();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for (path, token, body) in [
            ("/api/v1/tasks", m, &good_task),
            ("/api/v1/agents", m, &good_agent),
            ("/api/v1/workspaces", admin.as_str(), &good_ws),
            ("/api/v1/daemon/register", d, &good_reg),
            (start_path.as_str(), d, &good_start),
        ] {
            cases.push(Case {
                what: format!("Content-Type {ct:?}"),
                method: Method::POST,
                path: path.to_owned(),
                token: token.to_owned(),
                content_type: ct,
                body: Some(body.clone()),
                status: StatusCode::BAD_REQUEST,
                code: "validation_failed",
            });
        }
    }
    run_cases(&app, cases).await;
    // The same bodies with the header are accepted: the 400s were about the header.
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/tasks",
        Some(m),
        Some("application/json"),
        Some(good_task),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn body_over_the_limit_is_413_payload_too_large_and_writes_nothing() {
    let app = TestApp::spawn_with(|s| {
        quiet(s);
        s.max_request_body = 4096;
    })
    .await;
    let w = world(&app).await;
    let (m, d) = (w.ws.member.as_str(), w.ws.daemon.as_str());
    let pad = "x".repeat(8 * 1024);
    let big_task = json!({ "agent_id": w.agent, "payload": { "pad": pad } });
    let big_agent = json!({ "name": "a", "runtime_id": w.rt, "definition": { "pad": pad } });
    let big_report = json!({ "updates": [
        { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "start" },
        { "task_id": w.dispatched, "attempt_id": w.attempt, "action": "progress", "progress": { "pad": pad } },
    ] });
    let big_complete = json!({ "attempt_id": w.attempt, "result": { "pad": pad } });
    let mut cases = Vec::new();
    for (method, path, token, body) in [
        (Method::POST, "/api/v1/tasks".to_owned(), m, big_task),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            m,
            big_agent.clone(),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{}", w.agent),
            m,
            json!({ "definition": { "pad": pad } }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/report".to_owned(),
            d,
            big_report,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/complete", w.dispatched),
            d,
            big_complete,
        ),
        (
            Method::POST,
            "/api/v1/workspaces".to_owned(),
            app.admin_token.as_str(),
            json!({ "name": "n", "pad": pad }),
        ),
    ] {
        cases.push(Case {
            what: "body over 4096 bytes".into(),
            method,
            path,
            token: token.to_owned(),
            content_type: Some("application/json"),
            body: Some(body.to_string()),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        });
    }
    run_cases(&app, cases).await;
    // A body under the limit goes through: the 413s were about size.
    let small = json!({ "agent_id": w.agent, "payload": { "pad": "x".repeat(3000) } });
    let r = app.post("/api/v1/tasks", m, small).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn unknown_route_is_404_problem_json() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    let before = counts(&app).await;
    for (method, path, token) in [
        (Method::GET, "/nope", None),
        (Method::GET, "/api/v1/nope", Some(w.ws.member.as_str())),
        (Method::GET, "/api/v2/tasks", Some(w.ws.member.as_str())),
        (
            Method::POST,
            "/api/v1/tasks/x/y/z",
            Some(w.ws.member.as_str()),
        ),
        (
            Method::POST,
            &format!("/api/v1/tasks/{}/explode", w.dispatched),
            Some(w.ws.daemon.as_str()),
        ),
        (Method::GET, "/api/v1/workspaces/list", None),
    ] {
        let r = app.request(method, path, token, None).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "not_found", path);
    }
    assert_eq!(counts(&app).await, before);
}

/// A known route with a method it does not take is an error too, and every error is problem+json.
#[tokio::test]
async fn wrong_method_is_405_problem_json() {
    let app = TestApp::spawn_with(quiet).await;
    let w = world(&app).await;
    for (method, path) in [
        (Method::PUT, "/api/v1/tasks".to_owned()),
        (Method::DELETE, format!("/api/v1/tasks/{}", w.queued)),
        (Method::GET, "/api/v1/daemon/claim".to_owned()),
        (Method::POST, "/healthz".to_owned()),
    ] {
        let r = app
            .request(method.clone(), &path, Some(&w.ws.member), None)
            .await;
        assert_problem_shape(
            &r,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} {path}"),
        );
    }
}

#[tokio::test]
async fn healthz_is_200_without_a_token() {
    let app = TestApp::spawn_with(quiet).await;
    let r = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn readyz_is_200_with_postgres_and_redis_up() {
    let app = TestApp::spawn_with(quiet).await;
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["checks"]["postgres"], "up", "{:?}", r.body);
    assert_eq!(r.body["checks"]["redis"], "up", "{:?}", r.body);
}
