//! DESIGN §4 (agents, definitions, the admission gate, idempotency, task listing) and §6 (the event
//! log: `GET /events?after=`, and its commit horizon under concurrent writers).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::api::deregister;
use common::problem::assert_problem;
use common::{Resp, TestApp, Ws, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v:?}"))
        .to_owned()
}

fn ids(r: &Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {:?}", r.body))
        .iter()
        .map(id)
        .collect()
}

async fn ws_count(app: &TestApp, table: &str, ws: &Ws) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE workspace_id = $1"
    ))
    .bind(Uuid::parse_str(&ws.id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Waits until every event of the workspace stored so far is listed by `GET /events` (events are
/// served only once below the commit horizon), then returns them all. (`sweepers` has its own,
/// which pages through what is listed now without waiting.)
async fn all_events(app: &TestApp, ws: &Ws) -> Vec<Value> {
    let want = ws_count(app, "events", ws).await;
    eventually(
        Duration::from_secs(20),
        "every stored event to be listed",
        || async {
            let r = app.get("/api/v1/events?limit=500", &ws.member).await;
            r.body["items"].as_array().map(|i| i.len() as i64) == Some(want)
        },
    )
    .await;
    let r = app.get("/api/v1/events?limit=500", &ws.member).await;
    r.body["items"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// Agents

#[tokio::test]
async fn agent_create_list_get_and_patch() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let r = app
        .post(
            "/api/v1/agents",
            &ws.member,
            json!({ "name": "reviewer", "runtime_id": rt, "definition": { "model": "m1", "tools": ["git"] } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = id(&r.body);
    assert_eq!(r.body["name"], "reviewer");
    assert_eq!(r.body["runtime_id"], rt.as_str());
    assert_eq!(
        r.body["max_concurrent_tasks"], 1,
        "default max_concurrent_tasks"
    );
    assert_eq!(
        r.body["definition"],
        json!({ "model": "m1", "tools": ["git"] })
    );
    assert_eq!(r.body["definition_version"], 1);
    assert_eq!(r.body["status"], "idle");
    assert!(r.body["archived_at"].is_null());
    let created = r.body.clone();

    let second = app.agent(&ws, &rt, 3).await;
    let r = app.get("/api/v1/agents", &ws.member).await;
    assert_eq!(r.status, StatusCode::OK);
    let listed: HashSet<String> = ids(&r).into_iter().collect();
    assert_eq!(listed, HashSet::from([agent.clone(), second.clone()]));
    assert!(r.body["next_cursor"].is_null());
    let r = app.get("/api/v1/agents?limit=1", &ws.member).await;
    assert_eq!(ids(&r).len(), 1);
    let cursor = r.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let r2 = app
        .get(
            &format!("/api/v1/agents?limit=1&cursor={cursor}"),
            &ws.member,
        )
        .await;
    let mut both = ids(&r);
    both.extend(ids(&r2));
    assert_eq!(both.into_iter().collect::<HashSet<_>>(), listed);

    let r = app
        .get(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, created);

    // PATCH of `max_concurrent_tasks` alone: applied, version unchanged.
    let r = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &ws.member,
            json!({ "max_concurrent_tasks": 4 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["max_concurrent_tasks"], 4);
    assert_eq!(r.body["definition_version"], 1);
    assert_eq!(r.body["name"], "reviewer");
    let r = app
        .get(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.body["max_concurrent_tasks"], 4, "PATCH was not stored");
}

#[tokio::test]
async fn patching_definition_bumps_definition_version_and_name_only_does_not() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let path = format!("/api/v1/agents/{agent}");

    let r = app
        .patch(
            &path,
            &ws.member,
            json!({ "definition": { "model": "m2" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["definition_version"], 2);
    assert_eq!(r.body["definition"], json!({ "model": "m2" }));

    let r = app
        .patch(&path, &ws.member, json!({ "name": "renamed" }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "renamed");
    assert_eq!(
        r.body["definition_version"], 2,
        "a name-only PATCH bumped the version"
    );
    assert_eq!(r.body["definition"], json!({ "model": "m2" }));

    let r = app
        .patch(
            &path,
            &ws.member,
            json!({ "name": "again", "definition": { "model": "m3" } }),
        )
        .await;
    assert_eq!(r.body["definition_version"], 3);

    let r = app.get(&path, &ws.member).await;
    assert_eq!(r.body["name"], "again");
    assert_eq!(r.body["definition_version"], 3);
    assert_eq!(r.body["definition"], json!({ "model": "m3" }));
    // A claim carries the agent's current definition version.
    app.enqueue(&ws, &agent, json!({})).await;
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(c["tasks"][0]["definition_version"], 3);
}

#[tokio::test]
async fn delete_archives_the_agent_and_cancels_its_queued_tasks() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let keep = app.agent(&ws, &rt, 1).await;
    // One task of the agent in flight, two waiting; one task of another agent waiting.
    let active = id(&app.enqueue(&ws, &agent, json!({})).await);
    let c = app.claim(&ws, &rt, 1, 0).await;
    assert_eq!(c["tasks"][0]["task_id"], active.as_str());
    let attempt = c["tasks"][0]["attempt_id"].as_str().unwrap().to_owned();
    let q1 = id(&app.enqueue(&ws, &agent, json!({})).await);
    let q2 = id(&app.enqueue(&ws, &agent, json!({})).await);
    let other = id(&app.enqueue(&ws, &keep, json!({})).await);

    let r = app
        .delete(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["id"], agent.as_str());
    assert!(
        r.body["archived_at"].is_string(),
        "archived_at not set: {:?}",
        r.body
    );
    let archived_at = r.body["archived_at"].clone();

    // Kept, and still readable by id.
    let r = app
        .get(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["archived_at"], archived_at);
    // Not listed by default; listed with include_archived=true.
    let r = app.get("/api/v1/agents", &ws.member).await;
    assert_eq!(ids(&r), vec![keep.clone()]);
    let r = app
        .get("/api/v1/agents?include_archived=true", &ws.member)
        .await;
    let all: HashSet<String> = ids(&r).into_iter().collect();
    assert_eq!(all, HashSet::from([agent.clone(), keep.clone()]));

    // Its queued tasks are cancelled; the active one may finish; other agents' tasks are untouched.
    for t in [&q1, &q2] {
        let r = app.get(&format!("/api/v1/tasks/{t}"), &ws.member).await;
        assert_eq!(r.body["status"], "cancelled", "{:?}", r.body);
        assert_eq!(r.body["failure_reason"], "cancelled");
    }
    let r = app.get(&format!("/api/v1/tasks/{other}"), &ws.member).await;
    assert_eq!(r.body["status"], "queued");
    let r = app
        .report(&ws, &active, "start", json!({ "attempt_id": attempt }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .report(
            &ws,
            &active,
            "complete",
            json!({ "attempt_id": attempt, "result": {} }),
        )
        .await;
    assert_eq!(r.body["status"], "completed", "{:?}", r.body);

    // No new tasks: 409 conflict, and no row.
    let before = app.count("tasks").await;
    for body in [
        json!({ "agent_id": agent, "payload": {} }),
        json!({ "agent_id": agent, "payload": {}, "idempotency_key": "after-archive" }),
    ] {
        let r = app.post("/api/v1/tasks", &ws.member, body).await;
        assert_problem(
            &r,
            StatusCode::CONFLICT,
            "conflict",
            "enqueue to archived agent",
        );
    }
    assert_eq!(app.count("tasks").await, before);
    // Archiving twice answers the archived agent, unchanged.
    let r = app
        .delete(&format!("/api/v1/agents/{agent}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["archived_at"], archived_at);
    // An archived agent is not edited any more, but its definition stays readable for the daemon
    // finishing its last tasks.
    let r = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &ws.member,
            json!({ "definition": { "model": "late" } }),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        "PATCH of an archived agent",
    );
    let r = app
        .get(
            &format!("/api/v1/daemon/agents/{agent}/definition"),
            &ws.daemon,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 1);

    let events = all_events(&app, &ws).await;
    let archived = events
        .iter()
        .filter(|e| e["type"] == "agent.archived" && e["subject_id"] == agent.as_str())
        .count();
    assert_eq!(archived, 1);
    let cancelled: HashSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "task.cancelled")
        .map(|e| e["subject_id"].as_str().unwrap())
        .collect();
    assert_eq!(cancelled, HashSet::from([q1.as_str(), q2.as_str()]));
}

#[tokio::test]
async fn definition_endpoint_has_etag_and_if_none_match_answers_304() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let url = format!("{}/api/v1/daemon/agents/{agent}/definition", app.base);
    let fetch = |etag: Option<&'static str>| {
        let mut req = app.http.get(&url).bearer_auth(&ws.daemon);
        if let Some(e) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let etag = res
                .headers()
                .get(reqwest::header::ETAG)
                .map(|v| v.to_str().unwrap().to_owned());
            let text = res.text().await.unwrap();
            (status, etag, text)
        }
    };

    let (status, etag, text) = fetch(None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(etag.as_deref(), Some("\"v1\""));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({ "agent_id": agent, "version": 1, "definition": { "model": "test" } })
    );

    let (status, etag, text) = fetch(Some("\"v1\"")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(etag.as_deref(), Some("\"v1\""));
    assert!(text.is_empty(), "a 304 carries no body: {text}");
    // A list of tags that includes the current one matches too; another tag does not.
    let (status, _, _) = fetch(Some("\"v7\", \"v1\"")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = fetch(Some("\"v2\"")).await;
    assert_eq!(status, StatusCode::OK);

    // After a definition change the old tag no longer matches.
    let r = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &ws.member,
            json!({ "definition": { "model": "new" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (status, etag, text) = fetch(Some("\"v1\"")).await;
    assert_eq!(status, StatusCode::OK, "stale ETag answered {status}");
    assert_eq!(etag.as_deref(), Some("\"v2\""));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["definition"], json!({ "model": "new" }));
    let (status, _, _) = fetch(Some("\"v2\"")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A name-only change keeps the tag valid.
    app.patch(
        &format!("/api/v1/agents/{agent}"),
        &ws.member,
        json!({ "name": "renamed" }),
    )
    .await;
    let (status, _, _) = fetch(Some("\"v2\"")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // Members do not use this daemon route; unknown agents are 404.
    let r = app
        .get(
            &format!("/api/v1/daemon/agents/{}/definition", Uuid::new_v4()),
            &ws.daemon,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "not_found", "unknown agent");
}

// ---------------------------------------------------------------------------------------------
// Enqueue: admission gate and idempotency

#[tokio::test]
async fn enqueue_for_an_offline_runtime_is_409_runtime_offline_and_writes_no_task() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    deregister(&app, &ws, &rt).await;
    let r = app.get(&format!("/api/v1/runtimes/{rt}"), &ws.member).await;
    assert_eq!(r.body["status"], "offline");

    let tasks = app.count("tasks").await;
    let queued_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task.queued'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    for body in [
        json!({ "agent_id": agent, "payload": {} }),
        json!({ "agent_id": agent, "payload": {}, "idempotency_key": "k1", "priority": 5 }),
    ] {
        let r = app.post("/api/v1/tasks", &ws.member, body).await;
        assert_problem(
            &r,
            StatusCode::CONFLICT,
            "runtime_offline",
            "enqueue while offline",
        );
    }
    assert_eq!(app.count("tasks").await, tasks, "a task row was written");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task.queued'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(after, queued_events, "a task.queued event was written");

    // Back online (re-registration), the gate opens; the refused key was not consumed.
    let again = app.runtime(&ws, "laptop").await;
    assert_eq!(again, rt);
    let r = app
        .post(
            "/api/v1/tasks",
            &ws.member,
            json!({ "agent_id": agent, "payload": {}, "idempotency_key": "k1" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn idempotency_key_returns_the_existing_task_with_200_within_a_workspace_only() {
    let app = TestApp::spawn().await;
    let a = app.workspace().await;
    let b = app.workspace().await;
    let a_rt = app.runtime(&a, "laptop").await;
    let a_agent = app.agent(&a, &a_rt, 1).await;
    let b_rt = app.runtime(&b, "laptop").await;
    let b_agent = app.agent(&b, &b_rt, 1).await;
    let body = |agent: &str, n: i64| json!({ "agent_id": agent, "payload": { "n": n }, "idempotency_key": "deploy-42" });

    let r1 = app
        .post("/api/v1/tasks", &a.member, body(&a_agent, 1))
        .await;
    assert_eq!(r1.status, StatusCode::CREATED, "{:?}", r1.body);
    assert_eq!(r1.body["idempotency_key"], "deploy-42");
    let r2 = app
        .post("/api/v1/tasks", &a.member, body(&a_agent, 1))
        .await;
    assert_eq!(r2.status, StatusCode::OK, "{:?}", r2.body);
    assert_eq!(r2.body["id"], r1.body["id"]);
    // Whatever the rest of the body says, the existing task is answered.
    let r3 = app
        .post("/api/v1/tasks", &a.member, body(&a_agent, 2))
        .await;
    assert_eq!(r3.status, StatusCode::OK, "{:?}", r3.body);
    assert_eq!(r3.body["id"], r1.body["id"]);
    assert_eq!(r3.body["payload"], json!({ "n": 1 }));
    assert_eq!(ws_count(&app, "tasks", &a).await, 1);
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'task.queued' AND workspace_id = $1",
    )
    .bind(Uuid::parse_str(&a.id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1, "a replayed key wrote another task.queued");

    // The same key in another workspace is another task.
    let rb = app
        .post("/api/v1/tasks", &b.member, body(&b_agent, 1))
        .await;
    assert_eq!(rb.status, StatusCode::CREATED, "{:?}", rb.body);
    assert_ne!(rb.body["id"], r1.body["id"]);
    assert_eq!(ws_count(&app, "tasks", &b).await, 1);
    assert_eq!(app.count("tasks").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_with_one_idempotency_key_create_one_task() {
    let app = Arc::new(TestApp::spawn().await);
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let mut handles = Vec::new();
    for _ in 0..12 {
        let (app, ws, agent) = (app.clone(), ws.clone(), agent.clone());
        handles.push(tokio::spawn(async move {
            let r = app
                .post(
                    "/api/v1/tasks",
                    &ws.member,
                    json!({ "agent_id": agent, "payload": {}, "idempotency_key": "once" }),
                )
                .await;
            (r.status, r.body["id"].as_str().map(str::to_owned))
        }));
    }
    let mut created = 0;
    let mut seen = HashSet::new();
    for h in handles {
        let (status, id) = h.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        seen.insert(id.expect("a task id"));
    }
    assert_eq!(created, 1, "exactly one call creates the task");
    assert_eq!(seen.len(), 1, "every call answers the same task: {seen:?}");
    assert_eq!(app.count("tasks").await, 1);
}

// ---------------------------------------------------------------------------------------------
// Task listing

#[tokio::test]
async fn tasks_list_is_keyset_paginated_newest_first() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let mut enqueued = Vec::new();
    for n in 0..7 {
        enqueued.push(id(&app
            .enqueue(&ws, &agent, json!({ "payload": { "n": n } }))
            .await));
    }
    let newest_first: Vec<String> = enqueued.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/api/v1/tasks?limit=2".to_owned();
    loop {
        let r = app.get(&path, &ws.member).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let page = ids(&r);
        assert!(page.len() <= 2, "page over the limit: {page:?}");
        seen.extend(page);
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tasks?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 4, "7 tasks in pages of 2");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    assert_eq!(seen, newest_first, "not every task, or not newest first");

    // Tasks enqueued while paging do not disturb the pages still to come.
    let r = app.get("/api/v1/tasks?limit=3", &ws.member).await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    app.enqueue(&ws, &agent, json!({})).await;
    let r = app
        .get(
            &format!("/api/v1/tasks?limit=3&cursor={cursor}"),
            &ws.member,
        )
        .await;
    assert_eq!(ids(&r), newest_first[3..6].to_vec());
}

#[tokio::test]
async fn tasks_list_filters_by_status_agent_id_and_runtime_id() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt1 = app.runtime(&ws, "one").await;
    let rt2 = app.runtime(&ws, "two").await;
    let a1 = app.agent(&ws, &rt1, 1).await;
    let a2 = app.agent(&ws, &rt1, 1).await;
    let a3 = app.agent(&ws, &rt2, 1).await;
    let t1 = id(&app.enqueue(&ws, &a1, json!({})).await);
    let t2 = id(&app.enqueue(&ws, &a1, json!({})).await);
    let t3 = id(&app.enqueue(&ws, &a2, json!({})).await);
    let t4 = id(&app.enqueue(&ws, &a3, json!({})).await);
    let t5 = id(&app.enqueue(&ws, &a3, json!({})).await);
    // t1 dispatched (a1 holds one at most), t4 dispatched on rt2, t5 cancelled.
    let c = app.claim(&ws, &rt1, 1, 0).await;
    assert_eq!(c["tasks"][0]["task_id"], t1.as_str());
    let c = app.claim(&ws, &rt2, 1, 0).await;
    assert_eq!(c["tasks"][0]["task_id"], t4.as_str());
    let r = app
        .post(&format!("/api/v1/tasks/{t5}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let list = |q: String| {
        let app = &app;
        let token = ws.member.clone();
        async move {
            let r = app.get(&format!("/api/v1/tasks?{q}"), &token).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.body);
            ids(&r)
        }
    };
    let v = |xs: &[&String]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(list("status=queued".into()).await, v(&[&t3, &t2]));
    assert_eq!(list("status=dispatched".into()).await, v(&[&t4, &t1]));
    assert_eq!(list("status=cancelled".into()).await, v(&[&t5]));
    assert_eq!(list("status=completed".into()).await, Vec::<String>::new());
    assert_eq!(list(format!("agent_id={a1}")).await, v(&[&t2, &t1]));
    assert_eq!(list(format!("agent_id={a3}")).await, v(&[&t5, &t4]));
    assert_eq!(list(format!("runtime_id={rt1}")).await, v(&[&t3, &t2, &t1]));
    assert_eq!(list(format!("runtime_id={rt2}")).await, v(&[&t5, &t4]));
    assert_eq!(
        list(format!("agent_id={a1}&status=queued")).await,
        v(&[&t2])
    );
    assert_eq!(
        list(format!("runtime_id={rt1}&status=dispatched")).await,
        v(&[&t1])
    );
    assert_eq!(
        list(format!("runtime_id={rt2}&agent_id={a1}")).await,
        Vec::<String>::new()
    );
    // Filters and pagination together.
    let first = app
        .get(
            &format!("/api/v1/tasks?runtime_id={rt1}&limit=2"),
            &ws.member,
        )
        .await;
    assert_eq!(ids(&first), v(&[&t3, &t2]));
    let c = first.body["next_cursor"].as_str().unwrap();
    assert_eq!(
        list(format!("runtime_id={rt1}&limit=2&cursor={c}")).await,
        v(&[&t1])
    );
    // Every item honours the filter it was asked for.
    let r = app.get("/api/v1/tasks?status=queued", &ws.member).await;
    for t in r.body["items"].as_array().unwrap() {
        assert_eq!(t["status"], "queued");
    }
}

// ---------------------------------------------------------------------------------------------
// Events

#[tokio::test]
async fn events_after_an_id_returns_only_later_events_in_order_and_limit_works() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    for n in 0..5 {
        app.enqueue(&ws, &agent, json!({ "payload": { "n": n } }))
            .await;
    }
    let all = all_events(&app, &ws).await;
    assert!(all.len() >= 7, "{all:?}");
    let all_ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    // One writer at a time: log order is id order.
    assert!(all_ids.windows(2).all(|w| w[0] < w[1]), "{all_ids:?}");
    for e in &all {
        for field in ["id", "type", "subject_id", "occurred_at", "payload"] {
            assert!(!e[field].is_null(), "event without `{field}`: {e:?}");
        }
    }
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "runtime.registered");
    assert_eq!(types[1], "agent.created");
    assert_eq!(types.iter().filter(|t| **t == "task.queued").count(), 5);

    // after=<id>: exactly the later ones, in order.
    for k in [0, 2, all.len() - 2] {
        let r = app
            .get(
                &format!("/api/v1/events?after={}&limit=500", all_ids[k]),
                &ws.member,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let got: Vec<i64> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, all_ids[k + 1..].to_vec(), "after={}", all_ids[k]);
    }
    // After the last: nothing, and no cursor.
    let r = app
        .get(
            &format!("/api/v1/events?after={}", all_ids.last().unwrap()),
            &ws.member,
        )
        .await;
    assert_eq!(r.body["items"], json!([]));
    assert!(r.body["next_cursor"].is_null());

    // limit: pages of 2 that, followed by next_cursor, give back the whole log once.
    let r = app.get("/api/v1/events?limit=2", &ws.member).await;
    let first: Vec<i64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(first, all_ids[..2].to_vec());
    assert_eq!(r.body["next_cursor"], all_ids[1].to_string());
    let mut collected = first;
    let mut cursor = r.body["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let r = app
            .get(&format!("/api/v1/events?after={c}&limit=2"), &ws.member)
            .await;
        let page = r.body["items"].as_array().unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        collected.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
        assert!(collected.len() <= all_ids.len(), "paging repeats events");
    }
    assert_eq!(collected, all_ids);

    // Resuming after an id whose row is gone (retention) gives exactly the events after it.
    sqlx::query("DELETE FROM events WHERE id <= $1")
        .bind(all_ids[2])
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .get(
            &format!("/api/v1/events?after={}&limit=500", all_ids[2]),
            &ws.member,
        )
        .await;
    let got: Vec<i64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, all_ids[3..].to_vec(), "resuming after a deleted event");
}

/// One page of the log after `after` (from the start when None): its items and `next_cursor`.
async fn events_page(
    app: &TestApp,
    token: &str,
    after: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let path = match after {
        Some(a) => format!("/api/v1/events?after={a}&limit=500"),
        None => "/api/v1/events?limit=500".to_owned(),
    };
    let r = app.get(&path, token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let items = r.body["items"].as_array().unwrap().clone();
    (items, r.body["next_cursor"].as_str().map(str::to_owned))
}

/// A client following the log with `after=<last id>` until `done`, then until it holds `want`
/// `task.queued` events. A row is withheld only while a transaction that could sort before it is
/// still open, so once the writers are done the rest arrives; a skipped row never would.
async fn follow(
    app: Arc<TestApp>,
    token: String,
    done: Arc<AtomicBool>,
    want: usize,
) -> (Vec<Value>, usize) {
    let mut collected = Vec::new();
    let mut after: Option<String> = None;
    let mut polls_while_writing = 0;
    while !done.load(Ordering::SeqCst) {
        let (items, next) = events_page(&app, &token, after.as_deref()).await;
        collected.extend(items);
        after = next.or(after);
        polls_while_writing += 1;
    }
    let state = std::sync::Mutex::new((collected, after));
    eventually(
        Duration::from_secs(20),
        "every task.queued to reach the reader (a skipped one never would)",
        || async {
            let after = state.lock().unwrap().1.clone();
            let (items, next) = events_page(&app, &token, after.as_deref()).await;
            let mut s = state.lock().unwrap();
            let empty = items.is_empty();
            s.0.extend(items);
            s.1 = next.or(s.1.take());
            empty && s.0.iter().filter(|e| e["type"] == "task.queued").count() >= want
        },
    )
    .await;
    (state.into_inner().unwrap().0, polls_while_writing)
}

/// DESIGN §6: a reader taking `id > last` may pass a row whose transaction commits a moment later.
/// Eight writers enqueue 25 tasks each, concurrently, while two readers follow the log with
/// `after=<last id>`; every `task.queued` must reach each reader exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_log_skips_no_late_committing_event_under_concurrent_writers() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let app = Arc::new(TestApp::spawn().await);
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let mut agents = Vec::new();
    for _ in 0..WRITERS {
        agents.push(app.agent(&ws, &rt, 1).await);
    }

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let token = ws.member.clone();
            tokio::spawn(follow(
                app.clone(),
                token,
                done.clone(),
                WRITERS * PER_WRITER,
            ))
        })
        .collect();
    let mut writers = Vec::new();
    for agent in agents {
        let (app, ws) = (app.clone(), ws.clone());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_WRITER {
                let t = app
                    .enqueue(&ws, &agent, json!({ "payload": { "n": n } }))
                    .await;
                ids.push(id(&t));
            }
            ids
        }));
    }
    let mut task_ids = HashSet::new();
    for w in writers {
        task_ids.extend(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(task_ids.len(), WRITERS * PER_WRITER);

    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM events WHERE workspace_id = $1 ORDER BY id")
            .bind(Uuid::parse_str(&ws.id).unwrap())
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for (reader, r) in readers.into_iter().enumerate() {
        let (collected, polls_while_writing) = r.await.unwrap();
        assert!(
            polls_while_writing > 0,
            "reader {reader} never overlapped the writers"
        );
        // No duplicates at all.
        let mut by_id: HashMap<i64, usize> = HashMap::new();
        for e in &collected {
            *by_id.entry(e["id"].as_i64().unwrap()).or_default() += 1;
        }
        let dups: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "reader {reader}: events delivered twice: {dups:?}"
        );
        // Every task.queued exactly once, for exactly the tasks created.
        let mut queued: HashMap<String, usize> = HashMap::new();
        for e in collected.iter().filter(|e| e["type"] == "task.queued") {
            *queued
                .entry(e["subject_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let missing: Vec<_> = task_ids
            .iter()
            .filter(|t| !queued.contains_key(*t))
            .collect();
        assert!(
            missing.is_empty(),
            "reader {reader}: task.queued never delivered for {missing:?}"
        );
        assert!(queued.values().all(|n| *n == 1));
        assert_eq!(queued.len(), WRITERS * PER_WRITER);
        // And no gap of any kind: the reader has exactly the stored log of the workspace.
        let mut got: Vec<i64> = by_id.keys().copied().collect();
        got.sort_unstable();
        assert_eq!(
            got, stored,
            "reader {reader}: its log differs from the stored one"
        );
    }
}
