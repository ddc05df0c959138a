//! Compaction, and recovery from a crash between its steps.

use std::fs;
use std::path::Path;

use serde_json::json;

use super::super::recover::{encode_live, rename_tmp, write_tmp};
use super::{body, eager, ids, journal_len, open};
use crate::journal::{Entry, Journal};

#[tokio::test]
async fn compaction_keeps_exactly_the_unacked_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open_with(dir.path(), eager()).await.unwrap();
    let mut live = Vec::new();
    let mut max_len = 0;
    for i in 0..1500u64 {
        let key = format!("attempt-{}", i % 13);
        let b = json!({ "i": i, "pad": "p".repeat(64) });
        let id = j.append(&key, b.clone()).await.unwrap();
        if i.is_multiple_of(10) {
            live.push(Entry { id, key, body: b });
        } else {
            j.ack(id).await.unwrap();
        }
        max_len = max_len.max(journal_len(dir.path()));
    }
    // ~150 live entries of ~130 bytes; without compaction the file would be
    // ~250 KB of appends and acks.
    let live_bytes: u64 = 150 * 140;
    assert!(
        max_len < 3 * live_bytes + 32 * 1024,
        "file grew to {max_len}"
    );
    assert_eq!(j.pending(), live);
    j.close().await.unwrap();

    let (j, replay) = Journal::open_with(dir.path(), eager()).await.unwrap();
    assert_eq!(replay, live);
    let next = j.append("later", body(1)).await.unwrap();
    assert_eq!(next, 1501, "ids are never reused");
    j.close().await.unwrap();
}

#[tokio::test]
async fn ids_are_not_reused_after_everything_was_acked_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(dir.path()).await;
    for i in 0..50 {
        let id = j.append("a", body(i)).await.unwrap();
        j.ack(id).await.unwrap();
    }
    j.close().await.unwrap();
    let (j, replay) = open(dir.path()).await;
    assert!(replay.is_empty());
    // Open compacted the file down to its header.
    assert!(
        journal_len(dir.path()) < 64,
        "len {}",
        journal_len(dir.path())
    );
    assert_eq!(j.append("a", body(0)).await.unwrap(), 51);
    j.close().await.unwrap();
}

/// A journal holding 20 entries of which every third is still live.
async fn half_acked(dir: &Path) -> Vec<Entry> {
    let (j, _) = open(dir).await;
    for i in 0..20u64 {
        let id = j.append(&format!("k{i}"), body(i)).await.unwrap();
        if !i.is_multiple_of(3) {
            j.ack(id).await.unwrap();
        }
    }
    let live = j.pending();
    j.close().await.unwrap();
    live
}

fn image(next_id: u64, live: &[Entry]) -> Vec<u8> {
    encode_live(
        next_id,
        live.iter().map(|e| (e.id, e.key.as_str(), &e.body)),
    )
    .unwrap()
}

#[tokio::test]
async fn crash_while_writing_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let live = half_acked(dir.path()).await;
    let old = fs::read(dir.path().join("journal")).unwrap();
    let img = image(21, &live);
    fs::write(dir.path().join("journal.tmp"), &img[..img.len() / 2]).unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(replay, live);
    assert!(!dir.path().join("journal.tmp").exists());
    j.close().await.unwrap();
    assert_ne!(
        fs::read(dir.path().join("journal")).unwrap(),
        old,
        "open compacted"
    );
}

#[tokio::test]
async fn crash_after_the_temp_file_was_synced_before_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let live = half_acked(dir.path()).await;
    // A complete image that must NOT be taken for the journal (here it even
    // lacks the newest live entry): only the rename makes it authoritative.
    write_tmp(dir.path(), &image(21, &live[..live.len() - 1])).unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(replay, live);
    assert!(!dir.path().join("journal.tmp").exists());
    j.close().await.unwrap();
}

#[tokio::test]
async fn crash_after_the_rename_before_the_directory_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let live = half_acked(dir.path()).await;
    drop(write_tmp(dir.path(), &image(21, &live)).unwrap());
    rename_tmp(dir.path()).unwrap();

    let (j, replay) = open(dir.path()).await;
    assert_eq!(replay, live);
    assert_eq!(j.append("next", body(0)).await.unwrap(), 21);
    j.close().await.unwrap();
    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay).last(), Some(&21));
    j.close().await.unwrap();
}
