//! `paddock-client` against real servers: every call of a task's life with typed bodies, the long
//! poll, error codes, the event stream resuming across a replica restart, and which calls retry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestApp;
use paddock_client::api::{
    self, CreateTask, EventType, FailBody, ReportBody, RuntimeIds, TaskStatus, Update,
};
use paddock_client::{Client, RetryPolicy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn object(v: serde_json::Value) -> api::JsonObject {
    v.as_object().expect("an object").clone()
}

#[tokio::test]
async fn a_task_s_life_through_the_typed_client() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let member = app.client(&ws.member);
    let daemon = app.client(&ws.daemon);

    let register = api::Register {
        daemon_id: "laptop".to_owned().try_into().unwrap(),
        provider: "exec".to_owned().try_into().unwrap(),
        name: None,
        version: None,
        max_concurrency: None,
        labels: None,
    };
    let reg = daemon.register(&register).await.unwrap();
    assert!(reg.created);
    assert!(
        !daemon.register(&register).await.unwrap().created,
        "idempotent"
    );
    let rt = reg.value.runtime_id;

    let agent = member
        .create_agent(&api::CreateAgent {
            name: "reviewer".to_owned().try_into().unwrap(),
            runtime_id: Some(rt),
            runtime_selector: None,
            max_concurrent_tasks: Default::default(),
            definition: object(json!({ "command": ["true"] })),
        })
        .await
        .unwrap();

    // A long poll is woken by the enqueue.
    let claim = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            daemon
                .claim(&api::Claim {
                    runtime_id: rt,
                    max_tasks: 5.try_into().unwrap(),
                    wait_ms: 20_000.try_into().unwrap(),
                })
                .await
        })
    };
    let mut body = CreateTask::new(agent.id, object(json!({ "prompt": "hi" })));
    body.idempotency_key = Some("k1".into());
    let task = member.enqueue(&body).await.unwrap();
    assert!(task.created);
    let again = member.enqueue(&body).await.unwrap();
    assert!(!again.created, "the idempotency key returns the same task");
    assert_eq!(again.value.id, task.value.id);
    let claimed = claim.await.unwrap().unwrap();
    assert_eq!(claimed.tasks.len(), 1);
    let attempt = claimed.tasks[0].attempt_id;
    let id = task.value.id;

    assert_eq!(
        daemon.start(id, attempt).await.unwrap().status,
        TaskStatus::Running
    );
    let t = daemon
        .progress(
            id,
            &api::ProgressBody {
                attempt_id: attempt,
                progress: object(json!({ "pct": 50 })),
                usage: None,
                session: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(t.progress, Some(json!({ "pct": 50 })));
    let done = daemon
        .complete(
            id,
            &api::CompleteBody {
                attempt_id: attempt,
                result: object(json!({ "ok": true })),
                usage: None,
                session: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);

    // Refusals carry their code.
    let err = daemon
        .fail(
            id,
            &FailBody {
                attempt_id: api::AttemptId::new(),
                error: "late".into(),
                retryable: true,
                usage: None,
                session: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(api::ErrorCode::AttemptSuperseded));
    assert_eq!(err.status(), Some(409));
    let missing = member.get_task(api::TaskId::new()).await.unwrap_err();
    assert_eq!(missing.code(), Some(api::ErrorCode::NotFound));

    let read = member.get_task(id).await.unwrap();
    assert_eq!(read.task.result, Some(json!({ "ok": true })));
    assert_eq!(read.attempts.len(), 1);
    assert_eq!(
        read.attempts[0].outcome,
        Some(api::AttemptOutcome::Completed)
    );
    let page = member
        .list_tasks(&paddock_client::TaskQuery {
            status: Some(TaskStatus::Completed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);

    // A batch report answers per update; the definition is cached by version.
    let reply = daemon
        .report(&ReportBody {
            updates: vec![Update::start(id, attempt)],
        })
        .await
        .unwrap();
    assert_eq!(
        reply.results[0].status, 200,
        "a repeated start is already applied"
    );
    assert!(reply.results[0].task.is_some());
    let minimal = daemon
        .report_minimal(&ReportBody {
            updates: vec![Update::start(id, attempt)],
        })
        .await
        .unwrap();
    assert_eq!(minimal.results[0].status, 200);
    assert_eq!(minimal.results[0].task_id, id);
    assert!(
        minimal.results[0].task.is_none(),
        "Prefer: return=minimal answers without the task"
    );
    let def = daemon.definition(agent.id, None).await.unwrap().unwrap();
    assert_eq!(def.version, 1);
    assert!(
        daemon
            .definition(agent.id, Some(1))
            .await
            .unwrap()
            .is_none(),
        "304"
    );

    let events = member.list_events(None, Some(500)).await.unwrap();
    let kinds: Vec<EventType> = events.items.iter().map(|e| e.kind).collect();
    for k in [
        EventType::TaskQueued,
        EventType::TaskDispatched,
        EventType::TaskRunning,
        EventType::TaskCompleted,
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let off = daemon
        .deregister(&RuntimeIds {
            runtime_ids: vec![rt],
        })
        .await
        .unwrap();
    assert_eq!(off.offline, vec![rt]);
    let offline = member
        .enqueue(&CreateTask::new(agent.id, object(json!({}))))
        .await
        .unwrap_err();
    assert_eq!(offline.code(), Some(api::ErrorCode::RuntimeOffline));
    assert_eq!(member.readyz().await.unwrap().status, "ready");
}

/// The event stream resumes after the replica it was on stops: a restart on the same address
/// delivers what was written meanwhile (through another replica), nothing twice.
#[tokio::test]
async fn the_event_stream_resumes_across_a_replica_restart() {
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (addr, settings) = (a.addr, a.settings.clone());
    let client = Client::new(&a.base, &ws.member)
        .unwrap()
        .retry(RetryPolicy {
            attempts: 50,
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        });
    let rt = b.runtime(&ws, "d1").await;
    let agent = b.agent(&ws, &rt, 1).await;
    let mut stream = client.events(Some(0));
    let mut seen = Vec::new();
    let mut queued = Vec::new();
    while seen.len() < 2 {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    a.stop().await.unwrap();
    for _ in 0..3 {
        queued.push(
            b.enqueue(&ws, &agent, json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let _a2 = TestApp::start_at(settings, addr).await;
    while !queued.iter().all(|q| {
        seen.iter()
            .any(|e| e.kind == EventType::TaskQueued && e.subject_id.to_string() == *q)
    }) {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream resumes")
            .unwrap()
            .unwrap();
        seen.push(e);
    }
    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(ids, sorted, "no event twice, none out of order");
}

/// A one-connection-per-answer fake server: answers each request with the next canned response
/// and counts the requests.
async fn fake_server(answers: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        for answer in answers.into_iter().cycle() {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            seen.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answer.split_once('\n').unwrap();
            let ctype = if status.starts_with('2') {
                "application/json"
            } else {
                "application/problem+json"
            };
            let res = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(res.as_bytes()).await;
        }
    });
    (base, count)
}

const UNAVAILABLE: &str = "503 Service Unavailable\n{\"type\":\"t\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"retry\",\"code\":\"unavailable\"}";
const HEALTHY: &str = "200 OK\n{\"status\":\"ok\"}";
const SUPERSEDED: &str = "409 Conflict\n{\"type\":\"t\",\"title\":\"Attempt superseded\",\"status\":409,\"detail\":\"no\",\"code\":\"attempt_superseded\"}";

#[tokio::test]
async fn safe_calls_retry_transient_failures_and_nothing_else_retries() {
    let fast = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    // A read retries a 503 and gets the answer that follows.
    let (base, count) = fake_server(vec![UNAVAILABLE, HEALTHY]).await;
    let client = Client::new(&base, "pdk_x").unwrap().retry(fast);
    assert_eq!(client.healthz().await.unwrap().status, "ok");
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // A claim never retries: its lost answer would hand out tasks nobody runs.
    let (base, count) = fake_server(vec![UNAVAILABLE, HEALTHY]).await;
    let client = Client::new(&base, "pdk_x").unwrap().retry(fast);
    let claim = api::Claim {
        runtime_id: api::RuntimeId::new(),
        max_tasks: Default::default(),
        wait_ms: Default::default(),
    };
    let err = client.claim(&claim).await.unwrap_err();
    assert_eq!(err.code(), Some(api::ErrorCode::Unavailable));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // A final refusal is not retried, even on a safe call.
    let (base, count) = fake_server(vec![SUPERSEDED]).await;
    let client = Client::new(&base, "pdk_x").unwrap().retry(fast);
    let err = client
        .start(api::TaskId::new(), api::AttemptId::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(api::ErrorCode::AttemptSuperseded));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // The tries are bounded.
    let (base, count) = fake_server(vec![UNAVAILABLE]).await;
    let client = Client::new(&base, "pdk_x").unwrap().retry(fast);
    assert!(client.healthz().await.unwrap_err().is_transient());
    assert_eq!(count.load(Ordering::SeqCst), 3);
}
