//! `bench daemon`: what an idle `paddock daemon` costs its machine.
//!
//! A server and one `paddock daemon` (the same binary) with every provider — `claude-code`,
//! `codex` and `exec`, one runtime each; the agent CLIs are never started, so `true` stands in for
//! them — are started; once every runtime is online and a warm-up has passed, the daemon's CPU time
//! (`/proc/<pid>/stat` utime + stime) and resident memory (`VmRSS`, peak `VmHWM`) are read over S
//! seconds while it long-polls for claims and heartbeats. The figures are printed beside the
//! budget (1 % of a core, 30 MB) as ratios, with the server's CPU over the same window for scale.
//! Then the daemon gets SIGTERM and must exit 0 having deregistered every runtime.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use sqlx::PgPool;
use uuid::Uuid;

use super::harness::{BenchDb, Server, Services, settings};
use super::stats::{Summary, ratio};

/// The budget the daemon is held to while idle (issue 15): a share of one core, and bytes resident.
const CPU_BUDGET_PCT: f64 = 1.0;
const RSS_BUDGET_MB: f64 = 30.0;

/// `/proc` reports CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    seconds: u64,
    /// Seconds between every runtime being online and the start of the measurement.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Providers the daemon registers, one runtime each.
    #[arg(long, value_delimiter = ',', default_value = "claude-code,codex,exec")]
    providers: Vec<String>,
    /// The daemon's `--max-concurrency` (slots per runtime; all idle).
    #[arg(long, default_value_t = 4)]
    max_concurrency: u32,
}

pub async fn run(services: &Services, db: &BenchDb, args: &DaemonArgs) -> anyhow::Result<Summary> {
    ensure!(!args.providers.is_empty(), "--providers names none");
    let server = Server::start(settings(services, db)).await?;
    let ws = server.workspace().await?;
    let dir = std::env::temp_dir().join(format!("paddock-bench-daemon-{}", Uuid::new_v4()));
    let daemon_id = format!("bench-idle-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let mut daemon = spawn_daemon(services, &server, &ws.daemon, &dir, &daemon_id, args)?;
    let pid = daemon.id().context("the daemon exited at once")?;
    let pool = db.pool(2).await?;

    let t0 = Instant::now();
    let want = args.providers.len() as i64;
    while online(&pool, &daemon_id).await? < want {
        if let Some(status) = daemon.try_wait()? {
            bail!("the daemon exited before registering ({status})");
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the daemon's runtimes were not all online within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "bench: {want} runtime(s) online after {:.0} ms; warming up {} s, measuring {} s",
        t0.elapsed().as_secs_f64() * 1e3,
        args.warmup,
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let server_pid = server.pid().context("the server exited")?;
    let (d0, s0, m0) = (cpu_ticks(pid)?, cpu_ticks(server_pid)?, Instant::now());
    let mut rss_max = 0u64;
    let bar = super::stats::progress(Some(args.seconds), "idle seconds");
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(status_kb(pid, "VmRSS")?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (d1, s1, elapsed) = (cpu_ticks(pid)?, cpu_ticks(server_pid)?, m0.elapsed());
    let rss_last = status_kb(pid, "VmRSS")?;
    let hwm = status_kb(pid, "VmHWM")?;
    let threads = status_kb(pid, "Threads")?;

    // Graceful stop: exit 0 with every runtime deregistered.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .context("the daemon did not stop within 30 s of SIGTERM")??;
    ensure!(status.success(), "the daemon exited with {status}");
    let left = online(&pool, &daemon_id).await?;
    ensure!(
        left == 0,
        "{left} runtime(s) still online after the daemon stopped"
    );
    pool.close().await;
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);

    let secs = elapsed.as_secs_f64();
    let daemon_pct = (d1 - d0) as f64 / USER_HZ / secs * 100.0;
    let server_pct = (s1 - s0) as f64 / USER_HZ / secs * 100.0;
    let rss_mb = rss_max as f64 / 1024.0;
    let hwm_mb = hwm as f64 / 1024.0;
    let mut s = Summary::new(format!(
        "daemon idle: {want} runtime(s) ({}), max-concurrency {}, {} s measured (+{} s warm-up)",
        args.providers.join(", "),
        args.max_concurrency,
        args.seconds,
        args.warmup
    ));
    s.line(format!(
        "  daemon CPU        {daemon_pct:>8.3} % of a core   budget {CPU_BUDGET_PCT} %   ratio {:.3}",
        ratio(daemon_pct, CPU_BUDGET_PCT)
    ));
    s.line(format!(
        "  daemon RSS        {rss_mb:>8.1} MB (max; now {:.1}, peak {hwm_mb:.1})   budget {RSS_BUDGET_MB} MB   ratio {:.3}",
        rss_last as f64 / 1024.0,
        ratio(hwm_mb, RSS_BUDGET_MB)
    ));
    s.line(format!("  daemon threads    {threads:>8}"));
    s.line(format!(
        "  server CPU        {server_pct:>8.3} % of a core (same window, for scale)"
    ));
    s.line("  graceful stop: exit 0, every runtime deregistered".to_owned());
    s.int("runtimes", want as u64);
    s.num("daemon_cpu_pct", daemon_pct);
    s.num("daemon_rss_mb", rss_mb);
    s.num("daemon_peak_rss_mb", hwm_mb);
    s.int("daemon_threads", threads);
    s.num("server_cpu_pct", server_pct);
    s.num("cpu_budget_ratio", ratio(daemon_pct, CPU_BUDGET_PCT));
    s.num("rss_budget_ratio", ratio(hwm_mb, RSS_BUDGET_MB));
    Ok(s)
}

fn spawn_daemon(
    services: &Services,
    server: &Server,
    token: &str,
    dir: &Path,
    daemon_id: &str,
    args: &DaemonArgs,
) -> anyhow::Result<tokio::process::Child> {
    let state: PathBuf = dir.join("state");
    let work: PathBuf = dir.join("work");
    let mut cmd = tokio::process::Command::new(&services.server_bin);
    cmd.arg("daemon")
        .arg("--server")
        .arg(format!("http://{}", server.addr))
        .arg("--daemon-id")
        .arg(daemon_id)
        .arg("--max-concurrency")
        .arg(args.max_concurrency.to_string())
        .arg("--state-dir")
        .arg(&state)
        .arg("--work-root")
        .arg(&work);
    for p in &args.providers {
        cmd.arg("--provider").arg(p);
    }
    cmd.env("PADDOCK_DAEMON_TOKEN", token)
        .env("PADDOCK_CLAUDE_BIN", "true")
        .env("PADDOCK_CODEX_BIN", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("cannot start {} daemon", services.server_bin.display()))
}

/// The daemon's runtimes that are online.
async fn online(pool: &PgPool, daemon_id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM runtimes WHERE daemon_id = $1 AND status = 'online'",
    )
    .bind(daemon_id)
    .fetch_one(pool)
    .await?)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is this Linux?)"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let rest = &stat[stat.rfind(')').context("malformed /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("short /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).context("short /proc stat")?.parse()?;
    Ok(utime + stime)
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in kB; `Threads`).
pub(crate) fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}
