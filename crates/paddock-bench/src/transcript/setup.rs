//! The transcript scenario's set-up over HTTP: one runtime and one agent with room for A tasks, A
//! tasks enqueued, claimed and started, so that A attempts are running; and a heartbeat that keeps
//! the runtime online while they post.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Api, Server, Workspace};
use crate::stats::progress;

/// A running attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub task_id: Uuid,
    pub attempt_id: Uuid,
    pub attempt: i32,
}

pub struct Running {
    pub ws: Workspace,
    pub runtime: Uuid,
    /// In claim order.
    pub attempts: Vec<Attempt>,
}

#[derive(Deserialize)]
struct ClaimReply {
    tasks: Vec<ClaimedTask>,
}

#[derive(Deserialize)]
struct ClaimedTask {
    task_id: Uuid,
    attempt_id: Uuid,
    attempt: i32,
}

#[derive(Deserialize)]
struct ReportReply {
    results: Vec<ReportResult>,
}

#[derive(Deserialize)]
struct ReportResult {
    task_id: Uuid,
    status: u16,
}

/// Updates one `POST /daemon/report` may carry.
const REPORT_MAX: usize = 500;

/// A workspace, one runtime (`max_concurrency` n) with one agent (`max_concurrent_tasks` n), and n
/// tasks enqueued, claimed (≤ 100 a call) and started.
pub async fn running(server: &Server, n: u64) -> anyhow::Result<Running> {
    let api = &server.api;
    let ws = server.workspace().await?;
    let reg: Value = api
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            &json!({ "daemon_id": "bench-transcript", "provider": "bench", "max_concurrency": n }),
        )
        .await?;
    let runtime: Uuid = serde_json::from_value(reg["runtime_id"].clone())
        .context("register answered no runtime_id")?;
    let agent: Value = api
        .post(
            "/api/v1/agents",
            &ws.member,
            &json!({ "name": "bench-transcript", "runtime_id": runtime,
                     "max_concurrent_tasks": n, "definition": { "noop": true } }),
        )
        .await?;
    let agent: Uuid = serde_json::from_value(agent["id"].clone()).context("agent without id")?;

    let bar = progress(Some(n), "enqueue");
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let body = json!({ "agent_id": agent, "payload": { "transcript": i } });
            let token = &ws.member;
            async move {
                api.post::<serde::de::IgnoredAny>("/api/v1/tasks", token, &body)
                    .await
            }
        })
        .buffer_unordered(16);
    while let Some(res) = calls.next().await {
        res?;
        bar.inc(1);
    }
    drop(calls);
    bar.finish_and_clear();

    let mut attempts = Vec::with_capacity(n as usize);
    let since = Instant::now();
    while (attempts.len() as u64) < n {
        let want = (n - attempts.len() as u64).min(100);
        let reply: ClaimReply = api
            .post(
                "/api/v1/daemon/claim",
                &ws.daemon,
                &json!({ "runtime_id": runtime, "max_tasks": want, "wait_ms": 1000 }),
            )
            .await?;
        if reply.tasks.is_empty() && since.elapsed() > Duration::from_secs(30) {
            bail!("claimed only {} of {n} tasks in 30 s", attempts.len());
        }
        attempts.extend(reply.tasks.into_iter().map(|t| Attempt {
            task_id: t.task_id,
            attempt_id: t.attempt_id,
            attempt: t.attempt,
        }));
    }

    for chunk in attempts.chunks(REPORT_MAX) {
        let updates: Vec<Value> = chunk
            .iter()
            .map(|a| json!({ "task_id": a.task_id, "attempt_id": a.attempt_id, "action": "start" }))
            .collect();
        let res: ReportReply = api
            .post(
                "/api/v1/daemon/report",
                &ws.daemon,
                &json!({ "updates": updates }),
            )
            .await?;
        ensure!(
            res.results.len() == chunk.len(),
            "report answered {} results for {} updates",
            res.results.len(),
            chunk.len()
        );
        if let Some(bad) = res.results.iter().find(|r| r.status != 200) {
            bail!("start of task {} answered {}", bad.task_id, bad.status);
        }
    }
    Ok(Running {
        ws,
        runtime,
        attempts,
    })
}

/// Heartbeats the runtime every 10 s (well inside `stale_threshold`) until aborted, so that a long
/// run does not see it go offline and its attempts fail.
pub fn keep_online(api: Api, token: String, runtime: Uuid) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let body = json!({ "runtime_ids": [runtime] });
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if let Err(e) = api
                .post::<serde::de::IgnoredAny>("/api/v1/daemon/heartbeat", &token, &body)
                .await
            {
                eprintln!("bench: heartbeat of the transcript runtime failed: {e:#}");
            }
        }
    })
}
