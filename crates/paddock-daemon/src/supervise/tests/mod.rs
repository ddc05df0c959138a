//! Supervisor tests with real processes (`/bin/sh -c ...`); stopping and
//! group clean-up are in `stop`.

mod stop;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Exit, Line, MAX_LINE_BYTES, Running, Spec, spawn, work_dir_for};

/// Fails a test that would otherwise hang; never used to wait for an event.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn ids() -> Vec<(String, String)> {
    vec![
        ("PADDOCK_TASK_ID".into(), "task-1".into()),
        ("PADDOCK_ATTEMPT_ID".into(), "attempt-7".into()),
        ("PADDOCK_AGENT_ID".into(), "agent-3".into()),
    ]
}

fn sh(script: &str, dir: &Path) -> Spec {
    Spec {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        stdin: Vec::new(),
        env: ids(),
        work_dir: dir.to_path_buf(),
    }
}

/// Every line of both streams, then the exit.
async fn finish(run: &mut Running) -> (Vec<String>, Vec<String>, Exit) {
    tokio::time::timeout(HANG_GUARD, async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(line) = run.lines.recv().await {
            match line {
                Line::Stdout(l) => out.push(l),
                Line::Stderr(l) => err.push(l),
            }
        }
        (out, err, run.wait().await)
    })
    .await
    .expect("supervised process hung")
}

async fn next_stdout(run: &mut Running) -> String {
    loop {
        match tokio::time::timeout(HANG_GUARD, run.lines.recv()).await {
            Ok(Some(Line::Stdout(l))) => return l,
            Ok(Some(Line::Stderr(_))) => {}
            Ok(None) => panic!("output ended"),
            Err(_) => panic!("no output"),
        }
    }
}

/// No such process, or only a zombie nobody reaps.
#[cfg(target_os = "linux")]
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => super::group::linux::parse_stat(&stat).is_some_and(|(s, _)| s == 'Z'),
        Err(_) => true,
    }
}

/// No such process (zombies are reaped by init on these systems).
#[cfg(not(target_os = "linux"))]
fn gone(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
}

#[test]
fn handles_can_move_between_tasks() {
    fn sendable<T: Send + Sync + 'static>() {}
    sendable::<Running>();
    sendable::<super::Process>();
    sendable::<Exit>();
    sendable::<Line>();
}

#[tokio::test]
async fn lines_arrive_in_order_on_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let script = "i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; printf 'no newline'";
    let mut run = spawn(sh(script, dir.path())).unwrap();
    let (out, err, exit) = finish(&mut run).await;
    let mut want: Vec<String> = (1..=300).map(|i| format!("out{i}")).collect();
    want.push("no newline".into());
    assert_eq!(out, want);
    assert_eq!(
        err,
        (1..=300).map(|i| format!("err{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        exit,
        Exit {
            code: Some(0),
            signal: None,
            killed_by_us: false
        }
    );
}

#[tokio::test]
async fn stdin_is_delivered_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("", dir.path());
    spec.program = "/bin/cat".into();
    spec.args = Vec::new();
    // Larger than a pipe buffer, so delivery must be concurrent with reading.
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    spec.stdin = big.clone().into_bytes();
    let mut run = spawn(spec).unwrap();
    let (out, _, exit) = finish(&mut run).await;
    // `cat` only exits at EOF.
    assert_eq!(exit.code, Some(0));
    assert_eq!(out, big.lines().collect::<Vec<_>>());
}

