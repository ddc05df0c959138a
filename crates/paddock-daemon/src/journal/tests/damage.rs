//! Torn tails, bit flips and undecodable records.

use std::fs;
use std::path::Path;

use super::super::format::{Probe, Window};
use super::{body, ids, journal_len, open};
use crate::journal::{Journal, JournalError};

/// `(offset, size)` of every frame in a clean journal file.
fn frames(path: &Path) -> Vec<(u64, u64)> {
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let mut win = Window::new(&file, len);
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        match win.probe(off).unwrap() {
            Probe::Record(_, size) => {
                out.push((off, size));
                off += size;
            }
            other => panic!("unexpected {other:?} at {off}"),
        }
    }
    out
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn corrupt_copies(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("journal.corrupt-")
        })
        .count()
}

/// Journal with entries 1..=n (no acks, so open leaves it byte-for-byte).
async fn journal_with(dir: &Path, n: u64) -> Vec<u64> {
    let (j, _) = open(dir).await;
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(j.append(&format!("attempt-{i}"), body(i)).await.unwrap());
    }
    j.close().await.unwrap();
    ids
}

#[tokio::test]
async fn torn_tail_at_every_byte_of_the_last_record_is_dropped() {
    let src = tempfile::tempdir().unwrap();
    let appended = journal_with(src.path(), 6).await;
    let full = fs::read(src.path().join("journal")).unwrap();
    let &(last_off, last_size) = frames(&src.path().join("journal")).last().unwrap();
    assert_eq!(last_off + last_size, full.len() as u64);

    for cut in last_off..last_off + last_size {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("journal"), &full[..cut as usize]).unwrap();
        let (j, replay) = open(dir.path()).await;
        assert_eq!(ids(&replay), appended[..5], "cut at {cut}");
        for (e, i) in replay.iter().zip(1u64..) {
            assert_eq!(e.body, body(i));
            assert_eq!(e.key, format!("attempt-{i}"));
        }
        // The torn bytes are gone, so what is appended now is readable.
        let next = j.append("after", body(99)).await.unwrap();
        j.close().await.unwrap();
        let (j, replay) = open(dir.path()).await;
        assert_eq!(replay.len(), 6, "cut at {cut}");
        assert_eq!(replay[5].id, next);
        assert_eq!(
            corrupt_copies(dir.path()),
            0,
            "a torn tail is not corruption"
        );
        j.close().await.unwrap();
    }
}

#[tokio::test]
async fn zero_filled_tail_is_a_torn_tail() {
    // What a power loss can leave: the size grew, the data never landed.
    let dir = tempfile::tempdir().unwrap();
    let appended = journal_with(dir.path(), 3).await;
    let clean = journal_len(dir.path());
    let mut bytes = fs::read(dir.path().join("journal")).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 64 * 1024));
    fs::write(dir.path().join("journal"), &bytes).unwrap();
    let (j, replay) = open(dir.path()).await;
    assert_eq!(ids(&replay), appended);
    j.close().await.unwrap();
    assert_eq!(journal_len(dir.path()), clean);
    assert_eq!(corrupt_copies(dir.path()), 0);
}

#[tokio::test]
async fn bit_flip_in_a_middle_record_skips_only_that_record() {
    let src = tempfile::tempdir().unwrap();
    let appended = journal_with(src.path(), 9).await;
    let full = fs::read(src.path().join("journal")).unwrap();
    let frames = frames(&src.path().join("journal"));
    // frames[0] is the header; frames[5] holds ids[4].
    let (off, size) = frames[5];
    let positions = [0, 1, 3, 4, 7, 8, 9, size / 2, size - 1];
    for pos in positions {
        for bit in [0u8, 3, 7] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = full.clone();
            bytes[(off + pos) as usize] ^= 1 << bit;
            fs::write(dir.path().join("journal"), &bytes).unwrap();

            let (j, replay) = open(dir.path()).await;
            let mut expect = appended.clone();
            expect.remove(4);
            assert_eq!(ids(&replay), expect, "flip at +{pos} bit {bit}");
            assert_eq!(
                corrupt_copies(dir.path()),
                1,
                "damaged file kept for forensics"
            );
            // The journal was rewritten clean: appends and reopen work.
            let next = j.append("after", body(42)).await.unwrap();
            assert!(next > appended[8]);
            j.close().await.unwrap();
            let (j, replay) = open(dir.path()).await;
            assert_eq!(replay.len(), 9);
            assert_eq!(corrupt_copies(dir.path()), 1, "no new damage");
            j.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn intact_but_undecodable_record_is_a_hard_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    journal_with(dir.path(), 2).await;
    let path = dir.path().join("journal");
    let mut bytes = fs::read(&path).unwrap();
    let offset = bytes.len() as u64;
    bytes.extend(frame(br#"{"op":"from_the_future","id":3}"#));
    fs::write(&path, &bytes).unwrap();
    let err = match Journal::open(dir.path()).await {
        Ok(_) => panic!("must refuse"),
        Err(e) => e,
    };
    match &err {
        JournalError::Undecodable {
            path: p, offset: o, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*o, offset);
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
    // Nothing was rewritten.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("journal"),
        frame(br#"{"op":"header","version":2,"next_id":1}"#),
    )
    .unwrap();
    assert!(matches!(
        Journal::open(dir.path()).await,
        Err(JournalError::UnsupportedVersion { version: 2, .. })
    ));
}
