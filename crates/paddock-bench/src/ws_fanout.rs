//! `bench ws`: event fan-out to WebSocket clients over two replicas.
//!
//! Two servers (processes of their own) on the same database; W workspaces with one runtime and
//! agent each; S event-stream sockets (`GET /api/v1/ws`), spread evenly over the workspaces and
//! alternately over the two replicas. For `--seconds`, tasks are enqueued through the first
//! replica at `--rate` per second (batches every 10 ms, workspaces in turn), each commit writing one
//! `task.queued`. Every socket that watches the task's workspace records when the event arrived:
//! latency from the enqueue's answer (the commit happened before it) and, as an upper bound, from
//! the request being sent. Printed: p50/p99 of both, per replica (the second replica's events come
//! through the cross-replica feed), and how many frames arrived of those expected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use uuid::Uuid;

use super::harness::{BenchDb, Server, Services, Workspace, settings};
use super::stats::{Latencies, Summary, progress};

const P99_TARGET_MS: f64 = 50.0;

#[derive(Args, Debug)]
pub struct WsArgs {
    /// Event-stream sockets, half on each replica.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Workspaces the sockets and the events are spread over (1: every socket sees every event).
    #[arg(long, default_value_t = 100)]
    workspaces: usize,
    /// Events (enqueued tasks) per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long events are sent.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
}

/// When a task's enqueue was sent and answered.
type Sent = Arc<Mutex<HashMap<Uuid, (Instant, Instant)>>>;

#[derive(Default, Clone)]
struct Seen {
    from_answer: Latencies,
    from_send: Latencies,
}

