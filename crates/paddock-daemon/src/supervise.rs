//! Running one agent process for one attempt: its environment, its I/O, its
//! process group, stopping it, and always reaping it and reporting its exit.
//!
//! # What it owns
//! The child (the *leader*) and everything in its process group, from
//! [`spawn`] until the group is gone. Nothing started for an attempt is
//! allowed to outlive it.
//!
//! # Contract
//! * **Work dir**: the attempt runs in [`Spec::work_dir`], normally
//!   [`work_dir_for`]`(work_root, task_id)` = `<work_root>/<task_id>`. It is
//!   created if missing and never removed: a task's attempts share it.
//! * **Process group**: the leader is put in a new process group (its pgid
//!   is its pid) so signals reach it and every descendant that did not leave
//!   the group on purpose.
//! * **Environment**: the daemon's environment *minus every variable whose
//!   name starts with `PADDOCK_`* (that removes `PADDOCK_DAEMON_TOKEN`, the
//!   daemon's credential, and any other daemon setting), plus [`Spec::env`].
//!   `Spec::env` may only use the `PADDOCK_` names in
//!   [`ALLOWED_PADDOCK_VARS`] (`PADDOCK_TASK_ID`, `PADDOCK_ATTEMPT_ID`,
//!   `PADDOCK_AGENT_ID`); any other `PADDOCK_` name there is refused with
//!   [`std::io::ErrorKind::InvalidInput`] rather than silently passed or
//!   dropped, because it can only be a caller bug. The daemon's own values of
//!   the three allowed names are not inherited either: only the spec's are.
//! * **stdin**: [`Spec::stdin`] is written, then the pipe is closed (EOF). The
//!   daemon's own stdin is never inherited.
//! * **stdout / stderr**: read line by line and delivered through
//!   [`Running::lines`], in order per stream (the two streams interleave as
//!   they are read). The trailing `\n` (and a `\r` before it) is removed; a
//!   line longer than [`MAX_LINE_BYTES`] is delivered in pieces of at most
//!   that size, cut at a UTF-8 character boundary; invalid UTF-8 is replaced
//!   lossily. The channel is bounded ([`LINE_CHANNEL`]), so a consumer that
//!   falls behind slows the agent down instead of growing memory; dropping
//!   the receiver discards output without blocking the agent.
//! * **Stop** ([`Process::stop`]): SIGTERM (then SIGCONT, so a stopped
//!   process can act on it) to the whole group; after the grace period,
//!   SIGKILL to the group if anything in it is still alive.
//! * **Leader exits first**: when the leader exits while other members of
//!   its group are alive (typically a background grandchild still holding
//!   stdout, which would otherwise keep the readers waiting forever), the
//!   rest of the group is ended: SIGTERM, then SIGKILL after
//!   [`LEFTOVER_GRACE`]. Chosen over waiting because the attempt is over
//!   when its leader is, and leftovers would run unsupervised and
//!   unaccounted. A process that left the group (`setsid`) cannot be
//!   signalled as part of it; if it still holds a pipe, the readers give up
//!   [`DRAIN_TIMEOUT`] after the group is gone, so `lines` always ends.
//! * **Reaping**: the leader is always reaped and its [`Exit`] always
//!   reported (code or signal), whether it ended by itself, was stopped, or
//!   the [`Process`] handle was dropped (which stops the group with
//!   [`DROP_GRACE`]). If the whole runtime goes away first, the group is
//!   SIGKILLed by a drop guard.
//! * **Liveness**: "anything in the group still alive" means a member that
//!   is not a zombie. On Linux this is read from `/proc`, because orphaned
//!   grandchildren stay zombies forever where PID 1 does not reap (as in many
//!   containers) and would otherwise look alive; elsewhere `kill(-pgid, 0)`.
//!
//! # Using it
//! `wait()` resolves when the leader is reaped and its group is gone; it does
//! not depend on the lines being consumed. `lines` yields every line and then
//! `None`. Either drive `lines` to `None` and then `wait()`, or `select!` over
//! `running.lines.recv()`, `running.process.wait()` and a cancel signal (the
//! two public fields can be borrowed separately), draining `lines` after the
//! exit:
//!
//! ```text
//! loop {
//!     tokio::select! {
//!         Some(line) = run.lines.recv() => forward(line),
//!         exit = run.process.wait() => { while let Some(l) = run.lines.recv().await { forward(l) } break exit }
//!         () = cancel.cancelled() => break run.process.stop(grace).await,
//!     }
//! }
//! ```
//!
//! `spawn` must be called inside a tokio runtime.

mod env;
mod group;
mod lines;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::debug;

pub use env::ALLOWED_PADDOCK_VARS;

/// Longest line delivered in one piece.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Capacity of the lines channel (in lines).
pub const LINE_CHANNEL: usize = 64;
/// Grace given to group members left behind by an exited leader.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// How long the readers wait for pipe EOF once the group is gone.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Grace used when a [`Process`] is dropped before its exit.
pub const DROP_GRACE: Duration = Duration::from_secs(5);

