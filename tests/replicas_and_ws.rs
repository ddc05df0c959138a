//! DESIGN.md §6 across replicas: events fan out from the replica that wrote them to WebSocket
//! subscribers of every replica, in log order, per workspace, resumable with `?after=`; long-poll
//! claims wake across replicas; the LISTEN connection recovers; slow clients are dropped.
//!
//! Replicas are two servers on the same database and Redis prefix (`TestApp::replica`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestApp, Ws, eventually};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use uuid::Uuid;

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Tests that assert latencies (cross-replica socket and claim wake-ups, listener recovery) and the
/// load tests (concurrent writers, 300-task claim race, event flood) take turns: on a 2-core machine
/// a load test running beside a latency test measures the CPU, not the server.
static QUIET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// WebSocket client helpers
// ---------------------------------------------------------------------------------------------

fn ws_url(app: &TestApp, after: Option<i64>) -> String {
    match after {
        Some(a) => format!("ws://{}/api/v1/ws?after={a}", app.addr),
        None => format!("ws://{}/api/v1/ws", app.addr),
    }
}

/// Opens the event stream, authenticating with an `Authorization: Bearer` header.
async fn dial(
    app: &TestApp,
    token: Option<&str>,
    after: Option<i64>,
) -> Result<Stream, tungstenite::Error> {
    let mut req = ws_url(app, after).into_client_request()?;
    if let Some(t) = token {
        req.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), connect_async(req))
        .await
        .expect("websocket handshake timed out")
        .map(|(s, _)| s)
}

/// Opens the event stream, authenticating with `?token=` (as a browser does).
async fn dial_query(app: &TestApp, token: &str) -> Result<Stream, tungstenite::Error> {
    let enc: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let url = format!("ws://{}/api/v1/ws?token={enc}", app.addr);
    tokio::time::timeout(Duration::from_secs(10), connect_async(url))
        .await
        .expect("websocket handshake timed out")
        .map(|(s, _)| s)
}

/// The HTTP status (and problem body) of a refused handshake.
fn refusal(r: Result<Stream, tungstenite::Error>) -> (u16, Value) {
    match r {
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal before the upgrade, got error {e}"),
        Ok(_) => panic!("expected an HTTP refusal, but the socket was upgraded"),
    }
}

#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are shown through Debug in failure messages"
)]
enum Got {
    Frame,
    Pong(Vec<u8>),
    Other,
    CloseFrame(Option<u16>),
    Eof,
    Failed(String),
    TimedOut,
}

/// A connected client that keeps every event frame it has read.
struct Socket {
    s: Stream,
    frames: Vec<Value>,
    pings: u64,
}

impl Socket {
    /// Connects with a header token and waits until the session answers a ping, so it is
    /// subscribed (and, with `after`, has replayed) before the caller produces anything.
    async fn open(app: &TestApp, token: &str, after: Option<i64>) -> Socket {
        let s = dial(app, Some(token), after).await.expect("ws connect");
        Self::ready(s).await
    }

    async fn ready(s: Stream) -> Socket {
        let mut sock = Socket {
            s,
            frames: Vec::new(),
            pings: 0,
        };
        sock.sync().await;
        sock
    }

    async fn read(&mut self, within: Duration) -> Got {
        match tokio::time::timeout(within, self.s.next()).await {
            Err(_) => Got::TimedOut,
            Ok(None) => Got::Eof,
            Ok(Some(Err(e))) => Got::Failed(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}"));
                self.frames.push(v);
                Got::Frame
            }
            Ok(Some(Ok(Message::Binary(_)))) => panic!("the stream sent a binary frame"),
            Ok(Some(Ok(Message::Pong(p)))) => Got::Pong(p.to_vec()),
            Ok(Some(Ok(Message::Close(f)))) => Got::CloseFrame(f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => Got::Other,
        }
    }

    /// Sends a ping and reads (keeping frames) until its pong comes back.
    async fn sync(&mut self) {
        self.pings += 1;
        let nonce = format!("sync-{}", self.pings).into_bytes();
        self.s
            .send(Message::Ping(nonce.clone().into()))
            .await
            .expect("send ping");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .read(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Got::Pong(p) if p == nonce => return,
                Got::Frame | Got::Pong(_) | Got::Other => {}
                other => panic!(
                    "socket ended before answering a ping: {other:?} ({} frames)",
                    self.frames.len()
                ),
            }
        }
    }

    /// Reads until `done(frames)`; panics on time-out or end of stream. Returns the time waited.
    async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            if done(&self.frames) {
                return start.elapsed();
            }
            match self
                .read(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Got::Frame | Got::Pong(_) | Got::Other => {}
                Got::TimedOut => panic!(
                    "timed out after {within:?} waiting for {what}; {} frames received",
                    self.frames.len()
                ),
                other => panic!(
                    "socket ended ({other:?}) while waiting for {what}; {} frames received",
                    self.frames.len()
                ),
            }
        }
    }

    /// Waits until the frame with this id has arrived.
    async fn wait_for_id(&mut self, within: Duration, what: &str, id: i64) -> Duration {
        self.wait_for(within, what, |f| f.iter().any(|e| fid(e) == id))
            .await
    }

    async fn close(mut self) -> Vec<Value> {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.s.close(None)).await;
        self.frames
    }
}

