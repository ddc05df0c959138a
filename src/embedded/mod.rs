//! Private PostgreSQL and Redis started from locally installed binaries.
//!
//! `paddock serve` without `DATABASE_URL`, and the test harness without
//! `DATABASE_URL` / `REDIS_URL`, start their own server processes through this
//! module. It owns: finding the server binaries, preparing data directories
//! (including running PostgreSQL as an unprivileged user when we are root),
//! starting / adopting / stopping / killing the servers, and the errors that
//! tell an operator what to do when any of that fails.
//!
//! The process-level helpers shared by both servers (free ports, pid checks,
//! signals, file locks, logs, dropping privileges, chown) live here; each
//! server's lifecycle lives in its own submodule.

mod cluster;
pub mod postgres;
pub mod redis;
mod user;

pub use postgres::{PgOptions, PrivatePostgres};
pub use redis::{PrivateRedis, RedisOptions};
pub(crate) use user::{RunAs, check_traversable, chown_tree, run_as_user};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::Instant;

/// Everything that can go wrong while providing a private server. Every
/// message ends with what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked on PATH, pg_config --bindir, /usr/lib/postgresql/*/bin): set DATABASE_URL to an existing PostgreSQL ≥ 14, or install PostgreSQL (Debian: apt-get install postgresql)"
    )]
    NoPostgres,

    #[error(
        "no redis-server binary found (looked on PATH, /usr/bin, /usr/local/bin): set REDIS_URL or install Redis (Debian: apt-get install redis-server)"
    )]
    NoRedis,

    #[error(
        "running as root, which PostgreSQL refuses, and neither a `postgres` nor a `nobody` user exists to run it as: create one (useradd --system postgres) or set DATABASE_URL"
    )]
    NoUnprivilegedUser,

    #[error(
        "PostgreSQL must run as user `{user}`, which cannot enter {dir}: put the data directory somewhere that user can reach (set PADDOCK_DATA_DIR, e.g. to /var/lib/paddock) or allow it in (chmod o+x {dir})"
    )]
    NotTraversable { dir: PathBuf, user: String },

    /// (what we were doing, the path, the error)
    #[error("could not {0} {1}: {2}; check its permissions and the free space there")]
    Io(&'static str, PathBuf, std::io::Error),

    #[error(
        "{what} failed ({status}); fix the cause shown in its log {log}, or use an external server (DATABASE_URL / REDIS_URL):\n{tail}"
    )]
    StartFailed {
        what: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "{what} did not accept connections on 127.0.0.1:{port} within {secs} s; the machine may be overloaded, see its log {log}:\n{tail}"
    )]
    Timeout {
        what: &'static str,
        port: u16,
        secs: u64,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "{action} on the private PostgreSQL at 127.0.0.1:{port} failed: {error}; see its log {log}"
    )]
    Sql {
        action: &'static str,
        port: u16,
        log: PathBuf,
        error: sqlx::Error,
    },

    #[error("{what} (pid {pid}) did not exit after SIGKILL; kill it by hand (kill -9 {pid})")]
    StopFailed { what: &'static str, pid: i32 },
}

impl EmbeddedError {
    pub(crate) fn start_failed(what: &'static str, status: impl ToString, log: &Path) -> Self {
        let (status, tail) = (status.to_string(), log_tail(log));
        Self::StartFailed {
            what,
            status,
            log: log.to_path_buf(),
            tail,
        }
    }

    fn timeout(what: &'static str, port: u16, limit: Duration, log: &Path) -> Self {
        let (secs, tail) = (limit.as_secs(), log_tail(log));
        Self::Timeout {
            what,
            port,
            secs,
            log: log.to_path_buf(),
            tail,
        }
    }
}

/// Builds the `map_err` closure for an I/O failure on `path`.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |error| EmbeddedError::Io(action, path, error)
}

/// A port that was free a moment ago. The server may still lose a race for
/// it, which is why callers retry startup with a fresh port.
pub(crate) fn free_port() -> Result<u16, EmbeddedError> {
    let addr = Path::new("127.0.0.1:0");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("bind", addr))?;
    let port = listener.local_addr().map_err(io_err("bind", addr))?.port();
    Ok(port)
}

/// `<path>.<ext>` next to `path` (e.g. `/x/pg` → `/x/pg.lock`), so lock and
/// log files never live inside a directory that initdb wants empty.
pub(crate) fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ext);
    path.with_file_name(name)
}

/// Absolute form of `path` without requiring it to exist yet.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_err("resolve", path))
}

