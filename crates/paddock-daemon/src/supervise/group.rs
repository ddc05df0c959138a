//! The supervisor task of one attempt: reaps the leader, stops and cleans up
//! its process group, publishes the exit, then bounds the readers.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, error, warn};

use super::{DRAIN_TIMEOUT, DROP_GRACE, Exit, LEFTOVER_GRACE};

/// How often group liveness is re-checked once the leader is gone (there
/// is no event for "the last grandchild died").
const POLL: Duration = Duration::from_millis(20);
/// How long after SIGKILL members may still look alive before we give up
/// waiting for them (e.g. stuck in uninterruptible sleep).
const SETTLE: Duration = Duration::from_secs(2);

pub(super) async fn supervise(
    mut child: Child,
    pid: u32,
    mut stop_rx: mpsc::UnboundedReceiver<Duration>,
    exit_tx: watch::Sender<Option<Exit>>,
    drain_tx: watch::Sender<bool>,
) {
    // Pids fit in i32 on every Unix; a pid is its own group's id here.
    let pgid = Pid::from_raw(pid as i32);
    let mut guard = Guard { pgid, armed: true };
    let mut kill = Killer::new(pgid);
    let mut stop_open = true;

    // 1. Until the leader exits (and is reaped).
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            req = stop_rx.recv(), if stop_open => {
                if req.is_none() {
                    debug!(pid, "process handle dropped before the exit; stopping the group");
                    stop_open = false;
                }
                kill.stop(req.unwrap_or(DROP_GRACE));
            }
            () = sleep_until(kill.kill_at.unwrap_or_else(Instant::now)), if kill.waiting() => kill.sigkill(),
        }
    };
    let killed_by_us = kill.requested;
    let exit = match status {
        Ok(st) => Exit {
            code: st.code(),
            signal: st.signal(),
            killed_by_us,
        },
        Err(e) => {
            error!(pid, "cannot reap the agent process: {e}");
            Exit {
                code: None,
                signal: None,
                killed_by_us,
            }
        }
    };

    // 2. The leader is gone: end whatever is left of its group.
    if group_alive(pgid).await {
        if !kill.term_sent {
            debug!(
                pid,
                "agent exited leaving processes in its group; ending them"
            );
            kill.terminate(LEFTOVER_GRACE);
        }
        let mut give_up = None;
        loop {
            tokio::select! {
                () = sleep(POLL) => {}
                req = stop_rx.recv(), if stop_open => match req {
                    Some(grace) => kill.terminate(grace),
                    None => stop_open = false,
                },
            }
            if !group_alive(pgid).await {
                break;
            }
            if kill.waiting() && kill.kill_at.is_some_and(|at| Instant::now() >= at) {
                kill.sigkill();
            }
            if kill.killed {
                let at = *give_up.get_or_insert_with(|| Instant::now() + SETTLE);
                if Instant::now() >= at {
                    warn!(
                        pid,
                        "process group still has live members after SIGKILL; giving up on them"
                    );
                    break;
                }
            }
        }
    }
    guard.armed = false;
    exit_tx.send_replace(Some(exit));

    // 3. Pipes normally hit EOF now; one held by a process that escaped the
    //    group must not keep the readers (and `lines`) open forever.
    tokio::select! {
        () = sleep(DRAIN_TIMEOUT) => {
            drain_tx.send_replace(true);
        }
        () = drain_tx.closed() => {}
    }
}

/// The TERM-then-KILL sequence for one group.
struct Killer {
    pgid: Pid,
    /// A stop was requested before the leader exited.
    requested: bool,
    term_sent: bool,
    kill_at: Option<Instant>,
    killed: bool,
}

impl Killer {
    fn new(pgid: Pid) -> Self {
        Killer {
            pgid,
            requested: false,
            term_sent: false,
            kill_at: None,
            killed: false,
        }
    }

    fn stop(&mut self, grace: Duration) {
        self.requested = true;
        self.terminate(grace);
    }

    /// SIGTERM (once), and SIGKILL no later than `grace` from now.
    fn terminate(&mut self, grace: Duration) {
        if !self.term_sent {
            self.term_sent = true;
            signal_group(self.pgid, Signal::SIGTERM);
            // A stopped process only acts on SIGTERM once continued.
            signal_group(self.pgid, Signal::SIGCONT);
        }
        let at = Instant::now() + grace;
        self.kill_at = Some(self.kill_at.map_or(at, |old| old.min(at)));
    }

    /// A SIGKILL is scheduled and not yet sent.
    fn waiting(&self) -> bool {
        self.kill_at.is_some() && !self.killed
    }

    fn sigkill(&mut self) {
        self.killed = true;
        signal_group(self.pgid, Signal::SIGKILL);
    }
}

fn signal_group(pgid: Pid, sig: Signal) {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(
            pgid = pgid.as_raw(),
            "cannot send {sig} to the agent's process group: {e}"
        ),
    }
}

/// SIGKILLs the group if the supervisor is dropped before the group was
/// confirmed gone (the runtime shut down under it).
struct Guard {
    pgid: Pid,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Whether any member of the group is alive (zombies do not count).
async fn group_alive(pgid: Pid) -> bool {
    if let Err(Errno::ESRCH) = killpg(pgid, None) {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let raw = pgid.as_raw();
        tokio::task::spawn_blocking(move || linux::group_has_live_member(raw))
            .await
            .unwrap_or(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

#[cfg(target_os = "linux")]
pub(super) mod linux {
    /// Scans `/proc` for a non-zombie process in group `pgid`. Without a
    /// readable `/proc`, assumes there is one (the caller's `killpg` said so).
    pub(in crate::supervise) fn group_has_live_member(pgid: i32) -> bool {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        dir.flatten().any(|entry| {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                return false;
            };
            // Unreadable: the process vanished meanwhile.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X'))
        })
    }

    /// `(state, pgrp)` from `/proc/<pid>/stat` ("pid (comm) S ppid pgrp ...";
    /// comm may contain spaces and parentheses, hence the last `)`).
    pub(in crate::supervise) fn parse_stat(stat: &str) -> Option<(char, i32)> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let _ppid = fields.next()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some((state, pgrp))
    }
}
