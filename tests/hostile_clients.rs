//! Hostile and unlucky clients against a real server: half-sent headers and bodies, idle
//! keep-alive connections, declared oversize bodies, the connection cap, concurrent registration
//! of one runtime over two replicas, `/events` paginated by `cursor`, numbers that would change,
//! WebSocket caps per token, and a `task.updated` that would carry a huge progress.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Reads until the server closes the connection (or `within` passes); returns what it sent and
/// whether it closed.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// A connection to `app` that has sent `bytes` (as a client writes them, without HTTP library).
async fn send_raw(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"))
}

fn body_of(raw: &str) -> Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn half_a_header_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|s| s.header_read_timeout = Duration::from_millis(300)).await;
    let mut tcp = send_raw(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    println!("half header closed after {:?}", t.elapsed());
    assert!(closed, "a connection holding half a header is closed");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );

    // A header sent whole, slowly but within the bound, is served.
    let mut tcp = send_raw(&app, b"GET /healthz HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (raw, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    assert!(closed);
    assert_eq!(status_of(&raw), 200, "{raw}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_long_poll_is_not() {
    let app = TestApp::spawn_with(|s| s.keepalive_timeout = Duration::from_millis(400)).await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;

    let mut tcp = send_raw(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let t = Instant::now();
    let (raw, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    println!("idle connection closed after {:?}", t.elapsed());
    assert_eq!(status_of(&raw), 200, "{raw}");
    assert!(closed, "an idle kept-alive connection is closed");

    // A claim that waits 1.5 s (longer than the idle bound) on one connection is answered.
    let body = json!({ "runtime_id": rt, "max_tasks": 1, "wait_ms": 1500 }).to_string();
    let req = format!(
        "POST /api/v1/daemon/claim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        ws.daemon,
        body.len()
    );
    let mut tcp = send_raw(&app, req.as_bytes()).await;
    let t = Instant::now();
    let (raw, _) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    assert_eq!(status_of(&raw), 200, "the long poll is answered: {raw}");
    assert!(t.elapsed() >= Duration::from_millis(1400), "it waited");
}

#[tokio::test]
async fn a_body_that_stops_answers_408() {
    let app = TestApp::spawn_with(|s| s.body_read_timeout = Duration::from_millis(300)).await;
    let ws = app.workspace().await;
    let before = app.count("tasks").await;
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        ws.member
    );
    let mut tcp = send_raw(&app, head.as_bytes()).await;
    let (raw, closed) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    assert!(closed, "the connection is closed after the answer");
    assert_eq!(status_of(&raw), 408, "{raw}");
    assert_eq!(body_of(&raw)["code"], "request_timeout");
    assert_eq!(app.count("tasks").await, before, "nothing written");
}

#[tokio::test]
async fn a_declared_oversize_body_is_refused_from_the_header() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    for auth in [
        format!("Authorization: Bearer {}\r\n", ws.member),
        String::new(),
    ] {
        let head = format!(
            "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: 2000000\r\n\r\n"
        );
        let mut tcp = send_raw(&app, head.as_bytes()).await;
        let (raw, _) = read_to_close(&mut tcp, Duration::from_secs(5)).await;
        assert_eq!(status_of(&raw), 413, "{raw}");
        assert_eq!(body_of(&raw)["code"], "payload_too_large");
    }

    // A client that sends the whole oversize body without `Expect: 100-continue` still reads the
    // 413 (the server drains what it sends before closing instead of resetting the connection).
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let big = vec![b' '; 3 << 20];
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ws.member,
        big.len()
    );
    let (mut rd, mut wr) = tcp.split();
    let send = async {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&big).await
    };
    let read = async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
        out
    };
    let (sent, raw) = tokio::join!(send, read);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    println!("whole oversize body sent: {}", sent.is_ok());
    assert_eq!(status_of(&raw), 413, "the answer arrives intact: {raw}");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_with_503() {
    let app = TestApp::spawn_with(|s| s.max_connections = 3).await;
    // The harness's own client may keep one connection of its readiness check open: the cap is
    // reached after two or three of ours.
    let mut held = Vec::new();
    let raw = loop {
        let mut tcp = send_raw(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_of(&raw) != 200 {
            break raw;
        }
        held.push(tcp);
        assert!(held.len() <= 3, "the cap of 3 holds");
    };
    println!(
        "served {} connections, then: {}",
        held.len(),
        raw.lines().next().unwrap_or("")
    );
    assert!(held.len() >= 2);
    assert_eq!(status_of(&raw), 503, "{raw}");
    assert!(raw.contains("\"code\":\"unavailable\""), "{raw}");

    // A place frees when a connection closes.
    drop(held.pop());
    eventually(
        Duration::from_secs(5),
        "a new connection is served",
        || async {
            let mut tcp = TcpStream::connect(app.addr).await.unwrap();
            if tcp
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let (raw, _) = read_to_close(&mut tcp, Duration::from_secs(5)).await;
            raw.starts_with("HTTP/1.1 200")
        },
    )
    .await;
}

#[tokio::test]
async fn concurrent_registration_over_two_replicas_creates_one_runtime() {
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let register = |app: &TestApp| {
        let http = app.http.clone();
        let url = format!("{}/api/v1/daemon/register", app.base);
        let token = ws.daemon.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "daemon_id": "racer", "provider": "codex" }))
                .send()
                .await
                .unwrap()
        }
    };
    let calls: Vec<_> = (0..20)
        .map(|i| register(if i % 2 == 0 { &a } else { &b }))
        .collect();
    let replies = futures::future::join_all(calls).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for r in replies {
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("registration answered {other}"),
        }
        let body: Value = r.json().await.unwrap();
        ids.insert(body["runtime_id"].as_str().unwrap().to_owned());
    }
    let count_events = |kind: &'static str| {
        let pool = a.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE type = $1")
                .bind(kind)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    println!(
        "20 concurrent registrations: {created} created, {} runtime id(s)",
        ids.len()
    );
    assert_eq!(created, 1, "exactly one 201");
    assert_eq!(ids.len(), 1, "one runtime");
    assert_eq!(count_events("runtime.registered").await, 1);

    // Offline, then 20 concurrent re-registrations: it comes online once.
    let rt = ids.into_iter().next().unwrap();
    common::api::deregister(&a, &ws, &rt).await;
    let calls: Vec<_> = (0..20)
        .map(|i| register(if i % 2 == 0 { &a } else { &b }))
        .collect();
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        count_events("runtime.online").await,
        1,
        "one runtime.online"
    );
}