pub async fn run(services: &Services, db: &BenchDb, args: &WsArgs) -> anyhow::Result<Summary> {
    ensure!(
        args.workspaces >= 1 && args.sockets >= 1,
        "need a socket and a workspace"
    );
    let mut cfg = settings(services, db);
    let cap = (args.sockets + 16).to_string();
    cfg.env
        .push(("PADDOCK_WS_MAX_PER_TOKEN".into(), cap.clone()));
    cfg.env.push(("PADDOCK_WS_MAX_PER_WORKSPACE".into(), cap));
    let a = Server::start(cfg.clone()).await?;
    let b = Server::start(cfg).await?;

    let bar = progress(Some(args.workspaces as u64), "workspaces");
    let mut spaces: Vec<(Workspace, Uuid)> = Vec::new();
    for w in 0..args.workspaces {
        let ws = a.workspace().await?;
        let reg: Value = a
            .api
            .post(
                "/api/v1/daemon/register",
                &ws.daemon,
                &json!({ "daemon_id": format!("ws-{w}"), "provider": "bench" }),
            )
            .await?;
        let agent: Value = a
            .api
            .post(
                "/api/v1/agents",
                &ws.member,
                &json!({ "name": "fanout", "runtime_id": reg["runtime_id"], "definition": {} }),
            )
            .await?;
        let agent: Uuid = serde_json::from_value(agent["id"].clone()).context("agent id")?;
        spaces.push((ws, agent));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let sent: Sent = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let bar = progress(Some(args.sockets as u64), "sockets");
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..args.sockets {
        let (ws, _) = &spaces[i % args.workspaces];
        let server = if i % 2 == 0 { &a } else { &b };
        let mut req = format!("ws://{}/api/v1/ws", server.addr).into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", ws.member))?,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("opening a socket")?;
        let (sent, stop) = (sent.clone(), stop.clone());
        readers.spawn(async move {
            let mut seen = Seen::default();
            let mut frames = 0u64;
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = socket.next() => m,
                };
                let Some(Ok(msg)) = msg else { break };
                let at = Instant::now();
                let Ok(text) = msg.to_text() else { continue };
                let Ok(f) = serde_json::from_str::<Frame>(text) else {
                    continue;
                };
                if f.kind != "task.queued" {
                    continue;
                }
                let Some(id) = f.payload["task_id"].as_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let times = sent.lock().expect("sent").get(&id).copied();
                if let Some((send, answer)) = times {
                    seen.from_send.record(at.saturating_duration_since(send));
                    seen.from_answer
                        .record(at.saturating_duration_since(answer));
                    frames += 1;
                }
            }
            (i % 2, seen, frames)
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Let the sockets' subscriptions settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let per_tick = (args.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let mut enqueued = 0u64;
    let mut expected = 0u64;
    let mut w = 0usize;
    let bar = progress(None, "events");
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let (ws, agent) = &spaces[w % args.workspaces];
        w += 1;
        let tasks: Vec<Value> = (0..per_tick)
            .map(|_| json!({ "agent_id": agent, "payload": {} }))
            .collect();
        let send = Instant::now();
        let r: Value = a
            .api
            .post(
                "/api/v1/tasks/batch",
                &ws.member,
                &json!({ "tasks": tasks }),
            )
            .await?;
        let answer = Instant::now();
        let mut sent = sent.lock().expect("sent");
        for item in r["results"].as_array().context("batch results")? {
            let id: Uuid = serde_json::from_value(item["task"]["id"].clone())?;
            sent.insert(id, (send, answer));
        }
        drop(sent);
        let watchers = (0..args.sockets)
            .filter(|i| i % args.workspaces == (w - 1) % args.workspaces)
            .count() as u64;
        enqueued += per_tick;
        expected += per_tick * watchers;
        bar.inc(per_tick);
    }
    let sending = t0.elapsed();
    bar.finish_and_clear();
    // The last events' frames.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut by_replica = [Seen::default(), Seen::default()];
    let mut frames = 0;
    while let Some(r) = readers.join_next().await {
        let (replica, seen, n) = r.context("a socket reader panicked")?;
        by_replica[replica].from_answer.merge(&seen.from_answer);
        by_replica[replica].from_send.merge(&seen.from_send);
        frames += n;
    }
    a.stop().await?;
    b.stop().await?;

    let mut all = Seen::default();
    for s in &by_replica {
        all.from_answer.merge(&s.from_answer);
        all.from_send.merge(&s.from_send);
    }
    let rate = enqueued as f64 / sending.as_secs_f64();
    let mut s = Summary::new(format!(
        "ws: {} sockets over 2 replicas and {} workspaces, {rate:.0} events/s for {:.1} s ({:.0} frames/s out)",
        args.sockets,
        args.workspaces,
        sending.as_secs_f64(),
        frames as f64 / sending.as_secs_f64()
    ));
    for (name, seen) in [
        ("both replicas", &all),
        ("replica A (the writer)", &by_replica[0]),
        ("replica B (cross-replica feed)", &by_replica[1]),
    ] {
        s.line(format!(
            "  {name:<31} commit → socket p50 {:.1} ms  p99 {:.1} ms  (from the request: p50 {:.1}  p99 {:.1})",
            seen.from_answer.ms(0.5),
            seen.from_answer.ms(0.99),
            seen.from_send.ms(0.5),
            seen.from_send.ms(0.99)
        ));
    }
    s.line(format!(
        "  frames received {frames} of {expected} expected; target p99 < {P99_TARGET_MS} ms: {}",
        if all.from_answer.ms(0.99) < P99_TARGET_MS {
            "met"
        } else {
            "missed"
        }
    ));
    s.num("events_per_sec", rate);
    s.num("p50_ms", all.from_answer.ms(0.5));
    s.num("p99_ms", all.from_answer.ms(0.99));
    s.num("p99_from_request_ms", all.from_send.ms(0.99));
    s.num("replica_b_p99_ms", by_replica[1].from_answer.ms(0.99));
    s.int("frames", frames);
    s.int("frames_expected", expected);
    s.int("sockets", args.sockets as u64);
    s.int("workspaces", args.workspaces as u64);
    Ok(s)
}
