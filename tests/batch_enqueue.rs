//! `POST /tasks/batch` (DESIGN §13): per-item outcomes in request order under the rules of
//! `POST /tasks`, whole-batch refusal of invalid values before anything is written, set-wise
//! insertion in request order with one event per task, and long polls woken by a batch.

mod common;

use common::{TestApp, api};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn item(agent: &str, extra: Value) -> Value {
    let mut b = json!({ "agent_id": agent, "payload": { "n": 1 } });
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

fn statuses(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn each_item_gets_what_a_single_enqueue_would_answer_in_request_order() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let other = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let archived = app.agent(&ws, &rt, 1).await;
    let r = app
        .delete(&format!("/api/v1/agents/{archived}"), &ws.member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let gone_rt = app.runtime(&ws, "gone").await;
    let offline_agent = app.agent(&ws, &gone_rt, 1).await;
    api::deregister(&app, &ws, &gone_rt).await;
    let foreign_rt = app.runtime(&other, "theirs").await;
    let foreign = app.agent(&other, &foreign_rt, 1).await;
    let earlier = app
        .enqueue(&ws, &agent, json!({ "idempotency_key": "earlier" }))
        .await;
    let events_before = app.count("events").await;

    let body = json!({ "tasks": [
        item(&agent, json!({ "payload": { "i": 0 } })),
        item(&agent, json!({ "idempotency_key": "earlier" })),
        item(&agent, json!({ "idempotency_key": "twice", "payload": { "i": 2 } })),
        item(&agent, json!({ "idempotency_key": "twice", "payload": { "i": 3 } })),
        item(&foreign, json!({})),
        item("00000000-0000-4000-8000-000000000000", json!({})),
        item(&archived, json!({})),
        item(&offline_agent, json!({ "idempotency_key": "refused" })),
        item(&agent, json!({ "idempotency_key": "refused", "payload": { "i": 8 } })),
    ]});
    let r = app.post("/api/v1/tasks/batch", &ws.member, body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        statuses(&r.body),
        [201, 200, 201, 200, 404, 404, 409, 409, 201]
    );
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res[0]["task"]["payload"], json!({ "i": 0 }));
    assert_eq!(res[0]["task"]["status"], "queued");
    assert_eq!(res[1]["task"]["id"], earlier["id"]);
    assert_eq!(res[3]["task"]["id"], res[2]["task"]["id"]);
    assert_eq!(res[3]["task"]["payload"], json!({ "i": 2 }));
    assert_eq!(res[4]["error"]["code"], "not_found");
    assert_eq!(res[5]["error"]["code"], "not_found");
    assert_eq!(res[6]["error"]["code"], "conflict");
    assert_eq!(res[7]["error"]["code"], "runtime_offline");
    assert_eq!(res[7]["error"]["status"], 409);
    // A key whose earlier item was refused was not used: the later item creates its task.
    assert_eq!(res[8]["task"]["payload"], json!({ "i": 8 }));
    for r in res {
        assert!(
            r["task"].is_null() != r["error"].is_null(),
            "a task or an error: {r}"
        );
        assert_eq!(
            r["task_id"], r["task"]["id"],
            "the task's id beside it: {r}"
        );
    }
    assert_eq!(r.header("preference-applied"), None);

    // One task.queued per created task, and nothing else.
    assert_eq!(app.count("events").await - events_before, 3);
    let created: Vec<String> = [0, 2, 8]
        .iter()
        .map(|&i| res[i]["task"]["id"].as_str().unwrap().to_owned())
        .collect();
    // Straight from the log (the API's feed waits for the commit horizon).
    let queued: Vec<String> = sqlx::query_scalar(
        "SELECT subject_id::text FROM events WHERE type = 'task.queued' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(&queued[1..], &created[..], "events follow request order");
}

#[tokio::test]
async fn tasks_are_claimed_in_request_order() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1000).await;
    let tasks: Vec<Value> = (0..300)
        .map(|i| item(&agent, json!({ "payload": { "i": i } })))
        .collect();
    let r = app
        .post("/api/v1/tasks/batch", &ws.member, json!({ "tasks": tasks }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let ids: Vec<&Value> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["task"]["id"])
        .collect();
    let claimed = app.claim(&ws, &rt, 100, 0).await;
    let got: Vec<&Value> = claimed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["task_id"])
        .collect();
    assert_eq!(got, ids[..100]);
}

