//! Stopping, SIGKILL after the grace, grandchildren, leftovers of an exited
//! leader, escaped processes, and dropping the handle.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{HANG_GUARD, finish, gone, next_stdout, sh};
use crate::supervise::{Exit, Running, spawn};

#[tokio::test]
async fn stop_ends_sleep_with_sigterm_well_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("echo ready; sleep 60", dir.path())).unwrap();
    assert_eq!(next_stdout(&mut run).await, "ready");
    let t = Instant::now();
    let exit = run.stop(Duration::from_secs(20)).await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        exit,
        Exit {
            code: None,
            signal: Some(15),
            killed_by_us: true
        }
    );
    assert!(gone(run.pid() as i32));
}

#[tokio::test]
async fn stop_sigkills_a_child_that_ignores_term_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh(
        "trap '' TERM; echo ready; sleep 60; echo survived",
        dir.path(),
    ))
    .unwrap();
    assert_eq!(next_stdout(&mut run).await, "ready");
    let grace = Duration::from_millis(500);
    let t = Instant::now();
    let exit = run.stop(grace).await;
    let took = t.elapsed();
    assert!(took >= grace, "killed before the grace: {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        exit,
        Exit {
            code: None,
            signal: Some(9),
            killed_by_us: true
        }
    );
    let (out, _, _) = finish(&mut run).await;
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn stop_kills_grandchildren_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("sleep 60 & echo $!; wait", dir.path())).unwrap();
    let grandchild: i32 = next_stdout(&mut run).await.parse().unwrap();
    assert!(!gone(grandchild));
    let exit = run.stop(Duration::from_secs(5)).await;
    assert!(exit.killed_by_us);
    assert!(gone(grandchild), "grandchild {grandchild} survived");
    finish(&mut run).await;
}

#[tokio::test]
async fn leader_exit_with_a_grandchild_holding_stdout_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    // The background sleep keeps stdout open after the shell exits; the
    // second one also ignores SIGTERM and needs the SIGKILL.
    let script = "sleep 60 & echo $!; (trap '' TERM; exec sleep 60) & echo $!; echo bye";
    let mut run = spawn(sh(script, dir.path())).unwrap();
    let t = Instant::now();
    let (out, _, exit) = finish(&mut run).await;
    assert_eq!(
        exit,
        Exit {
            code: Some(0),
            signal: None,
            killed_by_us: false
        }
    );
    assert_eq!(out[2], "bye");
    for pid in &out[..2] {
        assert!(gone(pid.parse().unwrap()), "{pid} survived");
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_process_that_escaped_the_group_cannot_hold_the_lines_open() {
    if !Path::new("/usr/bin/setsid").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A new session is out of reach of the group signals; it keeps writing
    // to our stdout forever.
    let script = "/usr/bin/setsid sh -c 'echo $$; while :; do echo spam; done' & sleep 0.2; echo leader-done";
    let mut run = spawn(sh(script, dir.path())).unwrap();
    let t = Instant::now();
    let escaped: i32 = next_stdout(&mut run).await.parse().unwrap();
    let (out, _, exit) = finish(&mut run).await;
    assert_eq!(exit.code, Some(0));
    assert!(out.iter().any(|l| l == "leader-done"));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    // Our read end is closed now: the spammer dies of SIGPIPE; make sure.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("sleep 60 & echo $!; wait", dir.path())).unwrap();
    let grandchild: i32 = next_stdout(&mut run).await.parse().unwrap();
    let Running { mut lines, process } = run;
    // Observe the exit without keeping the handle alive.
    let mut exit_rx = process.exit_rx.clone();
    drop(process);
    let exit = tokio::time::timeout(HANG_GUARD, exit_rx.wait_for(Option::is_some))
        .await
        .expect("group not stopped")
        .map(|e| *e)
        .unwrap();
    assert_eq!(exit.map(|e| e.killed_by_us), Some(true));
    assert!(gone(grandchild));
    tokio::time::timeout(HANG_GUARD, async { while lines.recv().await.is_some() {} })
        .await
        .expect("lines end");
}
