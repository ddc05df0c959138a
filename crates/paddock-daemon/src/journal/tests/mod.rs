//! Journal tests: the API contract here, damage and compaction in their own
//! files, and the real SIGKILL test in `crash`.

mod compaction;
mod crash;
mod damage;

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Value, json};

use super::{Entry, Journal, JournalError, JournalOptions};

fn body(i: u64) -> Value {
    json!({ "n": i, "text": format!("report number {i}"), "ok": i.is_multiple_of(3) })
}

async fn open(dir: &Path) -> (Journal, Vec<Entry>) {
    Journal::open(dir).await.expect("open journal")
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

fn journal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("journal"))
        .expect("stat journal")
        .len()
}

#[test]
fn handles_are_shareable_across_tasks() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    fn sendable<T: Send + Sync + 'static>() {}
    shared::<Journal>();
    shared::<Entry>();
    sendable::<JournalError>();
}

#[tokio::test]
async fn append_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (j, replay) = open(dir.path()).await;
    assert!(replay.is_empty());
    let a = j.append("attempt-a", body(1)).await.unwrap();
    let b = j.append("attempt-b", body(2)).await.unwrap();
    let c = j.append("attempt-a", body(3)).await.unwrap();
    assert!(a < b && b < c);
    j.ack(b).await.unwrap();
    j.ack(b).await.unwrap(); // idempotent
    assert_eq!(ids(&j.pending()), vec![a, c]);
    j.close().await.unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(
        replay,
        vec![
            Entry {
                id: a,
                key: "attempt-a".into(),
                body: body(1)
            },
            Entry {
                id: c,
                key: "attempt-a".into(),
                body: body(3)
            },
        ]
    );
    assert_eq!(j.pending(), replay);
    // Ids keep increasing across restarts.
    let d = j.append("attempt-c", body(4)).await.unwrap();
    assert!(d > c);
    j.ack(a).await.unwrap();
    j.ack(c).await.unwrap();
    j.close().await.unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay), vec![d]);
    j.close().await.unwrap();
}

#[tokio::test]
async fn open_creates_missing_state_dirs() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/state");
    let (j, replay) = open(&dir).await;
    assert!(replay.is_empty());
    let id = j.append("k", body(1)).await.unwrap();
    j.close().await.unwrap();
    let (j, replay) = open(&dir).await;
    assert_eq!(ids(&replay), vec![id]);
    j.close().await.unwrap();
}

#[tokio::test]
async fn order_is_kept_across_acks_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let mut expect = Vec::new();
    for i in 0..100u64 {
        let id = j.append(&format!("k{}", i % 7), body(i)).await.unwrap();
        if i % 4 == 1 {
            j.ack(id).await.unwrap();
        } else {
            expect.push(Entry {
                id,
                key: format!("k{}", i % 7),
                body: body(i),
            });
        }
    }
    assert_eq!(j.pending(), expect);
    j.close().await.unwrap();
    for _ in 0..2 {
        let (j, replay) = open(dir.path()).await;
        assert_eq!(replay, expect);
        j.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_50_tasks_are_all_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50u64 {
        let j = j.clone();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20u64 {
                ids.push(
                    j.append(&format!("task-{t}"), json!({ "t": t, "i": i }))
                        .await
                        .unwrap(),
                );
            }
            (t, ids)
        });
    }
    let mut all = HashSet::new();
    let mut by_task = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let (t, ids) = res.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-task order");
        all.extend(ids.iter().copied());
        by_task.push((t, ids));
    }
    assert_eq!(all.len(), 1000, "ids are unique");
    let syncs = j.sync_count();
    assert!(
        syncs < 1000,
        "group commit: {syncs} fsyncs for 1000 appends"
    );
    j.close().await.unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(replay.len(), 1000);
    assert!(replay.windows(2).all(|w| w[0].id < w[1].id), "write order");
    for (t, ids) in by_task {
        for (i, id) in ids.into_iter().enumerate() {
            let e = replay.iter().find(|e| e.id == id).expect("recovered");
            assert_eq!(e.key, format!("task-{t}"));
            assert_eq!(e.body, json!({ "t": t, "i": i }));
        }
    }
    j.close().await.unwrap();
}

#[tokio::test]
async fn second_open_of_a_state_dir_fails_fast_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let err = match Journal::open(dir.path()).await {
        Ok(_) => panic!("second open must fail"),
        Err(e) => e,
    };
    match &err {
        JournalError::Locked { path, holder_pid } => {
            assert_eq!(path, &dir.path().join("lock"));
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().join("lock").display().to_string()),
        "{msg}"
    );
    j.close().await.unwrap();
    let (j, _) = open(dir.path()).await;
    j.close().await.unwrap();
}

#[tokio::test]
async fn closed_and_unknown_ids_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let id = j.append("a", body(1)).await.unwrap();
    assert!(matches!(j.ack(id + 1).await, Err(JournalError::UnknownId(x)) if x == id + 1));
    let other = j.clone();
    j.close().await.unwrap();
    j.close().await.unwrap();
    assert!(matches!(
        other.append("a", body(2)).await,
        Err(JournalError::Closed)
    ));
    assert!(matches!(other.ack(id).await, Err(JournalError::Closed)));
    // What was appended before close is still there.
    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay), vec![id]);
    j.close().await.unwrap();
}

#[tokio::test]
async fn oversized_record_is_refused_and_journal_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let huge = Value::String("x".repeat(super::MAX_RECORD_BYTES));
    assert!(matches!(
        j.append("a", huge).await,
        Err(JournalError::TooLarge { .. })
    ));
    let id = j.append("a", body(1)).await.unwrap();
    j.close().await.unwrap();
    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay), vec![id]);
    j.close().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_flushes_and_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    let id = j.append("a", body(1)).await.unwrap();
    let probe = std::fs::File::open(dir.path().join("lock")).unwrap();
    drop(j);
    // The writer thread releases the lock when it stops; a blocking flock
    // waits for exactly that (no sleeping).
    let probe = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(probe, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e)
    })
    .await
    .unwrap()
    .unwrap();
    drop(probe);
    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay), vec![id]);
    j.close().await.unwrap();
}

/// Small thresholds so tests (and the crash child) compact often.
fn eager() -> JournalOptions {
    JournalOptions {
        compact_min_bytes: 16 * 1024,
        compact_dead_ratio: 0.5,
    }
}
