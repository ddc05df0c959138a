//! The posters: one per running attempt, each on its own keep-alive connection (as a daemon holds
//! one to its server), posting batches of B messages with increasing seqs back to back.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use serde::Deserialize;

use super::setup::Attempt;
use crate::harness::Conn;
use crate::stats::Latencies;

/// The `content` of the message at position `i` of a batch: 100 to 200 bytes of plain ASCII (no
/// character JSON escapes), the same for every batch and for the baseline.
pub fn contents(batch: usize) -> Vec<String> {
    const WORDS: &str =
        "the agent reads the file, runs the tests and writes a patch for the failing case; ";
    (0..batch)
        .map(|i| {
            let len = 100 + (i * 37) % 101;
            let mut s = format!("line {i}: ");
            while s.len() < len {
                s.push_str(WORDS);
            }
            s.truncate(len);
            s
        })
        .collect()
}

/// What a poster shares with the run.
pub struct Shared {
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub contents: Arc<[String]>,
    /// Messages posted (and accepted) so far per attempt: the next seq of its poster.
    pub posted: Arc<[AtomicU64]>,
    pub counted_from: Instant,
    pub end: Instant,
    pub bar: indicatif::ProgressBar,
}

#[derive(Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    truncated: bool,
}

/// Posts batches for attempt `idx` from the start of the run until `end`; a post that starts after
/// `counted_from` is counted (its latency recorded once per message).
pub async fn poster(
    shared: Arc<Shared>,
    idx: usize,
    attempt: Attempt,
) -> anyhow::Result<Latencies> {
    let path = format!("/api/v1/tasks/{}/messages", attempt.task_id);
    let mut conn = Conn::open(shared.addr, &shared.token).await?;
    // Everything but the seqs is built once.
    let head = format!(r#"{{"attempt_id":"{}","messages":["#, attempt.attempt_id);
    let tails: Vec<String> = shared
        .contents
        .iter()
        .map(|c| format!(r#","kind":"text","content":"{c}"}}"#))
        .collect();
    let capacity = head.len() + tails.iter().map(|t| t.len() + 30).sum::<usize>() + 2;
    let batch = tails.len() as u64;
    let mut seq: u64 = 0;
    let mut lat = Latencies::default();
    loop {
        let t = Instant::now();
        if t >= shared.end {
            break;
        }
        let mut body = String::with_capacity(capacity);
        body.push_str(&head);
        for (i, tail) in tails.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            write!(body, r#"{{"seq":{}"#, seq + i as u64)?;
            body.push_str(tail);
        }
        body.push_str("]}");
        let answer = conn.post(&path, body).await?;
        let a: Answer = serde_json::from_slice(&answer).with_context(|| {
            format!(
                "messages of task {}: unexpected answer {}",
                attempt.task_id,
                String::from_utf8_lossy(&answer)
            )
        })?;
        ensure!(
            a.accepted == batch && a.duplicates == 0 && !a.truncated,
            "messages of task {} from seq {seq}: accepted {}, duplicates {}, truncated {} (expected {batch} accepted)",
            attempt.task_id,
            a.accepted,
            a.duplicates,
            a.truncated
        );
        seq += batch;
        shared.posted[idx].store(seq, Ordering::Release);
        if t >= shared.counted_from {
            lat.record_n(t.elapsed(), batch);
            shared.bar.inc(batch);
        }
    }
    Ok(lat)
}

#[cfg(test)]
mod tests {
    use super::contents;

    #[test]
    fn contents_are_100_to_200_plain_bytes() {
        let c = contents(500);
        assert!(c.iter().all(|s| (100..=200).contains(&s.len())));
        assert!(c.iter().all(|s| !s.contains(['"', '\\'])));
        assert!(c.iter().any(|s| s.len() == 200) && c.iter().any(|s| s.len() == 100));
    }
}