#[tokio::test]
async fn an_invalid_item_refuses_the_whole_batch_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let tasks_before = app.count("tasks").await;
    let events_before = app.count("events").await;
    let long_key = "k".repeat(201);
    let cases = [
        json!({ "tasks": [item(&agent, json!({})), item(&agent, json!({ "priority": 5000 }))] }),
        json!({ "tasks": [item(&agent, json!({})), item(&agent, json!({ "idempotency_key": long_key }))] }),
        json!({ "tasks": [item(&agent, json!({})), item(&agent, json!({ "payload": [1] }))] }),
        json!({ "tasks": [item(&agent, json!({ "surprise": true }))] }),
        json!({ "tasks": [] }),
        json!({ "tasks": vec![item(&agent, json!({})); 1001] }),
        json!({ "tasks": "all" }),
    ];
    for body in cases {
        let r = app.post("/api/v1/tasks/batch", &ws.member, body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
        assert_eq!(r.code(), "validation_failed");
    }
    let r = app
        .post(
            "/api/v1/tasks/batch",
            &ws.member,
            json!({ "tasks": [item(&agent, json!({})), item(&agent, json!({ "idempotency_key": "" }))] }),
        )
        .await;
    assert!(
        r.body["detail"].as_str().unwrap().starts_with("tasks[1]: "),
        "the detail names the item: {:?}",
        r.body
    );
    assert_eq!(app.count("tasks").await, tasks_before);
    assert_eq!(app.count("events").await, events_before);
    let r = app
        .post(
            "/api/v1/tasks/batch",
            &ws.daemon,
            json!({ "tasks": [item(&agent, json!({}))] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_waiting_long_poll_is_woken_by_a_batch() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 10).await;
    let claim = api::long_poll(&app, &ws, &rt, 10, 20_000);
    // The scenario, not a synchronisation: the batch arrives ~200 ms into the poll.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!claim.is_finished(), "the claim returned before the batch");
    let tasks: Vec<Value> = (0..5).map(|_| item(&agent, json!({}))).collect();
    let r = app
        .post("/api/v1/tasks/batch", &ws.member, json!({ "tasks": tasks }))
        .await;
    let enqueued = std::time::Instant::now();
    assert_eq!(statuses(&r.body), [201; 5]);
    let reply = claim.await.unwrap();
    let latency = enqueued.elapsed();
    assert_eq!(reply.tasks.len(), 5);
    assert!(
        latency < std::time::Duration::from_millis(250),
        "woken {latency:?} after the batch"
    );
}

#[tokio::test]
async fn racing_batches_with_the_same_keys_create_each_task_once() {
    let app = TestApp::spawn().await;
    let replica = app.replica(|_| {}).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let tasks: Vec<Value> = (0..50)
        .map(|i| item(&agent, json!({ "idempotency_key": format!("k{i}") })))
        .collect();
    let body = json!({ "tasks": tasks });
    let calls = (0..8).map(|i| {
        let target = if i % 2 == 0 { &app } else { &replica };
        target.post("/api/v1/tasks/batch", &ws.member, body.clone())
    });
    let replies = futures::future::join_all(calls).await;
    let mut created = 0;
    let mut ids_of_key = std::collections::HashMap::new();
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for (i, res) in r.body["results"].as_array().unwrap().iter().enumerate() {
            match res["status"].as_u64().unwrap() {
                201 => created += 1,
                200 => {}
                other => panic!("item {i}: {other} {res}"),
            }
            let id = res["task"]["id"].as_str().unwrap().to_owned();
            assert_eq!(ids_of_key.entry(i).or_insert_with(|| id.clone()), &id);
        }
    }
    assert_eq!(created, 50);
    assert_eq!(app.count("tasks").await, 50);
}

#[tokio::test]
async fn the_client_enqueues_a_batch() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let tasks: Vec<paddock_client::api::CreateTask> = (0..3)
        .map(|i| {
            paddock_client::api::CreateTask::new(
                agent.parse().unwrap(),
                json!({ "i": i }).as_object().unwrap().clone(),
            )
        })
        .collect();
    let out = app
        .client(&ws.member)
        .enqueue_batch(&tasks)
        .await
        .expect("batch");
    assert_eq!(out.results.len(), 3);
    assert!(out.results.iter().all(|r| r.status == 201));
    assert_eq!(
        out.results[2].task.as_ref().unwrap().payload,
        json!({ "i": 2 })
    );
    let minimal = app
        .client(&ws.member)
        .enqueue_batch_minimal(&tasks)
        .await
        .expect("batch");
    assert!(minimal.results.iter().all(|r| r.status == 201));
    assert!(minimal.results.iter().all(|r| r.task.is_none()));
    let id = minimal.results[2].task_id.expect("the task's id");
    let stored = api::task(&app, &ws, &id.to_string()).await;
    assert_eq!(stored["payload"], json!({ "i": 2 }));
}

