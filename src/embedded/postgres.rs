//! A private PostgreSQL cluster run from the locally installed server binaries.
//!
//! Owns the cluster's whole lifecycle: finding `initdb`/`postgres`, creating
//! and chowning the data directory, initdb, adopting a postmaster that is
//! already running on the data directory, starting one on a free loopback
//! port, waiting for readiness, creating the `paddock` database, and graceful
//! stop / crash (kill -9) / restart for fault tests.
//!
//! PostgreSQL refuses to run as root, so when we are root both `initdb` and
//! `postgres` run as the `postgres` system user (else `nobody`).
//! The server log (initdb output included) is appended to `<data_dir>.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use tokio::process::Command;

pub use super::cluster::find_bin_dir;
use super::cluster::{prepare_data_dir, running_postmaster};
use super::{
    EmbeddedError, RunAs, ServerProcess, absolute, free_port, io_err, lock_exclusive, log_stdio,
    run_as_user, sibling, wait_ready,
};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const SUPERUSER: &str = "postgres";

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The cluster lives here (PGDATA is this directory itself).
    pub data_dir: PathBuf,
    /// Tests only: fsync, synchronous_commit and full_page_writes off.
    pub fast_unsafe: bool,
    /// e.g. 200 for serve, 500 for tests.
    pub max_connections: u32,
}

/// Handle on a running private cluster. Dropping a handle from
/// [`PrivatePostgres::start`] asks the postmaster for a fast shutdown (without
/// waiting); dropping one from [`PrivatePostgres::start_shared`] leaves it
/// running.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin_dir: PathBuf,
    /// `data_dir` is absolute here.
    opts: PgOptions,
    log_path: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    postmaster: ServerProcess,
    detached: bool,
}

impl PrivatePostgres {
    /// Finds binaries, initdbs if needed, adopts a running postmaster for
    /// `data_dir` or starts one on a free port, waits until it accepts
    /// connections, and makes sure database `paddock` exists.
    pub async fn start(opts: PgOptions) -> Result<Self, EmbeddedError> {
        Self::start_inner(opts, false).await
    }

