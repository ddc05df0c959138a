//! Reading one pipe into bounded, lossily decoded lines.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::Line;

const CHUNK: usize = 64 * 1024;
/// Most bytes read once draining (a pipe buffer is 64 KiB on Linux).
const DRAIN_READ_LIMIT: usize = 1 << 20;

/// Reads `pipe` to EOF, sending each line; once `drain` turns true, stops
/// at the first moment the pipe has nothing buffered (or after
/// [`DRAIN_READ_LIMIT`] more bytes), even if it is still open.
/// If the receiver is gone, output is still read (so the agent never blocks
/// on a full pipe) and discarded.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    mut pipe: R,
    wrap: fn(String) -> Line,
    tx: mpsc::Sender<Line>,
    mut drain: watch::Receiver<bool>,
    max: usize,
) {
    let mut tx = Some(tx);
    let mut split = Splitter::new(max);
    let mut chunk = vec![0u8; CHUNK];
    let mut out = Vec::new();
    // Once told to drain, only output already sitting in the pipe is taken
    // (bounded, against a writer that escaped the group and never stops).
    let mut draining = false;
    let mut drained = 0usize;
    loop {
        if !draining && *drain.borrow() {
            draining = true;
        }
        let res = if draining {
            if drained >= DRAIN_READ_LIMIT {
                break;
            }
            // A zero timeout polls the read exactly once.
            match tokio::time::timeout(Duration::ZERO, pipe.read(&mut chunk)).await {
                Ok(res) => res,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                res = pipe.read(&mut chunk) => res,
                // `Err`: the supervisor is gone (runtime shutdown): drain too.
                _ = drain.wait_for(|stop| *stop) => {
                    draining = true;
                    continue;
                }
            }
        };
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("reading agent output failed: {e}");
                break;
            }
        };
        if draining {
            drained += n;
        }
        split.push(&chunk[..n], &mut out);
        for line in out.drain(..) {
            deliver(&mut tx, wrap(line)).await;
        }
    }
    if draining {
        debug!("stopped reading agent output: the drain timeout after the group ended passed");
    }
    if let Some(line) = split.finish() {
        deliver(&mut tx, wrap(line)).await;
    }
}

async fn deliver(tx: &mut Option<mpsc::Sender<Line>>, line: Line) {
    if let Some(sender) = tx
        && sender.send(line).await.is_err()
    {
        *tx = None;
    }
}

/// Splits a byte stream into lines of at most `max` bytes.
pub(super) struct Splitter {
    buf: Vec<u8>,
    max: usize,
}

impl Splitter {
    pub(super) fn new(max: usize) -> Self {
        // A piece must be able to hold one whole UTF-8 character.
        let max = max.max(4);
        Splitter {
            buf: Vec::new(),
            max,
        }
    }

    /// Feeds bytes; complete lines (and full pieces) are pushed to `out`.
    pub(super) fn push(&mut self, mut data: &[u8], out: &mut Vec<String>) {
        while !data.is_empty() {
            // Invariant: buf.len() <= max.
            let room = self.max - self.buf.len();
            let reach = data.len().min(room + 1);
            if let Some(i) = data[..reach].iter().position(|&b| b == b'\n') {
                self.buf.extend_from_slice(&data[..i]);
                out.push(self.take_line());
                data = &data[i + 1..];
            } else if data.len() <= room {
                // Wait for the rest of the line.
                self.buf.extend_from_slice(data);
                data = &[];
            } else {
                // The line is longer than `max`: deliver a piece.
                self.buf.extend_from_slice(&data[..room]);
                data = &data[room..];
                out.push(self.take_piece());
            }
        }
    }

    /// The last line if the stream did not end with a newline.
    pub(super) fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        lossy(std::mem::take(&mut self.buf))
    }

    /// Takes a full buffer, keeping back an incomplete trailing character.
    fn take_piece(&mut self) -> String {
        let cut = match utf8_cut(&self.buf) {
            0 => self.buf.len(),
            n => n,
        };
        let rest = self.buf.split_off(cut);
        lossy(std::mem::replace(&mut self.buf, rest))
    }
}

/// Where an incomplete UTF-8 sequence at the end of `b` starts (or `b.len()`).
fn utf8_cut(b: &[u8]) -> usize {
    let len = b.len();
    for back in 1..=len.min(3) {
        let byte = b[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn lines_across_chunks_and_crlf() {
        assert_eq!(
            split_all(100, &[b"ab", b"c\nde", b"f\r\n\n", b"tail"]),
            ["abc", "def", "", "tail"]
        );
    }

    #[test]
    fn long_lines_are_cut_into_pieces_of_max() {
        assert_eq!(
            split_all(4, &[b"abcdefghij\nxy\n"]),
            ["abcd", "efgh", "ij", "xy"]
        );
        // Exactly max bytes before the newline: one line, no empty piece.
        assert_eq!(split_all(4, &[b"abcd", b"\nz"]), ["abcd", "z"]);
    }

    #[test]
    fn pieces_never_split_a_character() {
        // "é" is 2 bytes, "€" 3: plain cuts at 4 bytes would fall inside them.
        let text = "ab€€é\n";
        for max in [4, 5, 6] {
            let got = split_all(max, &[text.as_bytes()]);
            assert_eq!(got.concat(), "ab€€é", "max {max}");
            assert!(got.iter().all(|p| !p.contains('\u{FFFD}')), "{got:?}");
            assert!(got.iter().all(|p| p.len() <= max));
        }
        assert_eq!(split_all(4, &[text.as_bytes()]), ["ab", "€", "€", "é"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(split_all(100, &[b"a\xffb\n"]), ["a\u{FFFD}b"]);
    }
}
