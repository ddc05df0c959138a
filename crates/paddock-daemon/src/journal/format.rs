//! Record framing: `len: u32 LE | crc32(len bytes ++ payload): u32 LE | payload`,
//! payload = one JSON object. Also the windowed reader recovery scans with.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::JournalError;

/// Largest payload a record may have. Below 16 MiB, so the top byte of every
/// length is zero: a frame header always contains a NUL byte, which JSON
/// text never does (see the module doc on resynchronising).
pub const MAX_RECORD_BYTES: usize = (16 << 20) - 1;

/// Current on-disk format version (in the header record).
pub(super) const VERSION: u32 = 1;

pub(super) const HEADER_BYTES: usize = 8;

/// What a record says, as read back.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Record {
    Header { version: u32, next_id: u64 },
    Append { id: u64, key: String, body: Value },
    Ack { id: u64 },
}

/// What a record says, as written (borrows instead of cloning the body).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum RecordRef<'a> {
    Header {
        version: u32,
        next_id: u64,
    },
    Append {
        id: u64,
        key: &'a str,
        body: &'a Value,
    },
    Ack {
        id: u64,
    },
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// Appends one frame to `out` and returns its size; leaves `out` unchanged
/// on error.
pub(super) fn encode(rec: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<u64, JournalError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    if let Err(e) = serde_json::to_writer(&mut *out, rec) {
        out.truncate(start);
        return Err(e.into());
    }
    let payload_len = out.len() - start - HEADER_BYTES;
    if payload_len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(JournalError::TooLarge {
            size: payload_len,
            max: MAX_RECORD_BYTES,
        });
    }
    // Fits: checked against MAX_RECORD_BYTES (< 2^24) above.
    let len = (payload_len as u32).to_le_bytes();
    let crc = checksum(&len, &out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok((out.len() - start) as u64)
}

/// The result of trying to read a frame at some offset.
#[derive(Debug)]
pub(super) enum Probe {
    /// A valid record and its frame size.
    Record(Record, u64),
    /// Not a valid frame here (short, bad length or bad checksum).
    Bad,
    /// A valid checksum, but the payload does not decode.
    Undecodable(String),
}

/// Reads a file through a moving window, so scanning (sequentially or byte
/// by byte while resynchronising) neither reads the file whole nor issues a
/// syscall per probe.
pub(super) struct Window<'f> {
    file: &'f File,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW_BYTES: usize = 256 * 1024;

impl<'f> Window<'f> {
    pub(super) fn new(file: &'f File, len: u64) -> Self {
        Window {
            file,
            len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// `n` bytes at `off`, or `None` if the file ends before that.
    fn get(&mut self, off: u64, n: usize) -> io::Result<Option<&[u8]>> {
        let end = off.saturating_add(n as u64);
        if end > self.len {
            return Ok(None);
        }
        let have = off >= self.start && end <= self.start + self.buf.len() as u64;
        if !have {
            let want = (n.max(WINDOW_BYTES) as u64).min(self.len - off) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, off)?;
            self.start = off;
        }
        let at = (off - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }

    /// Tries to read a frame at `off`. Cheap rejections first: a zero or
    /// oversized length, or a payload not starting with `{`.
    pub(super) fn probe(&mut self, off: u64) -> io::Result<Probe> {
        let Some(head) = self.get(off, HEADER_BYTES + 1)? else {
            return Ok(Probe::Bad);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD_BYTES || head[HEADER_BYTES] != b'{' {
            return Ok(Probe::Bad);
        }
        let Some(frame) = self.get(off, HEADER_BYTES + len)? else {
            return Ok(Probe::Bad);
        };
        let payload = &frame[HEADER_BYTES..];
        if checksum(&frame[..4], payload) != crc {
            return Ok(Probe::Bad);
        }
        Ok(match serde_json::from_slice::<Record>(payload) {
            Ok(rec) => Probe::Record(rec, (HEADER_BYTES + len) as u64),
            Err(e) => Probe::Undecodable(e.to_string()),
        })
    }
}
