//! The peer a scenario prints beside Paddock's figure: graphile-worker on the same PostgreSQL
//! server, run by `../shared/peers/run.sh` (or `--peers DIR`) as a process of its own after
//! Paddock's part of the run. When the peer is not there the scenario says so and prints its own
//! baseline only.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::harness::Services;

/// The peer's figure, as its JSON line gives it.
#[derive(Debug, Deserialize)]
pub struct PeerFigure {
    pub peer: String,
    pub version: String,
    pub seconds: f64,
    pub per_sec: f64,
}

/// Runs `run.sh <mode> <n> <k>` of the peers directory against the bench's PostgreSQL server.
/// None (with a note on stderr) when the directory has no `run.sh`.
pub async fn graphile(
    services: &Services,
    mode: &str,
    n: u64,
    k: u64,
) -> anyhow::Result<Option<PeerFigure>> {
    let Some(dir) = &services.peers_dir else {
        return Ok(None);
    };
    let script = dir.join("run.sh");
    if !script.is_file() {
        eprintln!(
            "bench: no peer at {} (pass --peers DIR); printing Paddock's own baseline only",
            script.display()
        );
        return Ok(None);
    }
    eprintln!(
        "bench: running the peer: {} {mode} {n} {k}",
        script.display()
    );
    run(
        &script,
        &services.database_url,
        &[mode, &n.to_string(), &k.to_string()],
    )
    .await
    .map(Some)
}

async fn run(script: &Path, database_url: &str, args: &[&str]) -> anyhow::Result<PeerFigure> {
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("the peer failed ({}): see its output above", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the peer printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("unexpected peer line: {line}"))
}