#[tokio::test]
async fn events_are_paginated_by_cursor() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    for _ in 0..7 {
        app.enqueue(&ws, &agent, json!({})).await;
    }
    let all = app.get("/api/v1/events?limit=500", &ws.member).await.body["items"]
        .as_array()
        .unwrap()
        .len();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=3&cursor={c}"),
            None => "/api/v1/events?limit=3".to_owned(),
        };
        let page = app.get(&path, &ws.member).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        for e in page.body["items"].as_array().unwrap() {
            seen.push(e["id"].as_i64().unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(
        seen.len(),
        all,
        "a generic paginator ends with every event: {seen:?}"
    );
    assert_eq!(unique, seen, "no page repeats");

    let r = app.get("/api/v1/events?after=1&cursor=2", &ws.member).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// `POST /tasks` with a body sent as written (not re-serialised by a JSON library).
async fn post_raw(app: &TestApp, token: &str, raw: String) -> reqwest::Response {
    app.http
        .post(format!("{}/api/v1/tasks", app.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn numbers_are_kept_exactly_or_refused() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let before = app.count("tasks").await;
    let raw = format!(r#"{{"agent_id": "{agent}", "payload": {{"n": 12345678901234567890123}}}}"#);
    let r = post_raw(&app, &ws.member, raw).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("12345678901234567890123")
    );
    assert_eq!(app.count("tasks").await, before, "nothing written");

    // The largest integers an i64 or u64 holds, and decimals an f64 holds, come back as sent.
    let raw = format!(
        r#"{{"agent_id": "{agent}", "payload": {{"u": 18446744073709551615, "i": -9223372036854775808, "f": 0.30000000000000004}}}}"#
    );
    let r = post_raw(&app, &ws.member, raw).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = app
        .http
        .get(format!("{}/api/v1/tasks/{id}", app.base))
        .bearer_auth(&ws.member)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for lit in [
        "18446744073709551615",
        "-9223372036854775808",
        "0.30000000000000004",
    ] {
        assert!(text.contains(lit), "{lit} comes back: {text}");
    }
}

#[tokio::test]
async fn websockets_per_token_are_capped() {
    let app = TestApp::spawn_with(|s| s.ws_max_per_token = 2).await;
    let ws = app.workspace().await;
    let dial = || {
        let mut req = format!("ws://{}/api/v1/ws", app.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", ws.member)).unwrap(),
        );
        tokio_tungstenite::connect_async(req)
    };
    let first = dial().await.expect("first socket").0;
    let _second = dial().await.expect("second socket").0;
    match dial().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "rate_limited");
        }
        other => panic!(
            "a third socket of the token is refused, got {:?}",
            other.map(|_| ())
        ),
    }
    // Another token of the workspace is not held to this token's cap.
    let other = app.token(&ws.id, "member").await;
    let mut req = format!("ws://{}/api/v1/ws?token={other}", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().remove("authorization");
    tokio_tungstenite::connect_async(req)
        .await
        .expect("another token's socket");
    drop(first);
    eventually(
        Duration::from_secs(5),
        "a place frees when a socket closes",
        || async { dial().await.is_ok() },
    )
    .await;
}

#[tokio::test]
async fn task_updated_leaves_a_huge_progress_out() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({})).await;
    let id = task["id"].as_str().unwrap();
    let claimed = app.claim(&ws, &rt, 1, 0).await;
    let attempt = claimed["tasks"][0]["attempt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .report(&ws, id, "start", json!({ "attempt_id": attempt }))
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let big = "x".repeat(900 << 10);
    for progress in [json!({ "small": 1 }), json!({ "log": big })] {
        let r = app
            .report(
                &ws,
                id,
                "progress",
                json!({ "attempt_id": attempt, "progress": progress }),
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
    }
    let events = app.get("/api/v1/events?limit=500", &ws.member).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "task.updated")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["payload"]["progress"], json!({ "small": 1 }));
    assert!(events[0]["payload"].get("progress_omitted").is_none());
    assert_eq!(events[1]["payload"]["progress"], Value::Null);
    assert_eq!(events[1]["payload"]["progress_omitted"], true);
    let stored = app.get(&format!("/api/v1/tasks/{id}"), &ws.member).await;
    assert_eq!(
        stored.body["progress"]["log"].as_str().unwrap().len(),
        900 << 10
    );
}
