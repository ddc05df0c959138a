//! The OpenAPI document: served, complete, self-consistent, and snapshotted in docs/openapi.json so
//! that an API change shows in review (regenerate with `UPDATE_OPENAPI=1 cargo test --test openapi`).

mod common;

use std::collections::BTreeSet;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.insert(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The served document, parsed.
async fn served_document(app: &TestApp) -> (String, Value) {
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let doc = serde_json::from_str(&text).unwrap();
    (text, doc)
}

/// What validators and client generators read: the document validates against the OpenAPI 3.1
/// schema (vendored from the OpenAPI Initiative, `tests/schemas/openapi-3.1.json`, id 2022-10-07),
/// every response has a description, and no two operations share an operationId.
#[tokio::test]
async fn openapi_document_is_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let (_, doc) = served_document(&app).await;
    let schema: Value = serde_json::from_str(include_str!("schemas/openapi-3.1.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the OpenAPI 3.1 schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid OpenAPI 3.1: {errors:#?}");
    // The check bites: a response without its description is refused.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    assert!(!validator.is_valid(&broken));

    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                ids.insert(id.to_owned()),
                "operationId {id} repeats ({method} {path})"
            );
            for (code, res) in op["responses"].as_object().unwrap() {
                assert!(
                    res["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {code} has no description"
                );
            }
        }
    }
    // Every enum of the API lists its values.
    let schemas = &doc["components"]["schemas"];
    for (name, values) in [
        (
            "TaskStatus",
            vec![
                "queued",
                "dispatched",
                "running",
                "completed",
                "failed",
                "cancelled",
            ],
        ),
        (
            "FailureReason",
            vec![
                "agent_error",
                "runtime_offline",
                "dispatch_timeout",
                "running_timeout",
                "queued_expired",
                "cancelled",
            ],
        ),
        (
            "ReportAction",
            vec!["start", "progress", "complete", "fail"],
        ),
        ("RuntimeStatus", vec!["online", "offline"]),
        ("AgentStatus", vec!["idle", "working", "offline"]),
        (
            "BlockedReason",
            vec![
                "run_after",
                "agent_paused",
                "runtime_offline",
                "runtime_draining",
                "agent_at_capacity",
                "key_at_capacity",
                "runtime_at_capacity",
                "behind",
            ],
        ),
        (
            "ErrorCode",
            vec!["unauthorized", "not_found", "attempt_superseded"],
        ),
    ] {
        let listed: Vec<&str> = schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} lists no values"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for v in values {
            assert!(listed.contains(&v), "{name} lacks {v}");
        }
    }
    assert_eq!(schemas["EventType"]["enum"].as_array().unwrap().len(), 18);
}

#[tokio::test]
async fn openapi_document_covers_every_route_and_matches_the_snapshot() {
    let app = TestApp::spawn().await;
    let (_, doc) = served_document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/workspaces", "post"),
        ("/api/v1/workspaces/{id}/tokens", "post"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/runtimes", "get"),
        ("/api/v1/runtimes/{id}", "get"),
        ("/api/v1/agents", "post"),
        ("/api/v1/agents", "get"),
        ("/api/v1/agents/{id}", "get"),
        ("/api/v1/agents/{id}", "patch"),
        ("/api/v1/agents/{id}", "delete"),
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/tasks/{id}", "get"),
        ("/api/v1/tasks/{id}/cancel", "post"),
        ("/api/v1/tasks/{id}/start", "post"),
        ("/api/v1/tasks/{id}/progress", "post"),
        ("/api/v1/tasks/{id}/complete", "post"),
        ("/api/v1/tasks/{id}/fail", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/ws", "get"),
        ("/api/v1/daemon/register", "post"),
        ("/api/v1/daemon/heartbeat", "post"),
        ("/api/v1/daemon/claim", "post"),
        ("/api/v1/daemon/report", "post"),
        ("/api/v1/daemon/deregister", "post"),
        ("/api/v1/daemon/agents/{id}/definition", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(op.is_object(), "{method} {path} missing");
        if path.starts_with("/api/") {
            let responses = op["responses"].as_object().unwrap();
            for code in ["401", "404", "422"] {
                let problem = &responses[code]["content"]["application/problem+json"];
                assert!(
                    problem.is_object(),
                    "{method} {path}: {code} not documented as problem+json"
                );
            }
        }
    }

    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    assert_eq!(schemas["MaxTasks"]["maximum"], 100);

    let snapshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        committed == pretty,
        "the API changed: review it and run `UPDATE_OPENAPI=1 cargo test --test openapi` to update docs/openapi.json"
    );
}
