//! The single writer thread: group commit, acks, compaction, close.
//!
//! It takes every queued command at once, encodes them into one buffer,
//! issues one `write` and (if the batch holds appends) one `fdatasync`, then
//! publishes the new entries and answers the callers. Commands that arrive
//! during the fsync form the next batch: that is the group commit.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use nix::fcntl::Flock;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::format::{self, RecordRef};
use super::recover;
use super::{JournalError, JournalOptions, Live, Shared};

/// Upper bound on commands per batch (keeps one batch's buffer bounded).
const MAX_BATCH: usize = 4096;
/// Capacity of the batch buffer kept between batches.
const RETAINED_BUF: usize = 1 << 20;

pub(super) enum Cmd {
    Append {
        key: String,
        body: Value,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    Ack {
        id: u64,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// The open journal file, its directory and the state-dir lock; all owned
/// by the writer and released together when it stops.
pub(super) struct Files {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    _lock: Flock<File>,
}

impl Files {
    pub(super) fn new(dir: &Path, file: File, len: u64, lock: Flock<File>) -> Self {
        Files {
            dir: dir.to_path_buf(),
            path: recover::journal_path(dir),
            file,
            len,
            _lock: lock,
        }
    }
}

struct Writer {
    files: Files,
    next_id: u64,
    opts: JournalOptions,
    shared: Arc<Shared>,
    poisoned: Option<Arc<io::Error>>,
    buf: Vec<u8>,
    /// After a failed compaction, do not retry before the file reaches this.
    retry_compact_at: u64,
}

struct Appended {
    id: u64,
    key: String,
    body: Value,
    size: u64,
    reply: oneshot::Sender<Result<u64, JournalError>>,
}

pub(super) fn start(
    files: Files,
    next_id: u64,
    opts: JournalOptions,
    shared: Arc<Shared>,
) -> Result<mpsc::UnboundedSender<Cmd>, JournalError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let path = files.path.clone();
    let writer = Writer {
        files,
        next_id,
        opts,
        shared,
        poisoned: None,
        buf: Vec::new(),
        retry_compact_at: 0,
    };
    thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|source| JournalError::Io {
            op: "start the writer thread for",
            path,
            source,
        })?;
    Ok(tx)
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut batch = Vec::new();
        loop {
            // `None`: every handle is gone; flush and stop as `close` would.
            let Some(first) = rx.blocking_recv() else {
                if let Err(e) = self.shutdown() {
                    error!("journal: final flush failed: {e}");
                }
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if let Some(reply) = self.process(&mut batch) {
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    refuse(cmd);
                }
                let res = self.shutdown();
                // Dropping `self` releases the file and the lock before the
                // caller of `close` hears back.
                drop(self);
                let _ = reply.send(res);
                return;
            }
            self.maybe_compact();
        }
    }