#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are shown through Debug in failure messages"
)]
enum End {
    Reached,
    CloseFrame(Option<u16>),
    Eof,
    Failed(String),
    TimedOut,
}

/// The id of an event frame without a full parse (frames start with `{"id":N,`).
fn quick_id(text: &str) -> i64 {
    text.strip_prefix("{\"id\":")
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fid(&serde_json::from_str(text).expect("frame is JSON")))
}

/// Reads frame ids until `stop_at` arrives or the stream ends.
async fn drain_ids(s: &mut Stream, within: Duration, stop_at: Option<i64>) -> (Vec<i64>, End) {
    let deadline = Instant::now() + within;
    let mut ids = Vec::new();
    loop {
        let msg = match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => return (ids, End::TimedOut),
            Ok(None) => return (ids, End::Eof),
            Ok(Some(Err(e))) => return (ids, End::Failed(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => {
                let id = quick_id(t.as_str());
                ids.push(id);
                if Some(id) == stop_at {
                    return (ids, End::Reached);
                }
            }
            Message::Close(f) => return (ids, End::CloseFrame(f.map(|f| u16::from(f.code)))),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Event helpers
// ---------------------------------------------------------------------------------------------

fn fid(v: &Value) -> i64 {
    v["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("event without an id: {v}"))
}

fn ids(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(fid).collect()
}

/// Subject ids of the `task.queued` frames.
fn queued(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|e| e["type"] == "task.queued")
        .map(|e| e["subject_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The workspace's event log after `after`, every page, from `GET /events`.
async fn events_after(app: &TestApp, ws: &Ws, after: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cur = after;
    loop {
        let r = app
            .get(&format!("/api/v1/events?after={cur}&limit=500"), &ws.member)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let items = r.body["items"].as_array().unwrap().clone();
        let Some(last) = items.last() else { break };
        cur = fid(last);
        out.extend(items);
    }
    out
}

/// The log after `after` once all of it is listed: `GET /events` lists only rows below the commit
/// horizon, which any transaction in flight on the cluster (another test's, say) holds back for a
/// moment. Waits until the listing has every committed row after `after`.
async fn settled_events_after(app: &TestApp, ws: &Ws, after: i64) -> Vec<Value> {
    let ws_id: Uuid = ws.id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let committed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e WHERE e.workspace_id = $1 AND ($2 = 0 OR \
             (e.xact_id, e.id) > (SELECT p.xact_id, p.id FROM events p WHERE p.id = $2))",
        )
        .bind(ws_id)
        .bind(after)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let listed = events_after(app, ws, after).await;
        if listed.len() as i64 == committed {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "GET /events still lists {} of {committed} committed events after 10 s",
            listed.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn last_event_id(app: &TestApp, ws: &Ws) -> i64 {
    events_after(app, ws, 0).await.last().map(fid).unwrap_or(0)
}

/// `(workspace_id, xact_id)` of stored events.
async fn positions(pool: &PgPool, ids: &[i64]) -> HashMap<i64, (Uuid, u64)> {
    let rows: Vec<(i64, Uuid, String)> =
        sqlx::query_as("SELECT id, workspace_id, xact_id::text FROM events WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, ws, x)| (id, (ws, x.parse().unwrap())))
        .collect()
}

/// Frames are in log order `(xact_id, id)`, strictly (so ids increase within one transaction and
/// nothing repeats). Returns how many transactions contributed more than one frame.
fn assert_log_order(frames: &[Value], pos: &HashMap<i64, (Uuid, u64)>) -> usize {
    let keys: Vec<(u64, i64)> = frames
        .iter()
        .map(|f| {
            let id = fid(f);
            (pos.get(&id).expect("frame of a stored event").1, id)
        })
        .collect();
    for w in keys.windows(2) {
        assert!(
            w[0] < w[1],
            "frames out of log order: (xact, id) {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut per_xact: HashMap<u64, usize> = HashMap::new();
    for (x, _) in &keys {
        *per_xact.entry(*x).or_default() += 1;
    }
    per_xact.values().filter(|n| **n > 1).count()
}

fn assert_no_duplicate_ids(frames: &[Value]) {
    let mut seen = HashSet::new();
    for f in frames {
        assert!(seen.insert(fid(f)), "frame {} delivered twice", fid(f));
    }
}

/// A runtime and an agent in `ws`, created through `app`.
async fn runtime_and_agent(app: &TestApp, ws: &Ws, daemon: &str, max: i64) -> (String, String) {
    let rt = app.runtime(ws, daemon).await;
    let agent = app.agent(ws, &rt, max).await;
    (rt, agent)
}

async fn enqueue_id(app: &TestApp, ws: &Ws, agent: &str) -> String {
    app.enqueue(ws, agent, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn stop(app: Arc<TestApp>) {
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await.unwrap(),
        Err(_) => panic!("a test task still holds the server"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// `GET /api/v1/ws`: authenticate with a member token (header, or `?token=`) — refused with a
/// plain HTTP status before any upgrade otherwise.
#[tokio::test]
async fn ws_refuses_bad_or_revoked_tokens() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;

    let (st, body) = refusal(dial(&app, None, None).await);
    assert_eq!(st, 401, "no token: {body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    let (st, body) = refusal(dial(&app, Some("pdk_garbage"), None).await);
    assert_eq!(st, 401, "garbage header token: {body}");
    let (st, body) = refusal(dial_query(&app, "garbage").await);
    assert_eq!(st, 401, "garbage query token: {body}");

    let (st, body) = refusal(dial(&app, Some(&ws.daemon), None).await);
    assert_eq!(st, 403, "daemon token (header): {body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let (st, body) = refusal(dial_query(&app, &ws.daemon).await);
    assert_eq!(st, 403, "daemon token (query): {body}");
    let (st, body) = refusal(dial(&app, Some(&app.admin_token), None).await);
    assert_eq!(st, 403, "admin token is not a member token: {body}");

    // A member token works both ways...
    Socket::open(&app, &ws.member, None).await.close().await;
    Socket::ready(dial_query(&app, &ws.member).await.expect("query token"))
        .await
        .close()
        .await;

    // ...until it is revoked.
    let r = app
        .post(
            &format!("/api/v1/workspaces/{}/tokens", ws.id),
            &app.admin_token,
            json!({ "kind": "member", "name": "dashboard" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token_id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["token"].as_str().unwrap().to_owned();
    Socket::open(&app, &secret, None).await.close().await;
    let r = app
        .delete(&format!("/api/v1/tokens/{token_id}"), &app.admin_token)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let (st, body) = refusal(dial(&app, Some(&secret), None).await);
    assert_eq!(st, 401, "revoked token (header): {body}");
    let (st, body) = refusal(dial_query(&app, &secret).await);
    assert_eq!(st, 401, "revoked token (query): {body}");

    app.stop().await.unwrap();
}

/// "Revoked tokens fail at once on every replica" (DESIGN §2) applied to a stream already open:
/// a socket on B authenticated with a token revoked through A stops carrying the workspace's
/// events (closed, 1008 expected) instead of streaming on for as long as it stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_token_ends_an_open_socket_on_every_replica() {
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (_rt, agent) = runtime_and_agent(&a, &ws, "d1", 1).await;
    let r = a
        .post(
            &format!("/api/v1/workspaces/{}/tokens", ws.id),
            &a.admin_token,
            json!({ "kind": "member", "name": "dashboard" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token_id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["token"].as_str().unwrap().to_owned();
    let start = last_event_id(&a, &ws).await;
    let mut sock = Socket::open(&b, &secret, Some(start)).await;
    let before = enqueue_id(&a, &ws, &agent).await;
    sock.wait_for(
        Duration::from_secs(5),
        "an event before the revocation",
        |f| queued(f).contains(&before),
    )
    .await;

    let r = a
        .delete(&format!("/api/v1/tokens/{token_id}"), &a.admin_token)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let revoked_at = Instant::now();
    let after = enqueue_id(&a, &ws, &agent).await;

    let deadline = revoked_at + Duration::from_secs(5);
    let end = loop {
        match sock
            .read(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Got::Frame | Got::Pong(_) | Got::Other => {}
            other => break other,
        }
    };
    let leaked = queued(&sock.frames).contains(&after);
    println!(
        "socket with a revoked token: {end:?} after {:?}; event written after the revocation \
         delivered: {leaked}",
        revoked_at.elapsed()
    );
    assert!(
        !matches!(end, Got::TimedOut),
        "the socket of a revoked token is still open {:?} after the revocation (and delivered the \
         event written after it: {leaked})",
        revoked_at.elapsed()
    );
    if let Got::CloseFrame(Some(code)) = end {
        assert_eq!(code, 1008, "closed for policy");
    }
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Fan-out across replicas: an event committed on A reaches WebSocket subscribers on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_produced_on_a_arrives_on_a_socket_of_b() {
    let _quiet = QUIET.lock().await;
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (_rt, agent) = runtime_and_agent(&a, &ws, "d1", 1).await;
    let start = last_event_id(&b, &ws).await;
    let mut sock = Socket::open(&b, &ws.member, Some(start)).await;

    let limit = Duration::from_secs(2);
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let t0 = Instant::now();
        let id = enqueue_id(&a, &ws, &agent).await;
        let answered = t0.elapsed();
        sock.wait_for(
            limit.saturating_sub(t0.elapsed()),
            "task.queued from A on B's socket",
            |f| queued(f).contains(&id),
        )
        .await;
        let latency = t0.elapsed();
        worst = worst.max(latency);
        println!(
            "round {round}: enqueue on A -> task.queued frame on B after {latency:?} \
             (A answered the enqueue after {answered:?})"
        );
    }
    println!("worst A->B socket latency: {worst:?}");

    let frame = sock.frames.last().unwrap().clone();
    let mut keys: Vec<&str> = frame
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["id", "occurred_at", "payload", "subject_id", "type"],
        "{frame}"
    );
    assert_eq!(frame["type"], "task.queued");
    assert_eq!(frame["payload"]["task_id"], frame["subject_id"]);
    let frames = sock.close().await;
    assert_eq!(
        frames,
        settled_events_after(&a, &ws, start).await,
        "B's socket carries the log"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Frames come in log order, never repeat, and a socket only sees its own workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_arrive_in_log_order_and_only_for_the_workspace() {
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws1 = a.workspace().await;
    let ws2 = a.workspace().await;
    let (rt1, ag1) = runtime_and_agent(&a, &ws1, "d1", 5).await;
    let (rt2, ag2) = runtime_and_agent(&b, &ws2, "d2", 5).await;
    let start1 = last_event_id(&a, &ws1).await;
    let start2 = last_event_id(&a, &ws2).await;
    // Workspace 1 watches on A, workspace 2 on B; both see writes from both replicas.
    let mut s1 = Socket::open(&a, &ws1.member, Some(start1)).await;
    let mut s2 = Socket::open(&b, &ws2.member, Some(start2)).await;

    // Activity in both workspaces at once: enqueues, a multi-task claim (several events in one
    // transaction), starts and completions.
    async fn activity(w: &TestApp, r: &TestApp, ws: &Ws, rt: &str, agent: &str) {
        for i in 0..6 {
            let app = if i % 2 == 0 { w } else { r };
            enqueue_id(app, ws, agent).await;
        }
        let claimed = r.claim(ws, rt, 5, 0).await;
        let tasks = claimed["tasks"].as_array().unwrap().clone();
        assert_eq!(tasks.len(), 5, "{claimed}");
        for t in tasks {
            let id = t["task_id"].as_str().unwrap();
            let attempt = &t["attempt_id"];
            let s = w
                .report(ws, id, "start", json!({ "attempt_id": attempt }))
                .await;
            assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
            let c = r
                .report(
                    ws,
                    id,
                    "complete",
                    json!({ "attempt_id": attempt, "result": {} }),
                )
                .await;
            assert_eq!(c.status, StatusCode::OK, "{:?}", c.body);
        }
    }
    tokio::join!(
        activity(&a, &b, &ws1, &rt1, &ag1),
        activity(&b, &a, &ws2, &rt2, &ag2)
    );

    let all2 = settled_events_after(&a, &ws2, start2).await;
    s2.wait_for_id(
        Duration::from_secs(5),
        "workspace 2's last event",
        fid(all2.last().unwrap()),
    )
    .await;
    // One more event of workspace 1 after everything of workspace 2 has been fanned out: once it
    // arrives, s1's session has passed (and must have filtered) all of workspace 2's events.
    enqueue_id(&b, &ws1, &ag1).await;
    let all1 = settled_events_after(&a, &ws1, start1).await;
    s1.wait_for_id(
        Duration::from_secs(5),
        "workspace 1's last event",
        fid(all1.last().unwrap()),
    )
    .await;
    s1.sync().await;
    s2.sync().await;
    let f1 = s1.close().await;
    let f2 = s2.close().await;

    let ids2: HashSet<i64> = ids(&all2).into_iter().collect();
    let leaked: Vec<i64> = ids(&f1).into_iter().filter(|i| ids2.contains(i)).collect();
    assert!(
        leaked.is_empty(),
        "workspace 1's socket got workspace 2's events {leaked:?}"
    );
    assert_no_duplicate_ids(&f1);
    assert_no_duplicate_ids(&f2);
    assert_eq!(
        ids(&f1),
        ids(&all1),
        "workspace 1's socket carries exactly its log"
    );
    assert_eq!(f1, all1);
    assert_eq!(
        ids(&f2),
        ids(&all2),
        "workspace 2's socket carries exactly its log"
    );
    assert_eq!(f2, all2);

    let ws1_id: Uuid = ws1.id.parse().unwrap();
    let ws2_id: Uuid = ws2.id.parse().unwrap();
    let pos1 = positions(&a.pool, &ids(&f1)).await;
    assert!(pos1.values().all(|(w, _)| *w == ws1_id));
    let pos2 = positions(&a.pool, &ids(&f2)).await;
    assert!(pos2.values().all(|(w, _)| *w == ws2_id));
    let multi1 = assert_log_order(&f1, &pos1);
    let multi2 = assert_log_order(&f2, &pos2);
    assert!(
        multi1 >= 1 && multi2 >= 1,
        "the claim wrote several events in one transaction"
    );
    println!(
        "ws1: {} frames ({multi1} multi-event transactions); ws2: {} frames ({multi2})",
        f1.len(),
        f2.len()
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A client that reconnects with `?after=<last id>` first receives everything it missed, then
/// live events, with neither gap nor duplicate at the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_after_cursor_replays_exactly_the_missed_events() {
    let app = Arc::new(TestApp::spawn().await);
    // The client reconnects through another replica, as behind a load balancer.
    let b = Arc::new(app.replica(|_| {}).await);
    let ws = app.workspace().await;
    let (_rt, agent) = runtime_and_agent(&app, &ws, "d1", 1).await;
    let start = last_event_id(&app, &ws).await;

    // Live for a while.
    let mut first = Socket::open(&app, &ws.member, Some(start)).await;
    let mut live_tasks = Vec::new();
    for _ in 0..3 {
        live_tasks.push(enqueue_id(&app, &ws, &agent).await);
    }
    first
        .wait_for(Duration::from_secs(5), "three live task.queued", |f| {
            queued(f).len() >= 3
        })
        .await;
    let before = first.close().await;
    assert_eq!(queued(&before), live_tasks);
    let last = fid(before.last().unwrap());

    // Missed while disconnected.
    let mut missed_tasks = Vec::new();
    for _ in 0..10 {
        missed_tasks.push(enqueue_id(&app, &ws, &agent).await);
    }
    let missed = settled_events_after(&app, &ws, last).await;
    assert_eq!(queued(&missed), missed_tasks);

    // A writer keeps enqueueing while the client reconnects.
    let halt = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (apps, ws, agent) = ([app.clone(), b.clone()], ws.clone(), agent.clone());
        let (halt, made) = (halt.clone(), made.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !halt.load(Ordering::Acquire) && ids.len() < 500 {
                ids.push(enqueue_id(&apps[ids.len() % 2], &ws, &agent).await);
                made.fetch_add(1, Ordering::AcqRel);
            }
            ids
        })
    };
    let m = made.clone();
    eventually(
        Duration::from_secs(5),
        "the writer has started",
        move || {
            let m = m.clone();
            async move { m.load(Ordering::Acquire) >= 3 }
        },
    )
    .await;
    let mut second = Socket::open(&b, &ws.member, Some(last)).await;
    let at_reconnect = made.load(Ordering::Acquire);
    let m = made.clone();
    eventually(
        Duration::from_secs(5),
        "the writer has enqueued more since the reconnect",
        move || {
            let m = m.clone();
            async move { m.load(Ordering::Acquire) >= at_reconnect + 5 }
        },
    )
    .await;
    halt.store(true, Ordering::Release);
    let written = writer.await.unwrap();

    let all = settled_events_after(&app, &ws, start).await;
    second
        .wait_for_id(
            Duration::from_secs(10),
            "the newest event",
            fid(all.last().unwrap()),
        )
        .await;
    second.sync().await;
    let after = second.close().await;

    assert!(after.len() >= missed.len());
    assert_eq!(
        ids(&after[..missed.len()]),
        ids(&missed),
        "the replay starts with exactly the missed events"
    );
    assert_eq!(&after[..missed.len()], &missed[..]);

    let union: Vec<Value> = before.iter().chain(after.iter()).cloned().collect();
    assert_no_duplicate_ids(&union);
    assert_eq!(
        ids(&union),
        ids(&all),
        "frames before and after the reconnect are the log, each exactly once"
    );
    assert_eq!(union, all);
    let mut want = live_tasks;
    want.extend(missed_tasks);
    want.extend(written.iter().cloned());
    assert_eq!(queued(&union), want);
    println!(
        "resume: {} before, {} missed, {} written by the concurrent writer ({} of them before the \
         reconnect), {} after",
        before.len(),
        missed.len(),
        written.len(),
        at_reconnect,
        after.len()
    );
    stop(b).await;
    stop(app).await;
}

/// Concurrent writers on both replicas: the socket gets every event exactly once (the horizon
/// keeps a reader from passing a row whose transaction commits late).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_lose_an_event_on_the_socket() {
    let _quiet = QUIET.lock().await;
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.replica(|_| {}).await);
    let ws = a.workspace().await;
    let (_rt, agent) = runtime_and_agent(&a, &ws, "d1", 1).await;
    let start = last_event_id(&a, &ws).await;
    let mut sock = Socket::open(&a, &ws.member, Some(start)).await;

    let t0 = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let app = if w % 2 == 0 { a.clone() } else { b.clone() };
            let (ws, agent) = (ws.clone(), agent.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..EACH {
                    ids.push(enqueue_id(&app, &ws, &agent).await);
                }
                ids
            })
        })
        .collect();
    let mut tasks = HashSet::new();
    for w in writers {
        for id in w.await.unwrap() {
            assert!(tasks.insert(id));
        }
    }
    let written = t0.elapsed();
    assert_eq!(tasks.len(), WRITERS * EACH);

    let waited = sock
        .wait_for(
            Duration::from_secs(15),
            "every task.queued on A's socket",
            |f| queued(f).len() >= WRITERS * EACH,
        )
        .await;
    sock.sync().await;
    let frames = sock.close().await;
    println!(
        "{} enqueues on A and B in {written:?}; the socket had them all {waited:?} later",
        tasks.len()
    );

    assert_no_duplicate_ids(&frames);
    let got = queued(&frames);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &got {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in &tasks {
        assert_eq!(
            counts.get(id.as_str()).copied().unwrap_or(0),
            1,
            "task.queued of {id}"
        );
    }
    assert_eq!(got.len(), tasks.len(), "no task.queued beyond the enqueues");
    let all = settled_events_after(&a, &ws, start).await;
    assert_eq!(ids(&frames), ids(&all), "the socket carries the log");
    let pos = positions(&a.pool, &ids(&frames)).await;
    assert_log_order(&frames, &pos);
    let inversions = frames
        .windows(2)
        .filter(|w| fid(&w[1]) < fid(&w[0]))
        .count();
    println!(
        "log order (xact_id, id) held; {inversions} places where a frame's id is below its predecessor's"
    );
    stop(b).await;
    stop(a).await;
}

/// A long-poll claim on B is woken by an enqueue on A (and the other way round).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_wakes_across_replicas() {
    let _quiet = QUIET.lock().await;
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.replica(|_| {}).await);
    let ws = a.workspace().await;
    let (rt, agent) = runtime_and_agent(&a, &ws, "d1", 10).await;

    let rounds = [
        (&b, &a, "claim on B, enqueue on A"),
        (&b, &a, "claim on B, enqueue on A"),
        (&b, &a, "claim on B, enqueue on A"),
        (&a, &b, "claim on A, enqueue on B"),
        (&a, &b, "claim on A, enqueue on B"),
    ];
    for (claim_on, enqueue_on, what) in rounds {
        let mut claimer = {
            let (app, ws, rt) = (claim_on.clone(), ws.clone(), rt.clone());
            tokio::spawn(async move {
                let reply = app.claim(&ws, &rt, 1, 10_000).await;
                (reply, Instant::now())
            })
        };
        // The long poll is holding: nothing to claim yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut claimer)
                .await
                .is_err(),
            "{what}: the claim returned before anything was enqueued"
        );
        let t0 = Instant::now();
        let id = enqueue_id(enqueue_on, &ws, &agent).await;
        let answered = Instant::now();
        let (reply, returned) = tokio::time::timeout(Duration::from_secs(5), claimer)
            .await
            .unwrap_or_else(|_| panic!("{what}: the claim was not woken within 5 s"))
            .unwrap();
        assert_eq!(reply["tasks"][0]["task_id"], id.as_str(), "{reply}");
        let latency = returned.saturating_duration_since(answered);
        println!(
            "{what}: claim returned {latency:?} after the enqueue response \
             ({:?} after the enqueue request)",
            returned - t0
        );
        assert!(
            latency < Duration::from_millis(500),
            "{what}: claim returned {latency:?} after the enqueue"
        );
    }
    stop(b).await;
    stop(a).await;
}

/// 300 tasks, 12 claimers on two runtimes through both replicas: every task claimed exactly once
/// and completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_across_both_replicas_never_double_dispatch() {
    let _quiet = QUIET.lock().await;
    const TASKS: usize = 300;
    const CLAIMERS: usize = 12;
    let a = Arc::new(TestApp::spawn().await);
    let b = Arc::new(a.replica(|_| {}).await);
    let ws = a.workspace().await;
    let (rt1, ag1) = runtime_and_agent(&a, &ws, "d1", 50).await;
    let (rt2, ag2) = runtime_and_agent(&b, &ws, "d2", 50).await;
    let apps = [a.clone(), b.clone()];
    let runtimes = [rt1, rt2];
    let agents = [ag1, ag2];

    let claims: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let completed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(40);
    let t0 = Instant::now();

    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let app = apps[(i / 2) % 2].clone();
            let rt = runtimes[i % 2].clone();
            let ws = ws.clone();
            let (claims, errors, completed) = (claims.clone(), errors.clone(), completed.clone());
            tokio::spawn(async move {
                while completed.load(Ordering::Acquire) < TASKS && Instant::now() < deadline {
                    let reply = app.claim(&ws, &rt, 5, 300).await;
                    for t in reply["tasks"].as_array().unwrap() {
                        let id = t["task_id"].as_str().unwrap().to_owned();
                        let attempt = t["attempt_id"].as_str().unwrap().to_owned();
                        claims
                            .lock()
                            .unwrap()
                            .entry(id.clone())
                            .or_default()
                            .push(attempt.clone());
                        let r = app
                            .report(&ws, &id, "start", json!({ "attempt_id": attempt }))
                            .await;
                        if r.status != StatusCode::OK {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("start {id}: {} {}", r.status, r.body));
                            continue;
                        }
                        let r = app
                            .report(
                                &ws,
                                &id,
                                "complete",
                                json!({ "attempt_id": attempt, "result": { "by": i } }),
                            )
                            .await;
                        if r.status == StatusCode::OK && r.body["status"] == "completed" {
                            completed.fetch_add(1, Ordering::AcqRel);
                        } else {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("complete {id}: {} {}", r.status, r.body));
                        }
                    }
                }
            })
        })
        .collect();

    // Enqueue through both replicas while the claimers run.
    let enqueuers: Vec<_> = (0..10)
        .map(|e| {
            let (ws, apps, agents) = (ws.clone(), apps.clone(), agents.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..TASKS / 10 {
                    let app = &apps[(e + k) % 2];
                    ids.push(enqueue_id(app, &ws, &agents[k % 2]).await);
                }
                ids
            })
        })
        .collect();
    drop(apps);
    let mut enqueued = HashSet::new();
    for e in enqueuers {
        enqueued.extend(e.await.unwrap());
    }
    assert_eq!(enqueued.len(), TASKS);
    for c in claimers {
        c.await.unwrap();
    }
    println!(
        "{TASKS} tasks enqueued, claimed, started and completed by {CLAIMERS} claimers in {:?}",
        t0.elapsed()
    );

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "reports failed: {errors:#?}");
    let claims = claims.lock().unwrap().clone();
    let doubles: Vec<_> = claims.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(doubles.is_empty(), "dispatched more than once: {doubles:?}");
    let claimed: HashSet<String> = claims.keys().cloned().collect();
    assert_eq!(claimed, enqueued, "every task claimed");
    assert_eq!(completed.load(Ordering::Acquire), TASKS);

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
            .fetch_all(&a.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![("completed".to_owned(), TASKS as i64)]);
    let (dispatched, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT subject_id) FROM events WHERE type = 'task.dispatched'",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!((dispatched, distinct), (TASKS as i64, TASKS as i64));
    stop(b).await;
    stop(a).await;
}

async fn listen_pids(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = current_database()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The listener's connection dies: it reconnects, and the reader catches up without skipping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_reconnects_and_catches_up() {
    let _quiet = QUIET.lock().await;
    let a = TestApp::spawn().await;
    let b = a.replica(|_| {}).await;
    let ws = a.workspace().await;
    let (_rt, agent) = runtime_and_agent(&a, &ws, "d1", 1).await;
    let pool = a.pool.clone();
    eventually(Duration::from_secs(5), "both replicas LISTEN", || async {
        listen_pids(&pool).await.len() >= 2
    })
    .await;
    let start = last_event_id(&b, &ws).await;
    let mut sock = Socket::open(&b, &ws.member, Some(start)).await;

    let killed: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query ILIKE 'LISTEN%' AND datname = current_database()",
    )
    .fetch_all(&a.pool)
    .await
    .unwrap();
    assert!(
        killed.len() >= 2 && killed.iter().all(|(_, ok)| *ok),
        "{killed:?}"
    );
    let old: HashSet<i32> = killed.iter().map(|(p, _)| *p).collect();

    // Written on A right away, while the listeners are (re)connecting.
    let t0 = Instant::now();
    let mut down = Vec::new();
    for _ in 0..5 {
        down.push(enqueue_id(&a, &ws, &agent).await);
    }
    let waited = sock
        .wait_for(
            Duration::from_secs(3),
            "events written on A while the listeners were cut",
            |f| {
                let q = queued(f);
                down.iter().all(|id| q.contains(id))
            },
        )
        .await;
    println!(
        "after killing the LISTEN backends: 5 enqueues on A reached B's socket {:?} after the first \
         ({waited:?} after the last enqueue returned)",
        t0.elapsed()
    );

    eventually(
        Duration::from_secs(5),
        "both listeners LISTEN again on new connections",
        || {
            let (pool, old) = (pool.clone(), old.clone());
            async move {
                listen_pids(&pool)
                    .await
                    .iter()
                    .filter(|p| !old.contains(p))
                    .count()
                    >= 2
            }
        },
    )
    .await;

    // After the reconnect: prompt again.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let id = enqueue_id(&a, &ws, &agent).await;
        sock.wait_for(
            Duration::from_secs(3),
            "an event after the reconnect",
            |f| queued(f).contains(&id),
        )
        .await;
        worst = worst.max(t.elapsed());
    }
    println!("after the listeners reconnected: worst A->B socket latency {worst:?}");

    let all = settled_events_after(&a, &ws, start).await;
    sock.wait_for_id(
        Duration::from_secs(3),
        "the newest event",
        fid(all.last().unwrap()),
    )
    .await;
    sock.sync().await;
    let frames = sock.close().await;
    assert_no_duplicate_ids(&frames);
    assert_eq!(
        ids(&frames),
        ids(&all),
        "nothing skipped across the reconnect"
    );
    assert_eq!(frames, all);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Slow clients are dropped (close 1008/1013), never allowed to grow server memory without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_client_is_dropped_not_buffered() {
    const BATCHES: usize = 12;
    const PER_BATCH: i64 = 1000;
    const PAD: i32 = 2000;
    let _quiet = QUIET.lock().await;
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let (_rt, agent) = runtime_and_agent(&app, &ws, "d1", 1).await;
    let start = last_event_id(&app, &ws).await;

    // Subscribed, then never read while the flood comes.
    let mut slow = Socket::open(&app, &ws.member, Some(start)).await;

    // 12,000 events of ~2 KB (24 MB of frames, far beyond what the socket buffers hold) written
    // straight into the log in short transactions, then a wake-up.
    let ws_id: Uuid = ws.id.parse().unwrap();
    let t0 = Instant::now();
    let mut max_id = 0i64;
    for _ in 0..BATCHES {
        max_id = sqlx::query_scalar(
            "WITH ins AS (
                 INSERT INTO events (workspace_id, type, subject_id, payload)
                 SELECT $1, 'task.updated', gen_random_uuid(),
                        jsonb_build_object('n', g, 'notify', false, 'pad', repeat('x', $3))
                 FROM generate_series(1, $2) g
                 RETURNING id)
             SELECT max(id) FROM ins",
        )
        .bind(ws_id)
        .bind(PER_BATCH)
        .bind(PAD)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_notify('paddock_events', $1)")
        .bind(max_id.to_string())
        .execute(&app.pool)
        .await
        .unwrap();
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM events WHERE workspace_id = $1 AND id > $2 ORDER BY xact_id, id",
    )
    .bind(ws_id)
    .bind(start)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // `start` may trail the log by an event still above the commit horizon when it was read.
    assert!(expected.len() >= BATCHES * PER_BATCH as usize);
    println!("wrote {} events in {:?}", expected.len(), t0.elapsed());

    // A witness on the same replica resumes after the flood, so it skips the flood's live events
    // (cheaply, without sending them) and cannot fall behind. Once it has a task enqueued after the
    // flood, the replica has fanned out all 12,000 events: the slow session, stuck on a full socket
    // a couple of thousand frames in, is far more than the 4096-event backlog behind.
    let mut witness = Socket::open(&app, &ws.member, Some(max_id)).await;
    let marker = enqueue_id(&app, &ws, &agent).await;
    let fanned = witness
        .wait_for(
            Duration::from_secs(20),
            "the replica to fan out the flood and the marker",
            |f| queued(f).contains(&marker),
        )
        .await;
    assert_eq!(
        witness.frames.len(),
        1,
        "a client resuming after the flood gets none of it"
    );
    println!(
        "the replica fanned out the flood {:?} after the writes began ({fanned:?} after the marker)",
        t0.elapsed()
    );

    // Now read the slow socket: what the network buffered, then the end of the stream.
    // Frames that arrived before the socket answered its opening ping were read by `open`.
    let (drained, how) = drain_ids(&mut slow.s, Duration::from_secs(30), Some(max_id)).await;
    let got: Vec<i64> = slow.frames.iter().map(fid).chain(drained).collect();
    println!(
        "slow socket: {} of {} events, then {how:?} ({:?} after the writes began)",
        got.len(),
        expected.len(),
        t0.elapsed()
    );
    match &how {
        End::CloseFrame(Some(code)) => assert!(
            *code == 1013 || *code == 1008,
            "slow client closed with {code}, want 1013 or 1008"
        ),
        End::CloseFrame(None) | End::Eof | End::Failed(_) => {}
        End::Reached => panic!(
            "the slow client got all {} events: it was buffered for, not dropped",
            got.len()
        ),
        End::TimedOut => panic!(
            "the slow client was neither served nor dropped within 30 s ({} events)",
            got.len()
        ),
    }
    assert!(got.len() < expected.len());
    assert_eq!(
        got[..],
        expected[..got.len()],
        "a dropped client got a gapless prefix of the log"
    );
    drop(slow);

    // The server is healthy and keeps serving live events.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let id = enqueue_id(&app, &ws, &agent).await;
    witness
        .wait_for(Duration::from_secs(5), "a live event after the drop", |f| {
            queued(f).contains(&id)
        })
        .await;
    witness.close().await;
    // The dropped client resumes where it stopped.
    let resume_after = got.last().copied().unwrap_or(start);
    let mut resumed = dial(&app, Some(&ws.member), Some(resume_after))
        .await
        .expect("resume");
    let (next, _) = drain_ids(
        &mut resumed,
        Duration::from_secs(5),
        Some(expected[got.len()]),
    )
    .await;
    assert_eq!(
        next.first(),
        Some(&expected[got.len()]),
        "resume continues right after the last frame received"
    );
    drop(resumed);
    app.stop().await.unwrap();
}
