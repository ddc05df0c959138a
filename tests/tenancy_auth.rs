//! DESIGN §2 (tenancy and auth): tokens and their kinds, workspace creation, minting and revoking
//! tokens, and the tenant wall — another workspace's resource is a 404 on every route that takes an
//! id, lists never show it, and nothing of it changes.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::api::{deregister, heartbeat};
use common::db::counts;
use common::problem::assert_problem;
use common::settings::quiet;
use common::{Resp, TestApp, Ws, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A server whose heartbeat flusher does not run during the test (only at shutdown), so that
/// "B's rows are unchanged" can include `last_seen_at`.
async fn spawn() -> TestApp {
    TestApp::spawn_with(quiet).await
}

/// Mints a token with the admin token; returns (token id, secret).
async fn mint(app: &TestApp, ws: &str, kind: &str) -> (String, String) {
    let r = app
        .post(
            &format!("/api/v1/workspaces/{ws}/tokens"),
            &app.admin_token,
            json!({ "kind": kind, "name": "extra" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["token"].as_str().unwrap().to_owned(),
    )
}

/// Every stored row of one workspace, as JSON, for "nothing of it changed" assertions.
async fn rows_of(app: &TestApp, ws: &str) -> Value {
    let ws = Uuid::parse_str(ws).unwrap();
    sqlx::query_scalar::<_, Value>(
        "SELECT jsonb_build_object(
           'workspace', (SELECT to_jsonb(w) FROM workspaces w WHERE w.id = $1),
           'tokens',   (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM tokens t WHERE t.workspace_id = $1),
           'runtimes', (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.id), '[]') FROM runtimes r WHERE r.workspace_id = $1),
           'agents',   (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.id), '[]') FROM agents a WHERE a.workspace_id = $1),
           'tasks',    (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM tasks t WHERE t.workspace_id = $1),
           'attempts', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.attempt_id), '[]') FROM ops.attempts x WHERE x.workspace_id = $1),
           'events',   (SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.id), '[]') FROM events e WHERE e.workspace_id = $1))",
    )
    .bind(ws)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn ids_of(r: &Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {:?}", r.body))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn missing_or_garbage_token_is_401_unauthorized() {
    let app = spawn().await;
    let ws = app.workspace().await;
    let base = format!("{}/api/v1/runtimes", app.base);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("garbage bearer", Some("Bearer not-a-token".into())),
        (
            "well-formed but unknown",
            Some(format!("Bearer pdk_{}", "0".repeat(64))),
        ),
        ("empty bearer", Some("Bearer ".into())),
        (
            "basic scheme with a valid secret",
            Some(format!("Basic {}", ws.member)),
        ),
        ("secret without scheme", Some(ws.member.clone())),
    ];
    for (what, header) in cases {
        let mut req = app.http.get(&base);
        if let Some(h) = header {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null);
        assert_problem(
            &Resp {
                status,
                headers,
                body,
            },
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            what,
        );
    }
    // Member, daemon and admin routes alike.
    for (method, path) in [
        (Method::POST, "/api/v1/workspaces"),
        (Method::POST, "/api/v1/daemon/heartbeat"),
        (Method::POST, "/api/v1/tasks"),
        (Method::GET, "/api/v1/events"),
    ] {
        let r = app
            .request(method.clone(), path, None, Some(json!({})))
            .await;
        assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized", path);
        let r = app
            .request(method, path, Some("pdk_garbage"), Some(json!({})))
            .await;
        assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthorized", path);
    }
    // And the real token still works, so the 401s are about the token.
    assert_eq!(
        app.get("/api/v1/runtimes", &ws.member).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn member_token_on_daemon_routes_is_403_forbidden() {
    let app = spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({})).await;
    let task = task["id"].as_str().unwrap();
    let attempt = Uuid::new_v4();
    let before = counts(&app).await;
    let cases = [
        (
            Method::POST,
            "/api/v1/daemon/register".to_owned(),
            json!({ "daemon_id": "d2", "provider": "p" }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/heartbeat".to_owned(),
            json!({ "runtime_ids": [rt] }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/claim".to_owned(),
            json!({ "runtime_id": rt }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/report".to_owned(),
            json!({ "updates": [{ "task_id": task, "attempt_id": attempt, "action": "start" }] }),
        ),
        (
            Method::POST,
            "/api/v1/daemon/deregister".to_owned(),
            json!({ "runtime_ids": [rt] }),
        ),
        (
            Method::GET,
            format!("/api/v1/daemon/agents/{agent}/definition"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{task}/start"),
            json!({ "attempt_id": attempt }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{task}/progress"),
            json!({ "attempt_id": attempt, "progress": {} }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{task}/complete"),
            json!({ "attempt_id": attempt, "result": {} }),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{task}/fail"),
            json!({ "attempt_id": attempt, "error": "x" }),
        ),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then_some(body);
        let r = app
            .request(method.clone(), &path, Some(&ws.member), body.clone())
            .await;
        assert_problem(&r, StatusCode::FORBIDDEN, "forbidden", &path);
        // The admin token is not a daemon token either.
        let r = app
            .request(method, &path, Some(&app.admin_token), body)
            .await;
        assert_problem(&r, StatusCode::FORBIDDEN, "forbidden", &path);
    }
    assert_eq!(counts(&app).await, before, "a refused call wrote something");
    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(
        r.body["status"], "online",
        "member token deregistered the runtime"
    );
}

#[tokio::test]
async fn daemon_token_on_member_routes_is_403_forbidden() {
    let app = spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({})).await;
    let task = task["id"].as_str().unwrap();
    let (token_id, _) = mint(&app, &ws.id, "member").await;
    let before = counts(&app).await;
    let cases = [
        (Method::GET, "/api/v1/runtimes".to_owned(), None),
        (Method::GET, format!("/api/v1/runtimes/{rt}"), None),
        (Method::GET, "/api/v1/agents".to_owned(), None),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            Some(json!({ "name": "a", "runtime_id": rt, "definition": {} })),
        ),
        (Method::GET, format!("/api/v1/agents/{agent}"), None),
        (
            Method::PATCH,
            format!("/api/v1/agents/{agent}"),
            Some(json!({ "name": "renamed" })),
        ),
        (Method::DELETE, format!("/api/v1/agents/{agent}"), None),
        (Method::GET, "/api/v1/tasks".to_owned(), None),
        (
            Method::POST,
            "/api/v1/tasks".to_owned(),
            Some(json!({ "agent_id": agent, "payload": {} })),
        ),
        (Method::GET, format!("/api/v1/tasks/{task}"), None),
        (Method::POST, format!("/api/v1/tasks/{task}/cancel"), None),
        (Method::GET, "/api/v1/events".to_owned(), None),
        (
            Method::POST,
            "/api/v1/workspaces".to_owned(),
            Some(json!({ "name": "evil" })),
        ),
        (
            Method::POST,
            format!("/api/v1/workspaces/{}/tokens", ws.id),
            Some(json!({ "kind": "member", "name": "x" })),
        ),
        (Method::DELETE, format!("/api/v1/tokens/{token_id}"), None),
    ];
    for (method, path, body) in cases {
        let r = app.request(method, &path, Some(&ws.daemon), body).await;
        assert_problem(&r, StatusCode::FORBIDDEN, "forbidden", &path);
    }
    assert_eq!(counts(&app).await, before, "a refused call wrote something");
    let r = app.get(&format!("/api/v1/tasks/{task}"), &ws.member).await;
    assert_eq!(r.body["status"], "queued");
    let r = app
        .get(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.body["name"], "agent");
    assert!(r.body["archived_at"].is_null());
}

#[tokio::test]
async fn non_admin_on_post_workspaces_is_403_forbidden() {
    let app = spawn().await;
    let ws = app.workspace().await;
    let before = app.count("workspaces").await;
    for token in [&ws.member, &ws.daemon] {
        let r = app
            .post(
                "/api/v1/workspaces",
                token,
                json!({ "name": "Sneaky", "slug": "sneaky" }),
            )
            .await;
        assert_problem(&r, StatusCode::FORBIDDEN, "forbidden", "POST /workspaces");
    }
    assert_eq!(app.count("workspaces").await, before);
}

// ---------------------------------------------------------------------------------------------
// Workspaces and tokens

#[tokio::test]
async fn admin_creates_workspace_with_slug_derived_when_absent() {
    let app = spawn().await;
    let r = app
        .post(
            "/api/v1/workspaces",
            &app.admin_token,
            json!({ "name": "Acme Corp!" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "Acme Corp!");
    assert_eq!(r.body["slug"], "acme-corp");
    let id = r.body["id"].as_str().unwrap();
    Uuid::parse_str(id).unwrap();

    let r = app
        .post(
            "/api/v1/workspaces",
            &app.admin_token,
            json!({ "name": "Other", "slug": "my-team-2" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["slug"], "my-team-2");
    assert_eq!(app.count("workspaces").await, 2);

    // The new workspace is usable: the admin mints its first tokens.
    let member = app.token(id, "member").await;
    let r = app.get("/api/v1/runtimes", &member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn duplicate_slug_is_409_conflict() {
    let app = spawn().await;
    let r = app
        .post(
            "/api/v1/workspaces",
            &app.admin_token,
            json!({ "name": "Acme", "slug": "acme" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Explicit, and derived from a name, both collide.
    for body in [
        json!({ "name": "Another", "slug": "acme" }),
        json!({ "name": "ACME" }),
    ] {
        let r = app.post("/api/v1/workspaces", &app.admin_token, body).await;
        assert_problem(&r, StatusCode::CONFLICT, "conflict", "duplicate slug");
    }
    assert_eq!(app.count("workspaces").await, 1);
}

#[tokio::test]
async fn member_may_mint_tokens_for_its_workspace_but_gets_404_for_another() {
    let app = spawn().await;
    let a = app.workspace().await;
    let b = app.workspace().await;
    for kind in ["member", "daemon"] {
        let r = app
            .post(
                &format!("/api/v1/workspaces/{}/tokens", a.id),
                &a.member,
                json!({ "kind": kind, "name": "ci" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.body["kind"], kind);
        assert_eq!(r.body["name"], "ci");
        Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap();
        let secret = r.body["token"].as_str().unwrap().to_owned();
        // The secret is not stored, only its digest.
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tokens WHERE position(convert_to($1, 'UTF8') in digest) > 0",
        )
        .bind(&secret)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(stored, 0);
        // The minted token works, as its kind, in workspace A.
        if kind == "member" {
            assert_eq!(
                app.get("/api/v1/runtimes", &secret).await.status,
                StatusCode::OK
            );
        } else {
            let r = app
                .post(
                    "/api/v1/daemon/register",
                    &secret,
                    json!({ "daemon_id": "minted", "provider": "p" }),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            let rt = r.body["runtime_id"].as_str().unwrap();
            let r = app.get(&format!("/api/v1/runtimes/{rt}"), &a.member).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "the daemon token minted for A registered outside A"
            );
        }
    }
    let b_rows = rows_of(&app, &b.id).await;
    let before = app.count("tokens").await;
    let r = app
        .post(
            &format!("/api/v1/workspaces/{}/tokens", b.id),
            &a.member,
            json!({ "kind": "member", "name": "x" }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "member of A minting for B",
    );
    // A workspace that does not exist at all looks the same.
    let r = app
        .post(
            &format!("/api/v1/workspaces/{}/tokens", Uuid::new_v4()),
            &a.member,
            json!({ "kind": "member", "name": "x" }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "member of A minting for a missing workspace",
    );
    assert_eq!(app.count("tokens").await, before);
    assert_eq!(rows_of(&app, &b.id).await, b_rows);
}

#[tokio::test]
async fn revoked_token_fails_at_once() {
    let app = spawn().await;
    let ws = app.workspace().await;

    // Revoked by the admin.
    let (id, secret) = mint(&app, &ws.id, "member").await;
    assert_eq!(
        app.get("/api/v1/runtimes", &secret).await.status,
        StatusCode::OK
    );
    let r = app
        .delete(&format!("/api/v1/tokens/{id}"), &app.admin_token)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = app.get("/api/v1/runtimes", &secret).await;
    assert_problem(
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token revoked by the admin",
    );

    // Revoked by a member of its workspace, a daemon token this time.
    let (id, secret) = mint(&app, &ws.id, "daemon").await;
    let r = app
        .post(
            "/api/v1/daemon/register",
            &secret,
            json!({ "daemon_id": "d", "provider": "p" }),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let r = app
        .delete(&format!("/api/v1/tokens/{id}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = app
        .post(
            "/api/v1/daemon/heartbeat",
            &secret,
            json!({ "runtime_ids": [Uuid::new_v4()] }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token revoked by a member",
    );

    // A member token revoking itself: its next request fails.
    let (id, secret) = mint(&app, &ws.id, "member").await;
    let r = app.delete(&format!("/api/v1/tokens/{id}"), &secret).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = app.get("/api/v1/agents", &secret).await;
    assert_problem(
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "self-revoked token",
    );

    // The stored row is kept with revoked_at; other tokens are untouched.
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tokens WHERE revoked_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(revoked, 3);
    assert_eq!(
        app.get("/api/v1/runtimes", &ws.member).await.status,
        StatusCode::OK
    );
    let r = app
        .delete(
            &format!("/api/v1/tokens/{}", Uuid::new_v4()),
            &app.admin_token,
        )
        .await;
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "revoking an unknown token",
    );
}

// ---------------------------------------------------------------------------------------------
// The tenant wall

/// Workspace B with a runtime, an agent, a dispatched task (with its attempt) and a queued task.
struct Tenant {
    ws: Ws,
    rt: String,
    agent: String,
    dispatched: String,
    attempt: String,
    queued: String,
}

async fn tenant(app: &TestApp, daemon_id: &str) -> Tenant {
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, daemon_id).await;
    let agent = app.agent(&ws, &rt, 1).await;
    let dispatched = app
        .enqueue(&ws, &agent, json!({ "payload": { "secret": daemon_id } }))
        .await;
    let dispatched = dispatched["id"].as_str().unwrap().to_owned();
    let claim = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(claim["tasks"][0]["task_id"], dispatched.as_str());
    let attempt = claim["tasks"][0]["attempt_id"].as_str().unwrap().to_owned();
    let queued = app.enqueue(&ws, &agent, json!({})).await;
    let queued = queued["id"].as_str().unwrap().to_owned();
    Tenant {
        ws,
        rt,
        agent,
        dispatched,
        attempt,
        queued,
    }
}

#[tokio::test]
async fn cross_tenant_ids_are_404_not_found_on_every_route_and_change_nothing() {
    let app = spawn().await;
    let a = tenant(&app, "a-laptop").await;
    let b = tenant(&app, "b-laptop").await;
    let (b_token_id, b_token) = mint(&app, &b.ws.id, "member").await;
    let b_before = rows_of(&app, &b.ws.id).await;
    let before = counts(&app).await;

    let (m, d) = (a.ws.member.as_str(), a.ws.daemon.as_str());
    let att = b.attempt.as_str();
    let cases: Vec<(Method, String, &str, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/runtimes/{}", b.rt), m, None),
        (Method::GET, format!("/api/v1/agents/{}", b.agent), m, None),
        (
            Method::PATCH,
            format!("/api/v1/agents/{}", b.agent),
            m,
            Some(json!({ "name": "pwned", "definition": { "evil": true } })),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{}", b.agent),
            m,
            Some(json!({ "max_concurrent_tasks": 50 })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/agents/{}", b.agent),
            m,
            None,
        ),
        (Method::GET, format!("/api/v1/tasks/{}", b.queued), m, None),
        (
            Method::GET,
            format!("/api/v1/tasks/{}", b.dispatched),
            m,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/cancel", b.queued),
            m,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/cancel", b.dispatched),
            m,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/start", b.dispatched),
            d,
            Some(json!({ "attempt_id": att })),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/progress", b.dispatched),
            d,
            Some(json!({ "attempt_id": att, "progress": { "p": 1 } })),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/complete", b.dispatched),
            d,
            Some(json!({ "attempt_id": att, "result": { "r": 1 } })),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/fail", b.dispatched),
            d,
            Some(json!({ "attempt_id": att, "error": "x", "retryable": false })),
        ),
        (
            Method::GET,
            format!("/api/v1/daemon/agents/{}/definition", b.agent),
            d,
            None,
        ),
        (
            Method::POST,
            "/api/v1/agents".into(),
            m,
            Some(json!({ "name": "x", "runtime_id": b.rt, "definition": {} })),
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            m,
            Some(json!({ "agent_id": b.agent, "payload": {} })),
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            m,
            Some(json!({ "agent_id": b.agent, "payload": {}, "idempotency_key": "k" })),
        ),
        (
            Method::POST,
            "/api/v1/daemon/claim".into(),
            d,
            Some(json!({ "runtime_id": b.rt, "max_tasks": 10 })),
        ),
        (
            Method::POST,
            "/api/v1/daemon/claim".into(),
            d,
            Some(json!({ "runtime_id": b.rt, "wait_ms": 200 })),
        ),
        (
            Method::POST,
            format!("/api/v1/workspaces/{}/tokens", b.ws.id),
            m,
            Some(json!({ "kind": "daemon", "name": "x" })),
        ),
        (
            Method::DELETE,
            format!("/api/v1/tokens/{b_token_id}"),
            m,
            None,
        ),
    ];
    for (method, path, token, body) in cases {
        let what = format!("{method} {path} {body:?}");
        let r = app.request(method, &path, Some(token), body).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "not_found", &what);
        assert!(
            !r.body.to_string().contains("b-laptop"),
            "{what} leaked B's data: {:?}",
            r.body
        );
    }

    // The batch report answers 404 for B's task inside its results.
    let r = app
        .post(
            "/api/v1/daemon/report",
            d,
            json!({ "updates": [
            { "task_id": b.dispatched, "attempt_id": att, "action": "start" },
            { "task_id": b.dispatched, "attempt_id": att, "action": "complete", "result": {} },
        ] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for res in r.body["results"].as_array().unwrap() {
        assert_eq!(res["status"], 404, "{res:?}");
        assert_eq!(res["error"]["code"], "not_found", "{res:?}");
    }
    // Deregistering B's runtime from A takes nothing offline.
    let r = app
        .post(
            "/api/v1/daemon/deregister",
            d,
            json!({ "runtime_ids": [b.rt] }),
        )
        .await;
    match r.status {
        StatusCode::OK => assert_eq!(r.body["offline"], json!([]), "{:?}", r.body),
        _ => assert_problem(
            &r,
            StatusCode::NOT_FOUND,
            "not_found",
            "deregister B's runtime",
        ),
    }

    // Nothing of B changed, nothing was written anywhere.
    assert_eq!(rows_of(&app, &b.ws.id).await, b_before, "B's rows changed");
    assert_eq!(counts(&app).await, before);
    // B's token, runtime, agent and tasks are all as B left them, seen through B's own eyes.
    let r = app
        .get(&format!("/api/v1/runtimes/{}", b.rt), &b_token)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "B's token no longer works: {:?}",
        r.body
    );
    assert_eq!(r.body["status"], "online");
    let r = app
        .get(&format!("/api/v1/tasks/{}", b.dispatched), &b.ws.member)
        .await;
    assert_eq!(r.body["status"], "dispatched");
    assert_eq!(r.body["attempt_id"], b.attempt.as_str());
    let r = app
        .get(&format!("/api/v1/tasks/{}", b.queued), &b.ws.member)
        .await;
    assert_eq!(r.body["status"], "queued");
    let r = app
        .get(&format!("/api/v1/agents/{}", b.agent), &b.ws.member)
        .await;
    assert_eq!(r.body["name"], "agent");
    assert_eq!(r.body["definition_version"], 1);
    assert!(r.body["archived_at"].is_null());
    // B's daemon carries on: the dispatched task can be started by its rightful owner.
    let r = app
        .report(
            &b.ws,
            &b.dispatched,
            "start",
            json!({ "attempt_id": b.attempt }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // And A's own ids still answer, so the 404s above were about ownership.
    assert_eq!(
        app.get(&format!("/api/v1/tasks/{}", a.queued), &a.ws.member)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/runtimes/{}", a.rt), &a.ws.member)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn lists_never_contain_another_workspaces_data() {
    let app = spawn().await;
    let a = tenant(&app, "a-laptop").await;
    let b = tenant(&app, "b-laptop").await;
    // B also has an archived agent, visible to B with include_archived.
    let b_archived = app.agent(&b.ws, &b.rt, 1).await;
    let r = app
        .delete(&format!("/api/v1/agents/{b_archived}"), &b.ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let b_ids: HashSet<String> = [
        &b.ws.id,
        &b.rt,
        &b.agent,
        &b_archived,
        &b.dispatched,
        &b.queued,
        &b.attempt,
    ]
    .into_iter()
    .cloned()
    .collect();
    let leaks = |r: &Resp| -> Vec<String> {
        let text = r.body.to_string();
        b_ids
            .iter()
            .filter(|id| text.contains(id.as_str()))
            .cloned()
            .collect()
    };

    let r = app.get("/api/v1/runtimes?limit=500", &a.ws.member).await;
    assert_eq!(ids_of(&r), vec![a.rt.clone()]);
    assert!(leaks(&r).is_empty(), "{r:?}", r = r.body);
    let r = app
        .get(
            "/api/v1/agents?limit=500&include_archived=true",
            &a.ws.member,
        )
        .await;
    assert_eq!(ids_of(&r), vec![a.agent.clone()]);
    let r = app.get("/api/v1/tasks?limit=500", &a.ws.member).await;
    let got: HashSet<String> = ids_of(&r).into_iter().collect();
    assert_eq!(got, HashSet::from([a.dispatched.clone(), a.queued.clone()]));
    // Filters naming B's ids give nothing, and cursors naming B's ids leak nothing.
    for path in [
        format!("/api/v1/tasks?agent_id={}", b.agent),
        format!("/api/v1/tasks?runtime_id={}", b.rt),
        format!("/api/v1/tasks?agent_id={}&status=queued", b.agent),
    ] {
        let r = app.get(&path, &a.ws.member).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        assert_eq!(r.body["items"], json!([]), "{path}");
    }
    for path in [
        format!("/api/v1/runtimes?cursor={}", Uuid::nil()),
        format!(
            "/api/v1/agents?cursor={}&include_archived=true",
            Uuid::nil()
        ),
    ] {
        let r = app.get(&path, &a.ws.member).await;
        assert!(leaks(&r).is_empty(), "{path} leaked {:?}", leaks(&r));
    }

    // Events: A sees its own (once they are below the horizon) and never B's.
    let a_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE workspace_id = $1")
        .bind(Uuid::parse_str(&a.ws.id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(a_events > 0);
    eventually(
        Duration::from_secs(20),
        "A's events to be listed",
        || async {
            let r = app.get("/api/v1/events?limit=500", &a.ws.member).await;
            r.body["items"].as_array().map(|i| i.len() as i64) == Some(a_events)
        },
    )
    .await;
    let r = app.get("/api/v1/events?limit=500", &a.ws.member).await;
    assert_eq!(r.body["items"].as_array().unwrap().len() as i64, a_events);
    assert!(leaks(&r).is_empty(), "events leaked {:?}", leaks(&r));
    // Resuming after one of B's event ids leaks nothing either.
    let b_event: i64 = sqlx::query_scalar("SELECT min(id) FROM events WHERE workspace_id = $1")
        .bind(Uuid::parse_str(&b.ws.id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let r = app
        .get(
            &format!("/api/v1/events?after={b_event}&limit=500"),
            &a.ws.member,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        leaks(&r).is_empty(),
        "events after B's id leaked {:?}",
        leaks(&r)
    );

    // B, for its part, sees its own data (the lists are scoped, not empty).
    let r = app
        .get("/api/v1/agents?include_archived=true", &b.ws.member)
        .await;
    let got: HashSet<String> = ids_of(&r).into_iter().collect();
    assert_eq!(got, HashSet::from([b.agent.clone(), b_archived.clone()]));
    let r = app.get("/api/v1/runtimes", &b.ws.member).await;
    assert_eq!(ids_of(&r), vec![b.rt.clone()]);
}

#[tokio::test]
async fn same_daemon_id_in_two_workspaces_is_two_runtimes() {
    let app = spawn().await;
    let a = app.workspace().await;
    let b = app.workspace().await;
    let body = json!({ "daemon_id": "shared-host", "provider": "claude-code" });
    let r = app
        .post("/api/v1/daemon/register", &a.daemon, body.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let a_rt = r.body["runtime_id"].as_str().unwrap().to_owned();
    let r = app
        .post("/api/v1/daemon/register", &b.daemon, body.clone())
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "B's registration reused A's runtime: {:?}",
        r.body
    );
    let b_rt = r.body["runtime_id"].as_str().unwrap().to_owned();
    assert_ne!(a_rt, b_rt);
    // Re-registering in A is idempotent and stays A's.
    let r = app.post("/api/v1/daemon/register", &a.daemon, body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["runtime_id"], a_rt.as_str());
    let r = app
        .get(&format!("/api/v1/runtimes/{b_rt}"), &a.member)
        .await;
    assert_problem(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "B's runtime seen by A",
    );
}

#[tokio::test]
async fn heartbeat_with_another_workspaces_runtime_answers_unknown_and_leaves_it_alone() {
    let app = spawn().await;
    let a = app.workspace().await;
    let b = app.workspace().await;
    let a_rt = app.runtime(&a, "a-laptop").await;
    let b_online = app.runtime(&b, "b-laptop").await;
    let b_offline = app.runtime(&b, "b-desktop").await;
    let b_agent = app.agent(&b, &b_offline, 1).await;
    deregister(&app, &b, &b_offline).await;
    let b_before = rows_of(&app, &b.id).await;

    // Twice: the second heartbeat must not find a liveness record left by the first.
    for _ in 0..2 {
        let r = heartbeat(&app, &a, &[&a_rt, &b_online, &b_offline]).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let states: Vec<(String, String)> = r.body["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["runtime_id"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (id, want) in [
            (&a_rt, "online"),
            (&b_online, "unknown"),
            (&b_offline, "unknown"),
        ] {
            let got = states
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s.as_str());
            assert_eq!(got, Some(want), "status of {id} in {states:?}");
        }
        assert_eq!(r.body["cancel"], json!([]));
    }
    // B's offline runtime was not revived, its agent not brought back, nothing of B written.
    assert_eq!(
        rows_of(&app, &b.id).await,
        b_before,
        "A's heartbeat changed B's rows"
    );
    let r = app
        .get(&format!("/api/v1/runtimes/{b_offline}"), &b.member)
        .await;
    assert_eq!(r.body["status"], "offline");
    let r = app
        .get(&format!("/api/v1/agents/{b_agent}"), &b.member)
        .await;
    assert_eq!(r.body["status"], "offline");
    // B's own heartbeat still sees its online runtime as online.
    let r = heartbeat(&app, &b, &[&b_online]).await;
    assert_eq!(r.body["runtimes"][0]["status"], "online", "{:?}", r.body);
}

/// The flusher writes `last_seen_at` of every runtime heard since the last flush (here: once, at
/// shutdown). A heartbeat naming B's runtime from A's token must not touch B's record: B's runtime,
/// heard by B's own daemon, must be flushed just like a runtime nobody else named.
#[tokio::test]
async fn heartbeat_with_another_workspaces_runtime_does_not_touch_its_liveness() {
    let app = spawn().await;
    let a = app.workspace().await;
    let b = app.workspace().await;
    let control = app.runtime(&b, "b-control").await;
    let victim = app.runtime(&b, "b-victim").await;
    let pool = app.pool.clone();
    let seen = |id: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT last_seen_at FROM runtimes WHERE id = $1",
            )
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (control0, victim0) = (seen(control.clone()).await, seen(victim.clone()).await);

    let r = heartbeat(&app, &b, &[&control, &victim]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = heartbeat(&app, &a, &[&victim]).await;
    assert_eq!(r.body["runtimes"][0]["status"], "unknown", "{:?}", r.body);

    app.stop().await.unwrap();
    let (control1, victim1) = (seen(control.clone()).await, seen(victim.clone()).await);
    assert!(
        control1 > control0,
        "the shutdown flush did not write the control runtime's last_seen_at"
    );
    assert!(
        victim1 > victim0,
        "A's heartbeat for B's runtime erased B's own heartbeat: last_seen_at stayed {victim0} (control moved to {control1})"
    );
}

/// Tokens are cached per replica for the hot paths; a revocation on one replica must still fail the
/// token on every other replica at once (the cache is evicted over LISTEN/NOTIFY).
#[tokio::test]
async fn revoked_token_fails_at_once_on_another_replica() {
    let a = spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (token_id, secret) = {
        let r = a
            .post(
                &format!("/api/v1/workspaces/{}/tokens", ws.id),
                &a.admin_token,
                json!({ "kind": "member", "name": "cached" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["token"].as_str().unwrap().to_owned(),
        )
    };
    // Warm B's cache.
    for _ in 0..3 {
        assert_eq!(
            b.get("/api/v1/runtimes", &secret).await.status,
            StatusCode::OK
        );
    }
    let r = a
        .delete(&format!("/api/v1/tokens/{token_id}"), &a.admin_token)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let revoked_at = std::time::Instant::now();
    common::eventually(
        Duration::from_secs(5),
        "revoked token refused on the other replica",
        || async { b.get("/api/v1/runtimes", &secret).await.status == StatusCode::UNAUTHORIZED },
    )
    .await;
    let took = revoked_at.elapsed();
    println!("revocation reached the other replica in {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "revocation took {took:?} to reach the other replica"
    );
}
