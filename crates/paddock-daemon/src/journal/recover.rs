//! Opening a state dir: the lock, the recovery scan, and the crash-safe
//! rewrite (`journal.tmp` -> fsync -> rename -> fsync dir) shared with
//! compaction.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use tracing::{error, warn};

use super::format::{self, Probe, Record, RecordRef, Window};
use super::writer::Files;
use super::{JournalError, Live};

pub(super) const JOURNAL: &str = "journal";
pub(super) const TMP: &str = "journal.tmp";
pub(super) const LOCK: &str = "lock";

pub(super) struct Recovered {
    pub(super) pending: BTreeMap<u64, Live>,
    pub(super) next_id: u64,
    pub(super) files: Files,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Locks `dir`, recovers `dir/journal` and leaves it clean (compacted when
/// it held anything dead). Blocking; run it off the async threads.
pub(super) fn open_dir(dir: &Path) -> Result<Recovered, JournalError> {
    create_state_dir(dir)?;
    let lock = lock_dir(dir)?;
    let path = dir.join(JOURNAL);
    let tmp = dir.join(TMP);
    match fs::remove_file(&tmp) {
        Ok(()) => warn!(path = %tmp.display(), "removed the leftover of an interrupted compaction"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    let file = match File::options().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes = encode_live(1, std::iter::empty())?;
            let (file, len) = install(dir, &bytes)?;
            return Ok(Recovered {
                pending: BTreeMap::new(),
                next_id: 1,
                files: Files::new(dir, file, len, lock),
            });
        }
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let scan = scan(&file, &path)?;
    if !scan.damaged.is_empty() {
        keep_corrupt_copy(dir, &path);
    }
    if !scan.dead {
        return Ok(Recovered {
            pending: scan.pending,
            next_id: scan.next_id,
            files: Files::new(dir, file, scan.len, lock),
        });
    }
    drop(file);
    let bytes = encode_live(
        scan.next_id,
        scan.pending
            .iter()
            .map(|(&id, l)| (id, l.key.as_str(), &l.body)),
    )?;
    let (file, len) = install(dir, &bytes)?;
    Ok(Recovered {
        pending: scan.pending,
        next_id: scan.next_id,
        files: Files::new(dir, file, len, lock),
    })
}

/// Creates `dir` (and missing ancestors) durably: a journal fsynced inside a
/// directory whose own entry was never fsynced could vanish on power loss.
fn create_state_dir(dir: &Path) -> Result<(), JournalError> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(io_err("create state dir", dir))?;
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Takes the exclusive, non-blocking `flock` on `dir/lock` and writes our
/// pid into it (for the error message of the next daemon that tries).
fn lock_dir(dir: &Path) -> Result<Flock<File>, JournalError> {
    let path = dir.join(LOCK);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let pid = format!("{}\n", std::process::id());
            lock.set_len(0)
                .and_then(|()| lock.write_all_at(pid.as_bytes(), 0))
                .map_err(io_err("write lock file", &path))?;
            Ok(lock)
        }
        Err((file, Errno::EWOULDBLOCK)) => {
            let mut text = [0u8; 32];
            let n = file.read_at(&mut text, 0).unwrap_or(0);
            let holder_pid = std::str::from_utf8(&text[..n])
                .ok()
                .and_then(|s| s.trim().parse().ok());
            Err(JournalError::Locked { path, holder_pid })
        }
        Err((_, errno)) => Err(io_err("lock", &path)(errno.into())),
    }
}

struct Scan {
    pending: BTreeMap<u64, Live>,
    next_id: u64,
    /// Length of the file as scanned.
    len: u64,
    /// Anything besides the header and live appends (acks, torn or damaged
    /// bytes, a missing header): worth rewriting.
    dead: bool,
    /// Skipped byte ranges with good records after them.
    damaged: Vec<(u64, u64)>,
}

fn scan(file: &File, path: &Path) -> Result<Scan, JournalError> {
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut win = Window::new(file, len);
    let read_err = io_err("read", path);
    let mut s = Scan {
        pending: BTreeMap::new(),
        next_id: 1,
        len,
        dead: false,
        damaged: Vec::new(),
    };
    let mut seen_header = false;
    let mut off = 0u64;
    let mut probe_err = None;
    while off < len {
        let probe = match win.probe(off) {
            Ok(p) => p,
            Err(e) => {
                probe_err = Some(e);
                break;
            }
        };
        match probe {
            Probe::Record(rec, size) => {
                apply(&mut s, &mut seen_header, rec, size, path, off)?;
                off += size;
            }
            Probe::Undecodable(reason) => {
                return Err(JournalError::Undecodable {
                    path: path.to_path_buf(),
                    offset: off,
                    reason,
                });
            }
            Probe::Bad => {
                s.dead = true;
                let mut next = None;
                for cand in off + 1..len {
                    match win.probe(cand) {
                        Ok(Probe::Bad) => {}
                        Ok(Probe::Record(..)) => {
                            next = Some(cand);
                            break;
                        }
                        Ok(Probe::Undecodable(reason)) => {
                            return Err(JournalError::Undecodable {
                                path: path.to_path_buf(),
                                offset: cand,
                                reason,
                            });
                        }
                        Err(e) => {
                            probe_err = Some(e);
                            break;
                        }
                    }
                }
                match next {
                    Some(next) => {
                        error!(
                            path = %path.display(),
                            offset = off,
                            bytes = next - off,
                            "JOURNAL CORRUPTION: skipping damaged bytes {off}..{next} of {}; \
                             the report(s) stored there are lost, later records are kept",
                            path.display()
                        );
                        s.damaged.push((off, next));
                        off = next;
                    }
                    None => {
                        if probe_err.is_none() {
                            warn!(
                                path = %path.display(),
                                offset = off,
                                bytes = len - off,
                                "dropping a torn tail of the journal (an interrupted write)"
                            );
                        }
                        break;
                    }
                }
            }
        }
        if probe_err.is_some() {
            break;
        }
    }
    if let Some(e) = probe_err {
        return Err(read_err(e));
    }
    s.dead |= !seen_header;
    Ok(s)
}

fn apply(
    s: &mut Scan,
    seen_header: &mut bool,
    rec: Record,
    size: u64,
    path: &Path,
    off: u64,
) -> Result<(), JournalError> {
    match rec {
        Record::Header { version, next_id } => {
            if version != format::VERSION {
                return Err(JournalError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    version,
                });
            }
            *seen_header = true;
            s.next_id = s.next_id.max(next_id);
        }
        Record::Append { id, key, body } => {
            match s.pending.entry(id) {
                Entry::Vacant(slot) => {
                    slot.insert(Live { key, body, size });
                }
                Entry::Occupied(_) => {
                    warn!(path = %path.display(), offset = off, id, "duplicate journal id; keeping the first");
                    s.dead = true;
                }
            }
            s.next_id = s.next_id.max(id + 1);
        }
        Record::Ack { id } => {
            s.pending.remove(&id);
            s.dead = true;
        }
    }
    Ok(())
}

