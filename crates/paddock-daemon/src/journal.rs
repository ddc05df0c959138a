//! The durable report journal: every report the daemon will send to the
//! server is written here and fsynced *before* it is sent, stays until the
//! server gave a final answer (then it is acked), and is replayed in write
//! order when the daemon starts again.
//!
//! # What it owns
//! `<state dir>/journal` (the records), `<state dir>/lock` (an exclusive,
//! non-blocking `flock` so two daemons on one state dir fail fast with
//! [`JournalError::Locked`]), and the transient `journal.tmp` (compaction)
//! and `journal.corrupt-<unix secs>` (a copy kept for forensics when a
//! damaged record had to be skipped).
//!
//! # Format
//! An append-only file of frames `len: u32 LE | crc: u32 LE | payload`,
//! where `payload` is `len` bytes of JSON (`{"op":"header"|"append"|"ack",..}`)
//! and `crc` is CRC32 over the four length bytes followed by the payload. The
//! first record is a header with the format version and the id floor, so ids
//! are never reused even after every entry was acked and compacted away. Ids
//! are assigned by the single writer, hence id order *is* write order.
//!
//! # Durability
//! One writer thread owns the file. [`Journal::append`] hands its record to
//! it and returns only after the batch containing it was written and
//! `fdatasync`ed. Appends that arrive while an fsync is in progress are
//! written and synced together by the next one (group commit), so N
//! concurrent appends cost far fewer than N fsyncs. Acks are written (to the
//! page cache, so they survive a `kill -9` of the daemon) but not fsynced on
//! their own; the next append's fsync or [`Journal::close`] makes them
//! durable. A lost ack only means a resend, which the server answers
//! idempotently. Any write or fsync failure poisons the handle
//! ([`JournalError::Failed`]): after a failed fsync the kernel's page-cache
//! state is unknown, so the only safe continuation is reopen-and-recover.
//!
//! # Recovery (at [`Journal::open`])
//! * A torn tail (the last record cut short or garbage after the last good
//!   record, as a crash during a write leaves it) is dropped with a warning.
//!   Nothing `append` returned for can be in it: that was fsynced first.
//! * A damaged record *in the middle* (bytes that fail the checksum with good
//!   records after them, i.e. media corruption, or a power loss that left a
//!   hole in the last unsynced batch) is **skipped with a loud `error!`** that
//!   names the file and the byte range, and the whole file is first copied to
//!   `journal.corrupt-<unix secs>`. Chosen over refusing to start because the
//!   damaged bytes are unrecoverable either way, while refusing would stop the
//!   daemon from delivering every *other* report until a human intervenes.
//!   Resynchronising is reliable because serialized JSON never contains a NUL
//!   byte while every frame header does (payloads are < 16 MiB), so a scan
//!   for the next valid frame cannot lock onto bytes inside a payload.
//! * A record whose checksum is valid but which cannot be decoded (a newer
//!   format) is a hard error ([`JournalError::Undecodable`]): skipping it
//!   would silently drop data that is intact.
//! * A leftover `journal.tmp` is an interrupted compaction and is deleted;
//!   the journal itself is still the complete old one (see below).
//!
//! # Compaction
//! When acked records dominate (by default the file is over 4 MiB and over
//! 75 % dead) the writer rewrites the live entries into `journal.tmp`,
//! fsyncs it, renames it over `journal`, fsyncs the directory, and only then
//! writes to the new file. A crash before the rename leaves the old journal
//! (plus a temp file that open deletes); after it, the new one, which holds
//! exactly the un-acked entries. Both are complete. Open also compacts
//! whenever the file holds anything dead (acks, torn or damaged bytes).
//!
//! # Memory
//! Un-acked entries are kept in memory (they are in flight anyway); acked
//! ones are dropped at once, and recovery streams the file through a small
//! window instead of reading it whole.
//!
//! # Why not SQLite
//! It would need a C build on every user's machine, and buys nothing here:
//! one writer, a purely sequential append-then-ack workload, and a recovery
//! rule ("drop the torn tail") that fits in one screen. An explicit file makes
//! the fsync points, group commit and crash behaviour visible and testable.
//!
//! # API additions (beyond the brief)
//! [`Journal::open_with`] and [`JournalOptions`] make the compaction
//! thresholds adjustable (tests use tiny ones). Records are limited to
//! [`MAX_RECORD_BYTES`] ([`JournalError::TooLarge`]), which keeps a corrupt
//! length from causing a huge allocation and backs the NUL-byte argument.

mod format;
mod recover;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use format::MAX_RECORD_BYTES;

/// One report waiting for the server's final answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Unique for the lifetime of the journal; increasing in write order.
    pub id: u64,
    /// The attempt id the report belongs to.
    pub key: String,
    /// The report itself.
    pub body: Value,
}

/// Tuning knobs; [`Default`] is what the daemon uses.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Never compact a file smaller than this.
    pub compact_min_bytes: u64,
    /// Compact when more than this fraction of the file is dead (acked).
    pub compact_dead_ratio: f64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            compact_min_bytes: 4 * 1024 * 1024,
            compact_dead_ratio: 0.75,
        }
    }
}