/// What to run for one attempt.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Written to the child's stdin, followed by EOF.
    pub stdin: Vec<u8>,
    /// Extra environment (the attempt ids); see the module doc for the rules.
    pub env: Vec<(String, String)>,
    pub work_dir: PathBuf,
}

/// One line (or piece of an over-long line) of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Stdout(String),
    Stderr(String),
}

/// How the leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed by one.
    pub signal: Option<i32>,
    /// A stop was requested (explicitly or by dropping the handle) before the
    /// leader exited, so this exit is ours, whatever its code.
    pub killed_by_us: bool,
}

/// A running attempt: its output and its process.
pub struct Running {
    /// Every line of stdout and stderr, then `None`.
    pub lines: mpsc::Receiver<Line>,
    /// Exit, stop and pid; a separate field so it can be awaited in the same
    /// `select!` as `lines`.
    pub process: Process,
}

impl Running {
    /// Pid of the leader (= its process group id).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// See [`Process::wait`].
    pub async fn wait(&self) -> Exit {
        self.process.wait().await
    }

    /// See [`Process::stop`].
    pub async fn stop(&self, grace: Duration) -> Exit {
        self.process.stop(grace).await
    }
}

/// Handle to the leader and its group. Dropping it before the exit stops
/// the group with [`DROP_GRACE`] (in the background).
pub struct Process {
    pid: u32,
    stop_tx: mpsc::UnboundedSender<Duration>,
    exit_rx: watch::Receiver<Option<Exit>>,
}

impl Process {
    /// Pid of the leader (= its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit, once the leader is reaped and its group is gone.
    /// Cancel-safe; may be called any number of times.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit_rx.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(exit) => exit.unwrap_or(UNKNOWN_EXIT),
            // The supervisor always publishes before it ends; this is only
            // reachable if the runtime is shutting down under us.
            Err(_) => UNKNOWN_EXIT,
        }
    }

    /// The exit if it is already known.
    pub fn try_exit(&self) -> Option<Exit> {
        *self.exit_rx.borrow()
    }

    /// SIGTERM to the group, SIGKILL after `grace` if anything in it is
    /// still alive; returns the exit. A no-op (returning the exit) if the
    /// leader has already exited; a second call can only shorten the grace.
    pub async fn stop(&self, grace: Duration) -> Exit {
        // Fails only once the supervisor has finished, i.e. the exit is known.
        let _ = self.stop_tx.send(grace);
        self.wait().await
    }
}

const UNKNOWN_EXIT: Exit = Exit {
    code: None,
    signal: None,
    killed_by_us: false,
};

/// `<work_root>/<task_id>`, refusing a task id that is not a single plain
/// path component (empty, `.`, `..`, or containing `/` or NUL), since task
/// ids come from the server.
pub fn work_dir_for(work_root: &Path, task_id: &str) -> io::Result<PathBuf> {
    let mut parts = Path::new(task_id).components();
    let plain = matches!(parts.next(), Some(Component::Normal(_)))
        && parts.next().is_none()
        && !task_id.contains(['/', '\0']);
    if !plain {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("task id {task_id:?} is not usable as a directory name"),
        ));
    }
    Ok(work_root.join(task_id))
}

/// Starts the attempt. Errors name the program (or the work dir).
pub fn spawn(spec: Spec) -> io::Result<Running> {
    let env = env::child_env(std::env::vars_os(), &spec.env)?;
    std::fs::create_dir_all(&spec.work_dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create work dir {}: {e}", spec.work_dir.display()),
        )
    })?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(env)
        .current_dir(&spec.work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start agent program {}: {e}", spec.program.display()),
        )
    })?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;

    if let Some(mut stdin) = child.stdin.take() {
        let data = spec.stdin;
        tokio::spawn(async move {
            if let Err(e) = stdin.write_all(&data).await {
                // Typically EPIPE: the agent exited or closed stdin early.
                debug!(pid, "stdin not fully delivered: {e}");
            }
            let _ = stdin.shutdown().await;
        });
    }

    let (line_tx, lines) = mpsc::channel(LINE_CHANNEL);
    let (drain_tx, drain_rx) = watch::channel(false);
    if let Some(out) = child.stdout.take() {
        let (tx, rx) = (line_tx.clone(), drain_rx.clone());
        tokio::spawn(lines::pump(out, Line::Stdout, tx, rx, MAX_LINE_BYTES));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(lines::pump(
            err,
            Line::Stderr,
            line_tx,
            drain_rx,
            MAX_LINE_BYTES,
        ));
    }

    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = watch::channel(None);
    tokio::spawn(group::supervise(child, pid, stop_rx, exit_tx, drain_tx));
    Ok(Running {
        lines,
        process: Process {
            pid,
            stop_tx,
            exit_rx,
        },
    })
}

/// Kills, with SIGKILL, the process group `pid` leads if it is still the agent of `attempt_id`
/// (its environment says so: a pid reused since is left alone). For a daemon restarting after a
/// crash. Returns whether it killed it.
pub fn kill_orphan(pid: u32, attempt_id: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("PADDOCK_ATTEMPT_ID={attempt_id}");
    let ours = environ
        .split(|b| *b == 0)
        .any(|var| var == wanted.as_bytes());
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    ours && nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}