/// Copies a damaged journal aside before it is rewritten. Best effort: the
/// loud log line is the primary signal.
fn keep_corrupt_copy(dir: &Path, path: &Path) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut copy = dir.join(format!("{JOURNAL}.corrupt-{secs}"));
    let mut n = 1;
    while copy.exists() {
        copy = dir.join(format!("{JOURNAL}.corrupt-{secs}.{n}"));
        n += 1;
    }
    match fs::copy(path, &copy) {
        Ok(_) => error!(copy = %copy.display(), "kept a copy of the damaged journal"),
        Err(e) => error!(copy = %copy.display(), "cannot keep a copy of the damaged journal: {e}"),
    }
}

/// A complete journal image: header, then the given live entries in order.
pub(super) fn encode_live<'a>(
    next_id: u64,
    entries: impl Iterator<Item = (u64, &'a str, &'a Value)>,
) -> Result<Vec<u8>, JournalError> {
    let mut buf = Vec::new();
    format::encode(
        &RecordRef::Header {
            version: format::VERSION,
            next_id,
        },
        &mut buf,
    )?;
    for (id, key, body) in entries {
        format::encode(&RecordRef::Append { id, key, body }, &mut buf)?;
    }
    Ok(buf)
}

/// Replaces `dir/journal` by `image`, crash-safe at every step; returns the
/// new file (open for appending) and its length.
pub(super) fn install(dir: &Path, image: &[u8]) -> Result<(File, u64), JournalError> {
    let file = write_tmp(dir, image)?;
    rename_tmp(dir)?;
    sync_dir(dir)?;
    Ok((file, image.len() as u64))
}

/// Step 1: `journal.tmp` holds `image`, fsynced. On failure it is removed.
pub(super) fn write_tmp(dir: &Path, image: &[u8]) -> Result<File, JournalError> {
    let tmp = dir.join(TMP);
    let res = (|| {
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
        Ok(f)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", &tmp)(e)
    })
}

/// Step 2: atomically put `journal.tmp` in place of `journal`.
pub(super) fn rename_tmp(dir: &Path) -> Result<(), JournalError> {
    let tmp = dir.join(TMP);
    fs::rename(&tmp, dir.join(JOURNAL)).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("rename into place", &tmp)(e)
    })
}

/// Step 3: make the rename durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The journal path for a state dir.
pub(super) fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL)
}
