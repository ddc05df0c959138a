//! Every setting of `paddock daemon` (DESIGN §11): flag, environment variable, default, and the
//! checks run once at start. A bad setting stops the daemon with a message that names it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::provider::ProviderKind;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// The flags of `paddock daemon`.
#[derive(Args, Clone, Debug)]
pub struct DaemonArgs {
    /// The server's base URL (`http://host:8080`, without `/api/v1`).
    #[arg(long, env = "PADDOCK_SERVER")]
    pub server: String,

    /// A daemon token of the workspace (`POST /workspaces/{id}/tokens {"kind": "daemon"}`).
    #[arg(long, env = "PADDOCK_DAEMON_TOKEN", hide_env_values = true)]
    pub token: String,

    /// This machine's id: one runtime per (daemon id, provider). Default: the host name.
    #[arg(long, env = "PADDOCK_DAEMON_ID")]
    pub daemon_id: Option<String>,

    /// A provider to run (`claude-code`, `codex`, `exec`); repeat it, or give a comma-separated
    /// list in the environment. Default: every provider whose CLI is on PATH.
    #[arg(long = "provider", env = "PADDOCK_PROVIDERS", value_delimiter = ',')]
    pub providers: Vec<String>,

    /// A label of this daemon's runtimes, `key=value`, that pools select by (an agent's
    /// `runtime_selector.labels`); repeat it, or give a comma-separated list in the environment.
    #[arg(long = "label", env = "PADDOCK_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Attempts each runtime runs at once (registered as the runtime's `max_concurrency`).
    #[arg(long, env = "PADDOCK_MAX_CONCURRENCY", default_value_t = 4)]
    pub max_concurrency: u32,

    /// Where the journal of reports lives (one daemon per state dir). Default: ~/.paddock/daemon.
    #[arg(long, env = "PADDOCK_DAEMON_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where attempts run: `<work root>/<task id>`, kept between attempts. Default: ~/.paddock/work.
    #[arg(long, env = "PADDOCK_WORK_ROOT")]
    pub work_root: Option<PathBuf>,

    /// How long a stopped agent gets between SIGTERM and SIGKILL.
    #[arg(long, env = "PADDOCK_KILL_GRACE", default_value = "10s", value_parser = duration)]
    pub kill_grace: Duration,

    /// On SIGTERM/SIGINT, how long running attempts may go on before they are stopped.
    #[arg(long, env = "PADDOCK_DRAIN_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// The Claude Code CLI.
    #[arg(long, env = "PADDOCK_CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,

    /// The Codex CLI.
    #[arg(long, env = "PADDOCK_CODEX_BIN", default_value = "codex")]
    pub codex_bin: PathBuf,

    /// Run what is claimable now, deliver every report, and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,

    /// How long each claim waits for work (long poll, at most 30s).
    #[arg(long, env = "PADDOCK_CLAIM_WAIT", default_value = "25s", value_parser = duration)]
    pub claim_wait: Duration,
}

/// A provider the daemon runs, and the CLI it starts for it.
#[derive(Clone, Debug)]
pub struct Provider {
    pub kind: ProviderKind,
    /// `None` for `exec` (the agent definition names the command).
    pub bin: Option<PathBuf>,
}

/// The settings, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub token: String,
    pub daemon_id: String,
    pub providers: Vec<Provider>,
    pub max_concurrency: u32,
    /// Registered with every runtime.
    pub labels: paddock_api::values::Labels,
    pub state_dir: PathBuf,
    pub work_root: PathBuf,
    pub kill_grace: Duration,
    pub drain_timeout: Duration,
    pub once: bool,
    pub claim_wait: Duration,
}

/// A setting that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {why}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub why: String,
}

fn bad(setting: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        why: why.into(),
    }
}

