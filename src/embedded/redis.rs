//! A private Redis server run from the locally installed `redis-server`.
//!
//! Owns finding the binary, starting it on a free loopback port without
//! persistence, readiness (a raw `PING`, so this module needs no Redis client),
//! sharing one server between processes via `<dir>/redis.port` and
//! `<dir>/redis.pid`, and stop / start-again on the same port for tests that
//! take Redis away mid-test. The server log is appended to `<dir>/redis.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::{
    EmbeddedError, ServerProcess, absolute, find_on_path, free_port, io_err, is_executable,
    lock_exclusive, log_stdio, pid_alive, sibling, wait_ready,
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server keeps its log and, when shared, its port/pid files.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub dir: PathBuf,
}

/// Handle on a running private Redis. From [`PrivateRedis::start`] the server
/// dies with the handle; from [`PrivateRedis::start_shared`] it outlives it.
#[derive(Debug)]
pub struct PrivateRedis {
    bin: PathBuf,
    dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    server: ServerProcess,
    detached: bool,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free loopback port and waits for PING.
    pub async fn start(opts: RedisOptions) -> Result<Self, EmbeddedError> {
        let mut redis = Self::new(&opts.dir, false)?;
        redis.launch(None).await?;
        Ok(redis)
    }

    /// Adopts the server recorded in `<dir>/redis.port` + `<dir>/redis.pid`
    /// if it is alive and answers PING, else starts one that survives this
    /// process. Serialised across processes by a lock on `<dir>.lock`.
    pub async fn start_shared(opts: RedisOptions) -> Result<Self, EmbeddedError> {
        let mut redis = Self::new(&opts.dir, true)?;
        let _lock = lock_exclusive(&sibling(&redis.dir, "lock")).await?;
        if let Some((pid, port)) = redis.recorded()
            && pid_alive(pid)
            && ping(port).await
        {
            tracing::info!(pid, port, "adopting running private Redis");
            (redis.server, redis.port) = (ServerProcess::adopted(pid), port);
            return Ok(redis);
        }
        redis.launch(None).await?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (no persistence, so nothing to flush) and keeps the
    /// port for [`start_again`](Self::start_again).
    pub async fn stop(&mut self) -> Result<(), EmbeddedError> {
        let pid = self.server.pid();
        self.server.kill("Redis").await?;
        tracing::info!(?pid, port = self.port, "stopped private Redis");
        Ok(())
    }

    /// Starts a new, empty server on the same port.
    pub async fn start_again(&mut self) -> Result<(), EmbeddedError> {
        self.stop().await?;
        self.launch(Some(self.port)).await
    }

    fn new(dir: &Path, detached: bool) -> Result<Self, EmbeddedError> {
        let bin = find_redis()?;
        let dir = absolute(dir)?;
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let (log_path, server) = (dir.join("redis.log"), ServerProcess::default());
        Ok(Self {
            bin,
            dir,
            log_path,
            port: 0,
            server,
            detached,
        })
    }

    fn recorded(&self) -> Option<(i32, u16)> {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).ok();
        let pid = read("redis.pid")?.trim().parse().ok()?;
        let port = read("redis.port")?.trim().parse().ok()?;
        Some((pid, port))
    }

    /// Spawns and waits for PING, retrying with a fresh port when the server
    /// dies early (another process may grab a "free" port first).
    async fn launch(&mut self, fixed_port: Option<u16>) -> Result<(), EmbeddedError> {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            self.port = fixed_port.map_or_else(free_port, Ok)?;
            self.spawn()?;
            let port = self.port;
            let (server, log) = (&mut self.server, &self.log_path);
            match wait_ready("Redis", server, port, log, READY_TIMEOUT, || ping(port)).await {
                Err(e @ EmbeddedError::StartFailed { .. }) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "private Redis failed to start; retrying");
                }
                Err(e @ EmbeddedError::Timeout { .. }) => {
                    let _ = self.server.kill("Redis").await;
                    return Err(e);
                }
                Ok(()) if self.detached => return self.record(),
                other => return other,
            }
        }
        unreachable!("the last attempt always returns")
    }

    fn spawn(&mut self) -> Result<(), EmbeddedError> {
        let port = self.port;
        let (out, err) = log_stdio(&self.log_path, &format!("redis-server on port {port}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&self.dir);
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        // Log to stdout (the log file); stay in the foreground so that we
        // know the server's real pid.
        cmd.args(["--logfile", "", "--daemonize", "no"]);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if self.detached {
            // Own process group and no kill-on-drop: it must outlive us and a
            // Ctrl-C aimed at the test runner.
            cmd.process_group(0).kill_on_drop(false);
        } else {
            cmd.kill_on_drop(true);
        }
        let child = cmd.spawn().map_err(io_err("run", &self.bin))?;
        tracing::info!(port, log = %self.log_path.display(), "starting private Redis");
        self.server = ServerProcess::spawned(child);
        Ok(())
    }

    /// Records pid and port for later `start_shared` callers.
    fn record(&self) -> Result<(), EmbeddedError> {
        let pid = self.server.pid().unwrap_or_default().to_string();
        for (name, value) in [("redis.pid", pid), ("redis.port", self.port.to_string())] {
            let path = self.dir.join(name);
            std::fs::write(&path, value).map_err(io_err("write", &path))?;
        }
        Ok(())
    }
}

fn find_redis() -> Result<PathBuf, EmbeddedError> {
    find_on_path("redis-server")
        .or_else(|| {
            ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| is_executable(p))
        })
        .ok_or(EmbeddedError::NoRedis)
}

/// True if 127.0.0.1:`port` answers `PING` with `+PONG` within a second.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 64];
        while !reply.ends_with(b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok::<bool, std::io::Error>(reply.starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::test_support::{remove_scratch, scratch_dir};

    #[tokio::test]
    async fn start_ping_stop_start_again() {
        let dir = scratch_dir("redis-own");
        let mut redis = PrivateRedis::start(RedisOptions { dir: dir.clone() })
            .await
            .expect("start");
        let port = redis.port();
        assert!(ping(port).await);
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));

        redis.stop().await.expect("stop");
        assert!(!ping(port).await, "stopped server still answers");
        redis.start_again().await.expect("start again");
        assert_eq!(redis.port(), port);
        assert!(ping(port).await);

        let pid = redis.server.pid().expect("running");
        drop(redis);
        let mut dropped = ServerProcess::adopted(pid);
        assert!(
            dropped.wait_exit(Duration::from_secs(5)).await,
            "not killed on drop"
        );
        remove_scratch(&dir);
    }

    #[tokio::test]
    async fn start_shared_adopts_and_outlives_handle() {
        let dir = scratch_dir("redis-shared");
        let opts = RedisOptions { dir: dir.clone() };
        let first = PrivateRedis::start_shared(opts.clone())
            .await
            .expect("start");
        let (port, pid) = (first.port(), first.server.pid());
        drop(first);
        assert!(ping(port).await, "detached server died with its handle");

        let mut second = PrivateRedis::start_shared(opts).await.expect("adopt");
        assert_eq!((second.port(), second.server.pid()), (port, pid));
        second.stop().await.expect("stop adopted");
        assert!(!ping(port).await);
        remove_scratch(&dir);
    }
}