#[tokio::test]
async fn runs_in_the_task_work_dir_which_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let dir = work_dir_for(root.path(), "task-1").unwrap();
    assert_eq!(dir, root.path().join("task-1"));
    let mut run = spawn(sh("pwd; echo kept > marker", &dir)).unwrap();
    let (out, _, _) = finish(&mut run).await;
    assert_eq!(
        PathBuf::from(&out[0]).canonicalize().unwrap(),
        dir.canonicalize().unwrap()
    );
    let mut run = spawn(sh("cat marker", &dir)).unwrap();
    let (out, _, exit) = finish(&mut run).await;
    assert_eq!((out, exit.code), (vec!["kept".to_string()], Some(0)));
    for bad in ["", ".", "..", "../x", "a/b", "/abs"] {
        assert!(work_dir_for(root.path(), bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("exit 3", dir.path())).unwrap();
    assert_eq!(
        finish(&mut run).await.2,
        Exit {
            code: Some(3),
            signal: None,
            killed_by_us: false
        }
    );
    let mut run = spawn(sh("kill -9 $$", dir.path())).unwrap();
    assert_eq!(
        finish(&mut run).await.2,
        Exit {
            code: None,
            signal: Some(9),
            killed_by_us: false
        }
    );
}

#[tokio::test]
async fn spawn_failures_name_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("", dir.path());
    spec.program = "/nonexistent/agent-cli".into();
    let err = spawn(spec.clone()).err().expect("must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/nonexistent/agent-cli"), "{err}");

    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    spec.program = script.clone();
    let err = spawn(spec.clone()).err().expect("must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(
        err.to_string().contains(&script.display().to_string()),
        "{err}"
    );

    spec.env.push(("PADDOCK_DAEMON_TOKEN".into(), "x".into()));
    spec.program = "/bin/sh".into();
    let err = spawn(spec).err().expect("must refuse");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_huge_line_is_delivered_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let total = 2 * MAX_LINE_BYTES + 12345;
    let script = format!("head -c {total} /dev/zero | tr '\\0' x; echo; echo after");
    let mut run = spawn(sh(&script, dir.path())).unwrap();
    let (out, _, exit) = finish(&mut run).await;
    assert_eq!(exit.code, Some(0));
    let lens: Vec<usize> = out.iter().map(String::len).collect();
    assert_eq!(lens, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 12345, 5]);
    assert!(out[..3].iter().all(|p| p.bytes().all(|b| b == b'x')));
    assert_eq!(out[3], "after");
}

#[tokio::test]
async fn select_over_lines_exit_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("echo one; echo two; sleep 60", dir.path())).unwrap();
    let (cancel_tx, mut cancel) = tokio::sync::oneshot::channel::<()>();
    let mut cancel_tx = Some(cancel_tx);
    let mut seen = Vec::new();
    let exit = loop {
        tokio::select! {
            Some(line) = run.lines.recv() => {
                seen.push(line);
                if seen.len() == 2 && let Some(tx) = cancel_tx.take() {
                    let _ = tx.send(());
                }
            }
            exit = run.process.wait() => break exit,
            _ = &mut cancel => break run.process.stop(Duration::from_secs(5)).await,
        }
    };
    assert!(exit.killed_by_us);
    assert_eq!(
        seen,
        vec![Line::Stdout("one".into()), Line::Stdout("two".into())]
    );
    assert!(run.lines.recv().await.is_none());
}

const ENV_CHILD_VAR: &str = "DAEMON_CORE_SUPERVISE_ENV_CHILD";

/// Runs only when re-executed by the test below, with a hostile environment.
#[tokio::test]
async fn env_child() {
    if std::env::var_os(ENV_CHILD_VAR).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut run = spawn(sh("env", dir.path())).unwrap();
    let (out, _, exit) = finish(&mut run).await;
    assert_eq!(exit.code, Some(0));
    let mut paddock: Vec<&str> = out
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("PADDOCK_"))
        .collect();
    paddock.sort_unstable();
    assert_eq!(
        paddock,
        [
            "PADDOCK_AGENT_ID=agent-3",
            "PADDOCK_ATTEMPT_ID=attempt-7",
            "PADDOCK_TASK_ID=task-1"
        ]
    );
    assert!(!out.iter().any(|l| l.contains("secret-daemon-token")));
    assert!(
        out.iter().any(|l| l == &format!("{ENV_CHILD_VAR}=1")),
        "ordinary vars are inherited"
    );
}

#[test]
fn env_never_carries_the_daemon_token() {
    let path = module_path!();
    let rel = path.split_once("::").map_or(path, |(_, rest)| rest);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("{rel}::env_child"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD_VAR, "1")
        .env("PADDOCK_DAEMON_TOKEN", "secret-daemon-token")
        .env("PADDOCK_SERVER_URL", "https://paddock.example")
        .env("PADDOCK_TASK_ID", "the-daemons-own")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child test did not run: {stdout}"
    );
}