impl DaemonArgs {
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let server = self.server.trim_end_matches('/').to_owned();
        let url = server
            .parse::<url_lite::Url>()
            .map_err(|why| bad("--server (PADDOCK_SERVER)", why))?;
        if url.has_api_path {
            return Err(bad(
                "--server (PADDOCK_SERVER)",
                "give the base URL, without /api/v1",
            ));
        }
        if self.token.trim().is_empty() {
            return Err(bad("--token (PADDOCK_DAEMON_TOKEN)", "empty"));
        }
        if !(1..=1000).contains(&self.max_concurrency) {
            return Err(bad(
                "--max-concurrency (PADDOCK_MAX_CONCURRENCY)",
                format!("{} is not between 1 and 1000", self.max_concurrency),
            ));
        }
        if self.kill_grace.is_zero() {
            return Err(bad("--kill-grace (PADDOCK_KILL_GRACE)", "must be above 0"));
        }
        if self.claim_wait > Duration::from_secs(30) {
            return Err(bad("--claim-wait (PADDOCK_CLAIM_WAIT)", "at most 30s"));
        }
        let daemon_id = match self.daemon_id {
            Some(id) if !id.trim().is_empty() => id,
            Some(_) => return Err(bad("--daemon-id (PADDOCK_DAEMON_ID)", "empty")),
            None => hostname(),
        };
        let providers = providers(&self.providers, &self.claude_bin, &self.codex_bin)?;
        let mut labels = std::collections::BTreeMap::new();
        for l in &self.labels {
            let Some((k, v)) = l.split_once('=') else {
                return Err(bad(
                    "--label (PADDOCK_LABELS)",
                    format!("`{l}` is not key=value"),
                ));
            };
            labels.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let labels = paddock_api::values::Labels::try_from(labels)
            .map_err(|why| bad("--label (PADDOCK_LABELS)", why))?;
        let home = || std::env::var_os("HOME").map(PathBuf::from);
        let under_home = |sub: &str, setting: &'static str| {
            home()
                .map(|h| h.join(".paddock").join(sub))
                .ok_or_else(|| bad(setting, "HOME is not set: give the directory"))
        };
        let state_dir = match self.state_dir {
            Some(d) => d,
            None => under_home("daemon", "--state-dir (PADDOCK_DAEMON_STATE_DIR)")?,
        };
        let work_root = match self.work_root {
            Some(d) => d,
            None => under_home("work", "--work-root (PADDOCK_WORK_ROOT)")?,
        };
        std::fs::create_dir_all(&work_root).map_err(|e| {
            bad(
                "--work-root (PADDOCK_WORK_ROOT)",
                format!("{}: {e}", work_root.display()),
            )
        })?;
        Ok(Config {
            server,
            token: self.token,
            daemon_id,
            providers,
            max_concurrency: self.max_concurrency,
            labels,
            state_dir,
            work_root,
            kill_grace: self.kill_grace,
            drain_timeout: self.drain_timeout,
            once: self.once,
            claim_wait: self.claim_wait,
        })
    }
}

/// The providers named, or every one whose CLI is on PATH.
fn providers(named: &[String], claude: &Path, codex: &Path) -> Result<Vec<Provider>, ConfigError> {
    const SETTING: &str = "--provider (PADDOCK_PROVIDERS)";
    let bin_of = |kind: ProviderKind| match kind {
        ProviderKind::ClaudeCode => Some(claude.to_path_buf()),
        ProviderKind::Codex => Some(codex.to_path_buf()),
        ProviderKind::Exec => None,
    };
    let mut out: Vec<Provider> = Vec::new();
    let named: Vec<&str> = named
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if named.is_empty() {
        for kind in [ProviderKind::ClaudeCode, ProviderKind::Codex] {
            if let Some(bin) = bin_of(kind).and_then(|b| find_program(&b)) {
                out.push(Provider {
                    kind,
                    bin: Some(bin),
                });
            }
        }
        if out.is_empty() {
            return Err(bad(
                SETTING,
                "none given, and neither `claude` nor `codex` is on PATH: install one, or run \
                 scripts and custom agents with --provider exec",
            ));
        }
        return Ok(out);
    }
    for name in named {
        let kind: ProviderKind = name.parse().map_err(|e: String| bad(SETTING, e))?;
        if out.iter().any(|p| p.kind == kind) {
            continue;
        }
        let bin = match bin_of(kind) {
            Some(b) => Some(find_program(&b).ok_or_else(|| {
                bad(
                    SETTING,
                    format!(
                        "{name}: `{}` is not an executable on PATH (set its --*-bin)",
                        b.display()
                    ),
                )
            })?),
            None => None,
        };
        out.push(Provider { kind, bin });
    }
    Ok(out)
}

/// `program` as a path to an executable: itself when it has a directory part, else the first
/// match on PATH.
fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "paddock-daemon".into())
}

/// Just enough of a URL check to name a bad `--server` at start (the client parses it for real).
mod url_lite {
    pub struct Url {
        pub has_api_path: bool,
    }

    impl std::str::FromStr for Url {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let rest = s
                .strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"))
                .ok_or_else(|| format!("`{s}` is not an http:// or https:// URL"))?;
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(format!("`{s}` has no host"));
            }
            Ok(Url {
                has_api_path: path.starts_with("api/"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let work = dir.path().join("w");
        let mut argv = vec![
            "daemon",
            "--server",
            "http://127.0.0.1:8080",
            "--token",
            "pdk_x",
            "--state-dir",
            state.to_str().unwrap(),
            "--work-root",
            work.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args.resolve()
    }

    #[test]
    fn a_bad_setting_is_named() {
        let e = parse(&["--provider", "exec", "--max-concurrency", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-concurrency"), "{e}");
        let e = parse(&["--provider", "nope"]).unwrap_err();
        assert!(e.to_string().contains("--provider"), "{e}");
        let e = parse(&[
            "--provider",
            "claude-code",
            "--claude-bin",
            "/nonexistent/claude",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("claude"), "{e}");
        let ok = parse(&["--provider", "exec,exec", "--daemon-id", "box"]).unwrap();
        assert_eq!(ok.providers.len(), 1);
        assert_eq!(ok.daemon_id, "box");
    }
}
