//! `bench slow-readers`: what WebSocket clients that never read cost the server.
//!
//! One server in a process of its own; one running task. Two phases, same run: first R progress
//! reports of S bytes each go out with no socket open (the baseline), then the same reports while W
//! event-stream sockets are open and never read a byte. In each phase a probe calls the API
//! (`GET /api/v1/runtimes`) every 5 ms. Printed: the server's peak resident memory in each phase and
//! the difference, what the sockets added (target < 300 MB at W = 1000, R = 100, S = 1 MB), the
//! probe's and the reports' p99 in both phases and their ratio (target ≤ 2×), and
//! how many sockets the server closed.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::harness::{BenchDb, Server, Services, Workspace, settings};
use super::stats::{Latencies, Summary, ratio};

const RSS_TARGET_MB: f64 = 300.0;
const P99_TARGET_RATIO: f64 = 2.0;

#[derive(Args, Debug)]
pub struct SlowReadersArgs {
    /// Event-stream sockets that never read (second phase).
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Progress reports sent in each phase.
    #[arg(long, default_value_t = 100)]
    reports: usize,
    /// Bytes of each report's progress.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: usize,
}

struct Phase {
    rss0_mb: f64,
    sockets_mb: f64,
    peak_mb: f64,
    probe: Latencies,
    reports: Latencies,
    closed: usize,
}

pub async fn run(
    services: &Services,
    db: &BenchDb,
    args: &SlowReadersArgs,
) -> anyhow::Result<Summary> {
    let mut cfg = settings(services, db);
    let cap = (args.sockets + 16).to_string();
    cfg.env
        .push(("PADDOCK_WS_MAX_PER_TOKEN".into(), cap.clone()));
    cfg.env.push(("PADDOCK_WS_MAX_PER_WORKSPACE".into(), cap));
    cfg.env.push((
        "PADDOCK_MAX_REQUEST_BODY".into(),
        format!("{}", args.bytes + (64 << 10)),
    ));
    let server = Server::start(cfg).await?;
    let ws = server.workspace().await?;
    let (task, attempt) = running_task(&server, &ws).await?;
    let pid = server.pid().context("the server exited")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;

    eprintln!(
        "bench: {} reports of {} bytes, first with no socket, then with {} slow readers",
        args.reports, args.bytes, args.sockets
    );
    let base = phase(&server, &http, &ws, &task, &attempt, pid, 0, args).await?;
    let slow = phase(
        &server,
        &http,
        &ws,
        &task,
        &attempt,
        pid,
        args.sockets,
        args,
    )
    .await?;
    server.stop().await?;

    let probe_ratio = ratio(slow.probe.ms(0.99), base.probe.ms(0.99));
    let report_ratio = ratio(slow.reports.ms(0.99), base.reports.ms(0.99));
    let mut s = Summary::new(format!(
        "slow readers: {} sockets that never read, {} progress reports of {} KiB",
        args.sockets,
        args.reports,
        args.bytes >> 10
    ));
    // The allocator keeps what the first phase's reports used, so the second phase starts higher:
    // the sockets' cost is the second phase's peak over the first's (the same reports went out).
    let added = slow.peak_mb - base.peak_mb;
    s.line(format!(
        "  server peak RSS     {:>8.1} MB with the sockets, {:>8.1} MB without   added {added:>6.1} MB   target < {RSS_TARGET_MB} MB   ratio {:.3}",
        slow.peak_mb,
        base.peak_mb,
        ratio(added.max(0.0), RSS_TARGET_MB)
    ));
    s.line(format!(
        "  (RSS at the start of each phase {:.1} / {:.1} MB; {:+.1} MB once the sockets were open)",
        base.rss0_mb, slow.rss0_mb, slow.sockets_mb
    ));
    s.line(format!(
        "  API probe p99       {:>8.2} ms with them, {:>8.2} ms without   ratio {probe_ratio:.2} (target ≤ {P99_TARGET_RATIO})",
        slow.probe.ms(0.99),
        base.probe.ms(0.99)
    ));
    s.line(format!(
        "  report p99          {:>8.2} ms with them, {:>8.2} ms without   ratio {report_ratio:.2}",
        slow.reports.ms(0.99),
        base.reports.ms(0.99)
    ));
    s.line(format!(
        "  sockets the server closed: {} of {}",
        slow.closed, args.sockets
    ));
    s.int("sockets", args.sockets as u64);
    s.num("rss_sockets_mb", slow.sockets_mb);
    s.num("peak_rss_mb", slow.peak_mb);
    s.num("peak_rss_without_mb", base.peak_mb);
    s.num("rss_added_mb", added);
    s.num("probe_p99_ms", slow.probe.ms(0.99));
    s.num("probe_p99_without_ms", base.probe.ms(0.99));
    s.num("probe_p99_ratio", probe_ratio);
    s.num("report_p99_ms", slow.reports.ms(0.99));
    s.num("report_p99_without_ms", base.reports.ms(0.99));
    s.int("sockets_closed", slow.closed as u64);
    Ok(s)
}