    /// Writes one batch; returns the reply of a `Close` found in it.
    fn process(
        &mut self,
        batch: &mut Vec<Cmd>,
    ) -> Option<oneshot::Sender<Result<(), JournalError>>> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut appended = Vec::new();
        let mut acked = Vec::new();
        let mut close = None;
        for cmd in batch.drain(..) {
            if close.is_some() {
                refuse(cmd);
                continue;
            }
            match cmd {
                Cmd::Close { reply } => close = Some(reply),
                Cmd::Append { reply, .. } if self.poisoned.is_some() => {
                    let _ = reply.send(Err(self.failed()));
                }
                Cmd::Ack { reply, .. } if self.poisoned.is_some() => {
                    let _ = reply.send(Err(self.failed()));
                }
                Cmd::Append { key, body, reply } => {
                    let rec = RecordRef::Append {
                        id: self.next_id,
                        key: &key,
                        body: &body,
                    };
                    match format::encode(&rec, &mut buf) {
                        Ok(size) => {
                            appended.push(Appended {
                                id: self.next_id,
                                key,
                                body,
                                size,
                                reply,
                            });
                            self.next_id += 1;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Cmd::Ack { id, reply } => match format::encode(&RecordRef::Ack { id }, &mut buf) {
                    Ok(_) => acked.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
        let res = if buf.is_empty() {
            Ok(())
        } else {
            // Positioned writes: the file offset is never relied upon.
            let file = &self.files.file;
            file.write_all_at(&buf, self.files.len).and_then(|()| {
                if appended.is_empty() {
                    Ok(())
                } else {
                    file.sync_data()
                }
            })
        };
        match res {
            Ok(()) => {
                self.files.len += buf.len() as u64;
                let mut st = self.shared.lock();
                if !appended.is_empty() {
                    st.syncs += 1;
                }
                st.next_id = self.next_id;
                let mut ids = Vec::with_capacity(appended.len());
                for a in appended {
                    st.live_bytes += a.size;
                    st.pending.insert(
                        a.id,
                        Live {
                            key: a.key,
                            body: a.body,
                            size: a.size,
                        },
                    );
                    ids.push((a.id, a.reply));
                }
                drop(st);
                for (id, reply) in ids {
                    let _ = reply.send(Ok(id));
                }
                for reply in acked {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                self.poison(e);
                for a in appended {
                    let _ = a.reply.send(Err(self.failed()));
                }
                for reply in acked {
                    let _ = reply.send(Err(self.failed()));
                }
            }
        }
        // Keep a reasonable buffer for the next batch, not the largest ever.
        buf.clear();
        buf.shrink_to(RETAINED_BUF);
        self.buf = buf;
        close
    }

    fn maybe_compact(&mut self) {
        let len = self.files.len;
        if self.poisoned.is_some()
            || len < self.opts.compact_min_bytes
            || len < self.retry_compact_at
        {
            return;
        }
        let image = {
            let st = self.shared.lock();
            let dead = len.saturating_sub(st.live_bytes);
            if (dead as f64) <= self.opts.compact_dead_ratio * len as f64 {
                return;
            }
            recover::encode_live(
                self.next_id,
                st.pending
                    .iter()
                    .map(|(&id, l)| (id, l.key.as_str(), &l.body)),
            )
        };
        let dir = self.files.dir.clone();
        let step = image.and_then(|image| {
            let file = recover::write_tmp(&dir, &image)?;
            recover::rename_tmp(&dir)?;
            Ok((file, image.len() as u64))
        });
        match step {
            Ok((file, new_len)) => {
                // The new file is in place: from now on only it may be written.
                self.files.file = file;
                self.files.len = new_len;
                if let Err(e) = recover::sync_dir(&dir) {
                    error!("journal compaction: {e}");
                    let source = match e {
                        JournalError::Io { source, .. } => source,
                        other => io::Error::other(other.to_string()),
                    };
                    self.poison(source);
                }
            }
            Err(e) => {
                warn!("journal compaction failed, keeping the old file: {e}");
                self.retry_compact_at = len.saturating_mul(2);
            }
        }
    }

    fn shutdown(&mut self) -> Result<(), JournalError> {
        if self.poisoned.is_some() {
            return Err(self.failed());
        }
        self.files
            .file
            .sync_all()
            .map_err(|source| JournalError::Io {
                op: "fsync",
                path: self.files.path.clone(),
                source,
            })
    }

    fn poison(&mut self, e: io::Error) {
        error!(path = %self.files.path.display(), "journal write failed, refusing further writes: {e}");
        self.poisoned = Some(Arc::new(e));
    }

    fn failed(&self) -> JournalError {
        let source = match &self.poisoned {
            Some(e) => e.clone(),
            None => Arc::new(io::Error::other("journal failed")),
        };
        JournalError::Failed {
            path: self.files.path.clone(),
            source,
        }
    }
}

fn refuse(cmd: Cmd) {
    match cmd {
        Cmd::Append { reply, .. } => {
            let _ = reply.send(Err(JournalError::Closed));
        }
        Cmd::Ack { reply, .. } => {
            let _ = reply.send(Err(JournalError::Closed));
        }
        // Closing a closed journal is a no-op.
        Cmd::Close { reply } => {
            let _ = reply.send(Ok(()));
        }
    }
}