#[tokio::test]
async fn each_created_task_is_answered_as_it_is_stored() {
    // The insert returns only what the database decides (seq, now()); the server builds the rest
    // of each answer from the request. It must be the row a later read finds, field for field.
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let bound = app.agent(&ws, &rt, 1).await;
    let r = app
        .post(
            "/api/v1/agents",
            &ws.member,
            json!({ "name": "pool", "definition": {}, "max_concurrent_tasks": 1,
                    "runtime_selector": { "provider": "claude-code" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let pooled = r.body["id"].as_str().unwrap().to_owned();
    let body = json!({ "tasks": [
        item(&bound, json!({})),
        item(&bound, json!({ "priority": -7, "max_attempts": 4, "idempotency_key": "k1",
                             "payload": { "s": "é\"\\", "deep": { "a": [1, 2.5, null, true] }, "big": 9007199254740993_u64 },
                             "concurrency_key": "repo", "concurrency_limit": 3,
                             "dispatch_timeout": "90s", "running_timeout": 1500, "queued_ttl": "1h 2m 3s 4ms" })),
        item(&bound, json!({ "dispatch_timeout": 1, "running_timeout": "2h" })),
        item(&pooled, json!({ "priority": 1000, "payload": {} })),
    ]});
    let r = app.post("/api/v1/tasks/batch", &ws.member, body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(statuses(&r.body), [201, 201, 201, 201]);
    let res = r.body["results"].as_array().unwrap();
    assert!(res[3]["task"]["runtime_id"].is_null(), "{:?}", res[3]);
    for item in res {
        let mut answered = item["task"].clone();
        let id = answered["id"].as_str().unwrap().to_owned();
        let mut stored = app
            .get(&format!("/api/v1/tasks/{id}"), &ws.member)
            .await
            .body;
        // `blocked` is computed on read (DESIGN §12) and `attempts` is the GET's own (none yet);
        // everything else is the row.
        answered.as_object_mut().unwrap().remove("blocked");
        stored.as_object_mut().unwrap().remove("blocked");
        assert_eq!(
            stored.as_object_mut().unwrap().remove("attempts"),
            Some(json!([]))
        );
        assert_eq!(
            answered, stored,
            "task {id}: the answer is not the stored row"
        );
    }
    // And the event each carries says what the row says (events are listed once below the
    // commit horizon, so wait for the four).
    let queued = || async {
        let r = app.get("/api/v1/events?limit=500", &ws.member).await;
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "task.queued")
            .cloned()
            .collect::<Vec<Value>>()
    };
    common::eventually(
        std::time::Duration::from_secs(20),
        "the batch's four task.queued events to be listed",
        || async { queued().await.len() == 4 },
    )
    .await;
    let events = queued().await;
    assert_eq!(events.len(), 4, "{events:?}");
    for (e, item) in events.iter().zip(res) {
        let t = &item["task"];
        assert_eq!(e["subject_id"], t["id"]);
        assert_eq!(e["payload"]["run_after"], t["run_after"], "{e:?}");
        assert_eq!(e["payload"]["priority"], t["priority"], "{e:?}");
    }
}

#[tokio::test]
async fn under_prefer_minimal_each_result_names_its_task_by_id_alone() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let earlier = app
        .enqueue(&ws, &agent, json!({ "idempotency_key": "earlier" }))
        .await;
    let body = json!({ "tasks": [
        item(&agent, json!({ "payload": { "i": 0 } })),
        item(&agent, json!({ "idempotency_key": "earlier" })),
        item("00000000-0000-4000-8000-000000000000", json!({})),
        item(&agent, json!({ "payload": { "i": 3 } })),
    ]});
    let r = app
        .post_minimal("/api/v1/tasks/batch", &ws.member, body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.header("preference-applied"), Some("return=minimal"));
    assert_eq!(statuses(&r.body), [201, 200, 404, 201]);
    let res = r.body["results"].as_array().unwrap();
    for r in res {
        assert!(r["task"].is_null(), "no task under return=minimal: {r}");
    }
    assert_eq!(res[1]["task_id"], earlier["id"]);
    assert_eq!(res[2]["error"]["code"], "not_found");
    assert!(res[2]["task_id"].is_null());
    // The ids answered are the tasks written, with their payloads.
    for (i, n) in [(0, 0), (3, 3)] {
        let id = res[i]["task_id"].as_str().expect("an id");
        assert_eq!(api::task(&app, &ws, id).await["payload"], json!({ "i": n }));
    }
    assert_eq!(app.count("tasks").await, 3);
    app.stop().await.unwrap();
}