/// Everything that can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process (another daemon) holds the state-dir lock.
    #[error("state dir is locked by another daemon{}: {}", holder_text(*.holder_pid), .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written into the lock file by its holder, if readable.
        holder_pid: Option<u32>,
    },
    /// An I/O error while opening, recovering or compacting.
    #[error("journal: cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A checksum-valid record that this version cannot decode.
    #[error("journal {} has an intact record at offset {offset} that this daemon cannot decode ({reason}); refusing to drop it", .path.display())]
    Undecodable {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The header names a format version this daemon does not know.
    #[error("journal {} has unsupported format version {version}", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// The record would exceed [`MAX_RECORD_BYTES`].
    #[error("journal record of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The body could not be serialized.
    #[error("journal: cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
    /// `ack` of an id that was never returned by `append`.
    #[error("journal: id {0} was never issued")]
    UnknownId(u64),
    /// An earlier write or fsync failed; the handle refuses further writes.
    /// Reopen the journal (restart the daemon) to recover from disk.
    #[error("journal {} failed earlier and refuses further writes until reopened: {source}", .path.display())]
    Failed {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The journal was closed.
    #[error("journal is closed")]
    Closed,
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Handle to the journal; cheap to clone, usable from many tasks at once.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<writer::Cmd>,
    shared: Arc<Shared>,
}

/// State shared between the handles and the writer thread.
struct Shared {
    state: Mutex<State>,
}

struct State {
    /// Durable, un-acked entries by id (= write order).
    pending: BTreeMap<u64, Live>,
    /// Sum of the frame sizes of `pending`.
    live_bytes: u64,
    /// Every id below this was issued (appended durably).
    next_id: u64,
    /// Number of fsyncs of appended data (lets tests see group commit).
    syncs: u64,
}

struct Live {
    key: String,
    body: Value,
    /// Size of the frame in the file.
    size: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent
        // in a way that matters more than losing the daemon: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Journal {
    /// Opens (creating) `<dir>/journal`, recovers, compacts; returns the
    /// handle and the un-acked entries in write order.
    pub async fn open(dir: &Path) -> Result<(Journal, Vec<Entry>), JournalError> {
        Self::open_with(dir, JournalOptions::default()).await
    }

    /// [`Journal::open`] with explicit compaction thresholds.
    pub async fn open_with(
        dir: &Path,
        opts: JournalOptions,
    ) -> Result<(Journal, Vec<Entry>), JournalError> {
        let dir = dir.to_path_buf();
        let recovered = match tokio::task::spawn_blocking(move || recover::open_dir(&dir)).await {
            Ok(r) => r?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let entries = recovered
            .pending
            .iter()
            .map(|(&id, l)| Entry {
                id,
                key: l.key.clone(),
                body: l.body.clone(),
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                live_bytes: recovered.pending.values().map(|l| l.size).sum(),
                pending: recovered.pending,
                next_id: recovered.next_id,
                syncs: 0,
            }),
        });
        let tx = writer::start(recovered.files, recovered.next_id, opts, shared.clone())?;
        Ok((
            Journal {
                inner: Arc::new(Inner { tx, shared }),
            },
            entries,
        ))
    }

    /// Durable when it returns: written and fsynced. Concurrent appends
    /// share one fsync (group commit). Returns the entry's id.
    pub async fn append(&self, key: &str, body: Value) -> Result<u64, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Cmd::Append {
            key: key.to_owned(),
            body,
            reply,
        })?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// The entry got its final answer. Returns once the ack is written (it
    /// survives a crash of the daemon, not yet a power loss); it becomes
    /// durable with the next append's fsync or at [`Journal::close`]. Acking
    /// an already acked id is a no-op.
    pub async fn ack(&self, id: u64) -> Result<(), JournalError> {
        {
            let mut st = self.inner.shared.lock();
            if id >= st.next_id {
                return Err(JournalError::UnknownId(id));
            }
            match st.pending.remove(&id) {
                Some(live) => st.live_bytes = st.live_bytes.saturating_sub(live.size),
                None => return Ok(()),
            }
        }
        let (reply, rx) = oneshot::channel();
        self.send(writer::Cmd::Ack { id, reply })?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Un-acked entries now, in write order.
    pub fn pending(&self) -> Vec<Entry> {
        let st = self.inner.shared.lock();
        st.pending
            .iter()
            .map(|(&id, l)| Entry {
                id,
                key: l.key.clone(),
                body: l.body.clone(),
            })
            .collect()
    }

    /// Flushes and fsyncs everything and releases the state-dir lock (call
    /// at shutdown). Afterwards every handle answers [`JournalError::Closed`];
    /// closing again is a no-op.
    pub async fn close(&self) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(writer::Cmd::Close { reply }).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    fn send(&self, cmd: writer::Cmd) -> Result<(), JournalError> {
        self.inner.tx.send(cmd).map_err(|_| JournalError::Closed)
    }

    #[cfg(test)]
    fn sync_count(&self) -> u64 {
        self.inner.shared.lock().syncs
    }
}
