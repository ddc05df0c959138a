//! `paddock daemon` as a real process for the daemon tests: started against a test server with
//! a state dir and work root of its own, stopped with a signal or killed with SIGKILL, its stderr
//! kept in a file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{TestApp, Ws};

/// The fake agent CLIs (`tests/fake-agents/`).
pub fn fake_agent(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fake-agents")
        .join(name)
}

/// A scratch directory under `target/`, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/daemon-tests")
            .join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        let p = self.0.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start a daemon.
pub struct DaemonSpec {
    pub server: String,
    pub token: String,
    pub daemon_id: String,
    pub providers: Vec<&'static str>,
    pub state_dir: PathBuf,
    pub work_root: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl DaemonSpec {
    pub fn new(app: &TestApp, ws: &Ws, scratch: &Scratch, providers: &[&'static str]) -> Self {
        Self {
            server: app.base.clone(),
            token: ws.daemon.clone(),
            daemon_id: format!("box-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            providers: providers.to_vec(),
            state_dir: scratch.path("state"),
            work_root: scratch.path("work"),
            args: vec![
                "--kill-grace".into(),
                "1s".into(),
                "--claim-wait".into(),
                "2s".into(),
            ],
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env
            .push((k.to_owned(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    pub fn start(&self) -> Daemon {
        let log = self
            .state_dir
            .parent()
            .unwrap()
            .join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_paddock"));
        cmd.arg("daemon")
            .arg("--server")
            .arg(&self.server)
            .arg("--daemon-id")
            .arg(&self.daemon_id)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--work-root")
            .arg(&self.work_root)
            .arg("--provider")
            .arg(self.providers.join(","))
            .args(&self.args)
            .env("PADDOCK_DAEMON_TOKEN", &self.token)
            .env_remove("PADDOCK_PROVIDERS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start paddock daemon");
        Daemon { child, log }
    }
}

/// A running daemon.
pub struct Daemon {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal the daemon");
    }

    /// SIGKILL, and waits for it to be gone.
    pub async fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        self.child.wait().await.unwrap();
    }

    /// Waits (up to `within`) for the daemon to exit; its exit code.
    pub async fn exited(&mut self, within: Duration) -> Option<i32> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap().code(),
            Err(_) => panic!(
                "the daemon did not exit within {within:?}:\n{}",
                self.logs()
            ),
        }
    }

    /// What the daemon wrote on stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