/// True if `pid` is a live process. A zombie counts as dead: a postmaster we
/// adopted may have exited while its original parent never reaped it.
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err_and(|e| e == nix::errno::Errno::ESRCH) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A server process that we spawned (so we reap it) or adopted (pid only).
#[derive(Debug, Default)]
pub(crate) struct ServerProcess {
    pid: Option<i32>,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn spawned(child: Child) -> Self {
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        Self {
            pid,
            child: Some(child),
        }
    }

    pub fn adopted(pid: i32) -> Self {
        Self {
            pid: Some(pid),
            child: None,
        }
    }

    /// None once the process is known to be gone.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Some(how it ended) if the process has exited; then forgets it.
    pub fn exited(&mut self) -> Option<String> {
        let status = match (&mut self.child, self.pid) {
            (Some(child), _) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            (None, Some(pid)) if !pid_alive(pid) => Some(format!("pid {pid} is gone")),
            (None, Some(_)) => None,
            (None, None) => Some("not running".into()),
        };
        if status.is_some() {
            *self = Self::default();
        }
        status
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid {
            // ESRCH just means it is already gone.
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// Waits up to `limit` for the process to exit; true if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// SIGKILL, to the whole process group when the process leads one (our
    /// servers are spawned with `process_group(0)`, so PostgreSQL backends die
    /// with the postmaster, as in a machine crash); waits for the exit.
    pub async fn kill(&mut self, what: &'static str) -> Result<(), EmbeddedError> {
        let Some(pid) = self.pid else { return Ok(()) };
        let target = Pid::from_raw(pid);
        let leads_group = nix::unistd::getpgid(Some(target)).is_ok_and(|g| g == target);
        let _ = kill(
            if leads_group {
                Pid::from_raw(-pid)
            } else {
                target
            },
            Signal::SIGKILL,
        );
        match self.wait_exit(Duration::from_secs(10)).await {
            true => Ok(()),
            false => Err(EmbeddedError::StopFailed { what, pid }),
        }
    }
}

/// Polls `probe` until it answers true, failing early (with the log tail)
/// if the process exits, or after `limit`.
pub(crate) async fn wait_ready<F: Future<Output = bool>>(
    what: &'static str,
    process: &mut ServerProcess,
    port: u16,
    log: &Path,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> Result<(), EmbeddedError> {
    let started = Instant::now();
    loop {
        if let Some(status) = process.exited() {
            return Err(EmbeddedError::start_failed(what, status, log));
        }
        if probe().await {
            let ms = started.elapsed().as_millis();
            tracing::info!(port, ms, "private {what} ready in {ms} ms");
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(EmbeddedError::timeout(what, port, limit, log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens (creating) `path` for appending, writes a header line saying what
/// is starting, and returns it as a child's stdout and stderr. The child
/// inherits the descriptors, so the log stays writable after it drops
/// privileges.
pub(crate) fn log_stdio(path: &Path, header: &str) -> Result<(Stdio, Stdio), EmbeddedError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open log file", path))?;
    // Readable by the operator regardless of umask.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
    let _ = writeln!(
        file,
        "--- paddock (pid {}): {header} ---",
        std::process::id()
    );
    let err = file.try_clone().map_err(io_err("open log file", path))?;
    Ok((file.into(), err.into()))
}

/// The last few KiB of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return "(log file missing)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    // Drop a partial first line when we started mid-file.
    let text = match (len > TAIL, text.split_once('\n')) {
        (true, Some((_, rest))) => rest,
        _ => &text,
    };
    text.trim_end().to_string()
}

/// Takes an exclusive lock on `path` (created if missing) without blocking
/// the async runtime. The lock lasts until the returned file is dropped; the
/// descriptor is close-on-exec, so server children never inherit it.
pub(crate) async fn lock_exclusive(path: &Path) -> Result<File, EmbeddedError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open lock file", path))?;
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
    locked
        .map_err(io::Error::other)
        .flatten()
        .map_err(io_err("lock", path))
}

/// Executable regular file (symlinks followed)?
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// First `name` on PATH that is executable.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A fresh, unique directory path under the system temp dir (not created).
    pub fn scratch_dir(tag: &str) -> PathBuf {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let (pid, nanos) = (std::process::id(), now.map(|d| d.as_nanos()).unwrap_or(0));
        std::env::temp_dir().join(format!("paddock-embedded-{tag}-{pid}-{nanos}"))
    }

    /// Removes a scratch dir with its `.lock` and `.log` siblings.
    pub fn remove_scratch(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        for ext in ["lock", "log"] {
            let _ = std::fs::remove_file(super::sibling(dir, ext));
        }
    }
}