    /// Like [`start`](Self::start), serialised across processes by an
    /// exclusive lock on `<data_dir>.lock`; the handle is detached.
    pub async fn start_shared(opts: PgOptions) -> Result<Self, EmbeddedError> {
        let data_dir = absolute(&opts.data_dir)?;
        let parent = data_dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let _lock = lock_exclusive(&sibling(&data_dir, "lock")).await?;
        Self::start_inner(PgOptions { data_dir, ..opts }, true).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/paddock`
    pub fn url(&self) -> String {
        self.url_for("paddock")
    }

    /// URL of database `db` in this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Fast shutdown (SIGINT: roll back sessions, checkpoint, exit), waiting
    /// up to 30 s before SIGKILL.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        let Some(pid) = self.postmaster.pid() else {
            return Ok(());
        };
        self.postmaster.signal(Signal::SIGINT);
        if !self.postmaster.wait_exit(STOP_TIMEOUT).await {
            tracing::warn!(pid, "PostgreSQL ignored fast shutdown for 30 s; killing it");
            self.postmaster.kill("PostgreSQL").await?;
        }
        tracing::info!(pid, port = self.port, "stopped private PostgreSQL");
        Ok(())
    }

    /// SIGKILL the postmaster and its backends, as a crash would.
    pub async fn kill(&mut self) -> Result<(), EmbeddedError> {
        let pid = self.postmaster.pid();
        self.postmaster.kill("PostgreSQL").await?;
        tracing::info!(?pid, port = self.port, "killed private PostgreSQL");
        Ok(())
    }

    /// Starts the cluster again on the same port and data dir (after a fast
    /// shutdown if it still runs); after kill() it recovers on the way up.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.shutdown().await?;
        self.launch(Some(self.port)).await
    }

    async fn start_inner(opts: PgOptions, detached: bool) -> Result<Self, EmbeddedError> {
        let (bin_dir, run_as) = (find_bin_dir()?, run_as_user()?);
        let opts = PgOptions {
            data_dir: absolute(&opts.data_dir)?,
            ..opts
        };
        prepare_data_dir(&opts.data_dir, run_as.as_ref())?;
        let log_path = sibling(&opts.data_dir, "log");
        let postmaster = ServerProcess::default();
        let mut pg = Self {
            bin_dir,
            opts,
            log_path,
            run_as,
            port: 0,
            postmaster,
            detached,
        };
        if !pg.opts.data_dir.join("PG_VERSION").exists() {
            pg.initdb().await?;
        }
        pg.launch(None).await?;
        pg.ensure_database().await?;
        Ok(pg)
    }

    async fn initdb(&self) -> Result<(), EmbeddedError> {
        tracing::info!(data_dir = %self.opts.data_dir.display(), "initdb for private PostgreSQL");
        let mut cmd = self.command("initdb", "initdb")?;
        cmd.arg("-D")
            .arg(&self.opts.data_dir)
            .args(["-U", SUPERUSER, "--auth=trust"]);
        // C locale: always present, unlike whatever LANG names.
        cmd.args(["--encoding=UTF8", "--locale=C"]);
        if self.opts.fast_unsafe {
            cmd.arg("--no-sync");
        }
        let status = cmd
            .status()
            .await
            .map_err(io_err("run", &self.bin_dir.join("initdb")))?;
        match status.success() {
            true => Ok(()),
            false => Err(EmbeddedError::start_failed(
                "initdb",
                status,
                &self.log_path,
            )),
        }
    }

    /// Adopts a live postmaster for the data dir, or spawns one and waits
    /// for readiness, retrying when it dies early: a free port can be taken
    /// before the server binds it, and right after a kill -9 the old shared
    /// memory may linger for a moment.
    async fn launch(&mut self, fixed_port: Option<u16>) -> Result<(), EmbeddedError> {
        const ATTEMPTS: u64 = 5;
        for attempt in 1..=ATTEMPTS {
            let adopted = running_postmaster(&self.opts.data_dir).await;
            if let Some((pid, port)) = adopted {
                let data_dir = self.opts.data_dir.display();
                tracing::info!(pid, port, %data_dir, "adopting running PostgreSQL");
                (self.postmaster, self.port) = (ServerProcess::adopted(pid), port);
            } else {
                self.port = fixed_port.map_or_else(free_port, Ok)?;
                self.spawn()?;
            }
            let (port, log, limit) = (self.port, &self.log_path, READY_TIMEOUT);
            let ready = wait_ready("PostgreSQL", &mut self.postmaster, port, log, limit, || {
                can_connect(port)
            });
            match ready.await {
                Err(e @ EmbeddedError::StartFailed { .. }) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "private PostgreSQL failed to start; retrying");
                    tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
                }
                Err(e @ EmbeddedError::Timeout { .. }) if adopted.is_none() => {
                    // Don't leave a server we started half-up on the data dir.
                    let _ = self.postmaster.kill("PostgreSQL").await;
                    return Err(e);
                }
                other => return other,
            }
        }
        unreachable!("the last attempt always returns")
    }

    fn spawn(&mut self) -> Result<(), EmbeddedError> {
        let port = self.port;
        let mut cmd = self.command("postgres", &format!("postgres on port {port}"))?;
        cmd.arg("-D")
            .arg(&self.opts.data_dir)
            .arg("-p")
            .arg(port.to_string());
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            "unix_socket_directories=".to_string(),
            format!("max_connections={}", self.opts.max_connections),
        ];
        if self.opts.fast_unsafe {
            let unsafe_settings = [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ];
            settings.extend(unsafe_settings.map(String::from));
        }
        for setting in settings {
            cmd.arg("-c").arg(setting);
        }
        // Own process group: a Ctrl-C aimed at us must not take the database
        // down mid-shutdown, and kill() can reach every backend at once.
        cmd.process_group(0).kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(io_err("run", &self.bin_dir.join("postgres")))?;
        let (data_dir, log) = (self.opts.data_dir.display(), self.log_path.display());
        tracing::info!(port, %data_dir, %log, "starting private PostgreSQL");
        self.postmaster = ServerProcess::spawned(child);
        Ok(())
    }

    /// A server binary command with its output appended to the log, a cwd
    /// the unprivileged user can enter (ours may not be), and privileges
    /// dropped when we are root.
    fn command(&self, binary: &str, what: &str) -> Result<Command, EmbeddedError> {
        let (out, err) = log_stdio(&self.log_path, what)?;
        let mut cmd = Command::new(self.bin_dir.join(binary));
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir("/");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        Ok(cmd)
    }

    async fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let sql_err = |action| {
            let (port, log) = (self.port, self.log_path.clone());
            move |error| EmbeddedError::Sql {
                action,
                port,
                log,
                error,
            }
        };
        let mut conn = connect(self.port).await.map_err(sql_err("connect"))?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'paddock')",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(sql_err("look up database paddock"))?;
        if !exists {
            match sqlx::raw_sql("CREATE DATABASE paddock")
                .execute(&mut conn)
                .await
            {
                Ok(_) => tracing::info!(port = self.port, "created database paddock"),
                // Another process created it between our check and now.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(e) => return Err(sql_err("CREATE DATABASE paddock")(e)),
            }
        }
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if !self.detached {
            // Fast shutdown without waiting: Drop cannot await, and the
            // postmaster finishes shutting down on its own.
            self.postmaster.signal(Signal::SIGINT);
        }
    }
}

/// A superuser connection to database `postgres`.
async fn connect(port: u16) -> Result<PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(SUPERUSER);
    PgConnection::connect_with(&opts.database("postgres").ssl_mode(PgSslMode::Disable)).await
}

/// Readiness: a real login, since the port opens before recovery finishes.
async fn can_connect(port: u16) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), connect(port)).await {
        Ok(Ok(conn)) => conn.close().await.is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::test_support::{remove_scratch, scratch_dir};

    /// Runs `SELECT 1` at `url` and checks the answer.
    async fn select_one(url: &str) -> Result<(), sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        assert_eq!(one, 1);
        conn.close().await
    }

    fn opts(data_dir: &Path) -> PgOptions {
        let data_dir = data_dir.to_path_buf();
        PgOptions {
            data_dir,
            fast_unsafe: true,
            max_connections: 50,
        }
    }

    #[tokio::test]
    async fn start_query_kill_restart_stop() {
        let data_dir = scratch_dir("pg-own");
        let mut pg = PrivatePostgres::start(opts(&data_dir))
            .await
            .expect("start");
        assert!(pg.url().ends_with("/paddock"));
        select_one(&pg.url()).await.expect("SELECT 1");

        let port = pg.port();
        pg.kill().await.expect("kill");
        assert!(
            select_one(&pg.url()).await.is_err(),
            "killed server answers"
        );
        pg.restart().await.expect("restart");
        assert_eq!(pg.port(), port);
        select_one(&pg.url_for("postgres"))
            .await
            .expect("SELECT 1 after restart");

        pg.stop().await.expect("stop");
        assert!(!data_dir.join("postmaster.pid").exists(), "unclean stop");
        remove_scratch(&data_dir);
    }

    #[tokio::test]
    async fn start_shared_is_detached_and_adopted() {
        let data_dir = scratch_dir("pg-shared");
        let start = || PrivatePostgres::start_shared(opts(&data_dir));
        // Concurrent callers must end up on one cluster.
        let (a, b) = tokio::join!(start(), start());
        let (a, b) = (a.expect("first start"), b.expect("second start"));
        assert_eq!(a.port(), b.port());
        let (port, pid) = (a.port(), a.postmaster.pid());
        drop((a, b));

        // Dropping detached handles left it running; a new handle adopts it.
        let again = start().await.expect("adopt");
        assert_eq!((again.port(), again.postmaster.pid()), (port, pid));
        select_one(&again.url()).await.expect("SELECT 1");
        again.stop().await.expect("stop adopted");

        // A leftover postmaster.pid naming a dead process must not block start.
        let pid_file = data_dir.join("postmaster.pid");
        std::fs::write(pid_file, "999999999\n/x\n0\n1\n").expect("fake pid file");
        let fresh = start().await.expect("start over a stale pid file");
        select_one(&fresh.url()).await.expect("SELECT 1");
        fresh.stop().await.expect("stop");
        remove_scratch(&data_dir);
    }
}
