//! The real crash test: a child process (this test binary, re-executed)
//! appends and acks as fast as it can and prints every id `append` / `ack`
//! returned for; the parent SIGKILLs it mid-flight and checks the journal.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::eager;
use crate::journal::Journal;

const CHILD_DIR_VAR: &str = "DAEMON_CORE_JOURNAL_CRASH_CHILD_DIR";
const APPENDED: &str = "JOURNAL-APPENDED ";
const ACKING: &str = "JOURNAL-ACKING ";
const ACKED: &str = "JOURNAL-ACKED ";

/// Runs only as the re-executed child; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (j, _) = Journal::open_with(dir.as_ref(), eager()).await.unwrap();
        // Bounded in case the parent never kills us.
        let until = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until {
                    let b = json!({ "t": t, "i": i, "pad": "x".repeat(200) });
                    let id = j.append(&format!("attempt-{t}"), b).await.unwrap();
                    println!("{APPENDED}{id}");
                    if id.is_multiple_of(2) {
                        println!("{ACKING}{id}");
                        j.ack(id).await.unwrap();
                        println!("{ACKED}{id}");
                    }
                    i += 1;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn child_test_name() -> String {
    // "paddock_daemon::journal::tests::crash" -> "journal::tests::crash::crash_child",
    // so this keeps working when the module moves into another crate.
    let path = module_path!();
    let rel = path.split_once("::").map_or(path, |(_, rest)| rest);
    format!("{rel}::crash_child")
}

fn parse(line: &str, tag: &str) -> Option<u64> {
    let at = line.find(tag)?;
    line[at + tag.len()..].trim().parse().ok()
}

/// Notes one output line of the child; true if it reported an append.
fn record(line: &str, pending: &mut BTreeSet<u64>, acked: &mut BTreeSet<u64>) -> bool {
    if let Some(id) = parse(line, APPENDED) {
        pending.insert(id);
        return true;
    }
    // From here on the id may be either pending or acked after a kill.
    if let Some(id) = parse(line, ACKING) {
        pending.remove(&id);
    }
    if let Some(id) = parse(line, ACKED) {
        acked.insert(id);
    }
    false
}

#[test]
fn sigkill_loses_nothing_append_returned_for() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Ids known to be durable and un-acked (from earlier rounds or printed).
    let mut must_be_pending = BTreeSet::new();
    let mut acked = BTreeSet::new();
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                &child_test_name(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_VAR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Kill at a different point each round.
        let kill_after = 150 + round * 97;
        let mut appended_now = 0;
        let mut line = String::new();
        while appended_now < kill_after {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "child ended early (round {round})");
            if record(&line, &mut must_be_pending, &mut acked) {
                appended_now += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Whatever it printed before dying counts too.
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            if n == 0 {
                break;
            }
            record(&line, &mut must_be_pending, &mut acked);
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "child was killed");

        let (j, replay) = rt
            .block_on(Journal::open_with(dir.path(), eager()))
            .unwrap();
        let pending: BTreeSet<u64> = replay.iter().map(|e| e.id).collect();
        let missing: Vec<_> = must_be_pending.difference(&pending).collect();
        assert!(
            missing.is_empty(),
            "round {round}: lost appended ids {missing:?}"
        );
        let resurrected: Vec<_> = acked.intersection(&pending).collect();
        assert!(
            resurrected.is_empty(),
            "round {round}: acked ids came back {resurrected:?}"
        );
        assert!(replay.windows(2).all(|w| w[0].id < w[1].id), "write order");
        // Ids that were in flight at the kill and made it are durable now.
        must_be_pending.extend(pending);
        rt.block_on(j.close()).unwrap();
    }
}