/// A runtime, an agent and a task claimed and started: (task id, attempt id).
async fn running_task(server: &Server, ws: &Workspace) -> anyhow::Result<(String, String)> {
    let reg: Value = server
        .api
        .post(
            "/api/v1/daemon/register",
            &ws.daemon,
            &json!({ "daemon_id": "slow-readers", "provider": "exec" }),
        )
        .await?;
    let rt = reg["runtime_id"].as_str().context("no runtime_id")?;
    let agent: Value = server
        .api
        .post(
            "/api/v1/agents",
            &ws.member,
            &json!({ "name": "bench", "runtime_id": rt, "definition": {} }),
        )
        .await?;
    let agent = agent["id"].as_str().context("no agent id")?;
    let task: Value = server
        .api
        .post(
            "/api/v1/tasks",
            &ws.member,
            &json!({ "agent_id": agent, "payload": {} }),
        )
        .await?;
    let task = task["id"].as_str().context("no task id")?.to_owned();
    let claim: Value = server
        .api
        .post(
            "/api/v1/daemon/claim",
            &ws.daemon,
            &json!({ "runtime_id": rt, "max_tasks": 1 }),
        )
        .await?;
    let attempt = claim["tasks"][0]["attempt_id"]
        .as_str()
        .context("nothing claimed")?
        .to_owned();
    let _: Value = server
        .api
        .post(
            &format!("/api/v1/tasks/{task}/start"),
            &ws.daemon,
            &json!({ "attempt_id": attempt }),
        )
        .await?;
    Ok((task, attempt))
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    server: &Server,
    http: &reqwest::Client,
    ws: &Workspace,
    task: &str,
    attempt: &str,
    pid: u32,
    sockets: usize,
    args: &SlowReadersArgs,
) -> anyhow::Result<Phase> {
    // What the phase before freed is given back to the OS first, so it does not count here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss0 = rss_mb(pid)?;
    let mut open = Vec::with_capacity(sockets);
    let bar = super::stats::progress(Some(sockets as u64), "sockets opened");
    for _ in 0..sockets {
        let mut req = format!("ws://{}/api/v1/ws", server.addr).into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", ws.member))?,
        );
        let (socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("opening a slow reader")?;
        open.push(socket);
        bar.inc(1);
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_mb(pid)?;

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let http = http.clone();
        let url = format!("http://{}/api/v1/runtimes?limit=1", server.addr);
        let token = ws.member.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut lat = Latencies::default();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(&token).send().await?;
                ensure!(r.status().is_success(), "probe answered {}", r.status());
                r.bytes().await?;
                lat.record(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, anyhow::Error>(lat)
        })
    };
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut max = 0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(rss_mb(pid).unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        })
    };
    let filler = "x".repeat(args.bytes);
    let mut reports = Latencies::default();
    let bar = super::stats::progress(Some(args.reports as u64), "progress reports");
    for i in 0..args.reports {
        let body = json!({ "attempt_id": attempt, "progress": { "i": i, "log": filler } });
        let t = Instant::now();
        let _: Value = server
            .api
            .post(&format!("/api/v1/tasks/{task}/progress"), &ws.daemon, &body)
            .await?;
        reports.record(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Let the events reach (or fail to reach) every socket.
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let probe = probe.await.context("the probe panicked")??;
    let max = sampler.await.context("the sampler panicked")?;

    // Sockets the server closed: past what is buffered, their close frame (or end) is readable.
    let closed = futures::future::join_all(open.into_iter().map(|mut s| async move {
        use futures::StreamExt;
        let closing = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match s.next().await {
                    None | Some(Err(_)) => return true,
                    Some(Ok(m)) if m.is_close() => return true,
                    Some(Ok(_)) => {}
                }
            }
        });
        matches!(closing.await, Ok(true))
    }))
    .await
    .into_iter()
    .filter(|&c| c)
    .count();
    Ok(Phase {
        rss0_mb: rss0,
        sockets_mb: rss1 - rss0,
        peak_mb: max.max(rss1),
        probe,
        reports,
        closed,
    })
}

/// The server's resident memory, in MB.
fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    Ok(super::daemon::status_kb(pid, "VmRSS")? as f64 / 1024.0)
}
