//! The provider interface: what the daemon runs for an agent runtime
//! ([`ProviderKind::command`]) and how that child's output becomes transcript
//! messages, usage, a session id and an outcome ([`Parser`]).
//!
//! Everything here is pure: building a [`CommandSpec`] and parsing lines do
//! no I/O and spawn nothing. The daemon spawns the child (in the work dir),
//! writes [`CommandSpec::stdin`] and closes stdin, feeds every output line to
//! [`Parser::line`] and, once the child has exited, calls [`Parser::finish`].
//!
//! Common rules, enforced here for every provider: a message's `content` is
//! at most [`MAX_CONTENT_BYTES`] (cut at a char boundary, with
//! `data.truncated = true`), lines a provider does not understand are kept
//! as `system` messages instead of being dropped or failing, and the daemon
//! passes every item through [`Parsed::without_nul`] /
//! [`Outcome::without_nul`] before reporting it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use paddock_api::{JsonObject, MessageKind, Usage};

pub mod claude;
pub mod codex;
pub mod exec;

/// The largest `content` of one message, in bytes (64 KiB).
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// How many stderr lines a failure's error text quotes.
const ERROR_TAIL_LINES: usize = 5;
/// How much of one stderr line a failure's error text quotes, in bytes.
const ERROR_TAIL_LINE_BYTES: usize = 1024;

/// Which of the child's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One thing an agent's output told us, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// A transcript message.
    Message {
        kind: MessageKind,
        content: String,
        data: Option<JsonObject>,
    },
    /// Cumulative usage for the attempt so far (the last one wins).
    Usage(Usage),
    /// The agent's resumable session id (reported once per distinct id).
    Session(String),
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The attempt succeeded; the object is the attempt's result.
    Complete(JsonObject),
    /// The attempt failed.
    Fail { error: String, retryable: bool },
}

impl Parsed {
    /// This item with every NUL character replaced by U+FFFD. PostgreSQL's text and jsonb cannot
    /// hold NUL, so the server refuses a report carrying one (422) — and an agent that prints a
    /// NUL byte, or a `\u0000` escape in its JSON, must not cost the batch it is in.
    pub fn without_nul(self) -> Self {
        match self {
            Parsed::Message {
                kind,
                content,
                data,
            } => Parsed::Message {
                kind,
                content: util::scrub(content),
                data: data.map(util::scrub_object),
            },
            Parsed::Usage(mut u) => {
                u.model = u.model.map(util::scrub);
                Parsed::Usage(u)
            }
            Parsed::Session(id) => Parsed::Session(util::scrub(id)),
        }
    }
}

impl Outcome {
    /// This outcome with every NUL character replaced by U+FFFD (see [`Parsed::without_nul`]).
    pub fn without_nul(self) -> Self {
        match self {
            Outcome::Complete(result) => Outcome::Complete(util::scrub_object(result)),
            Outcome::Fail { error, retryable } => Outcome::Fail {
                error: util::scrub(error),
                retryable,
            },
        }
    }
}

/// What to run: program, args, bytes for stdin (then EOF), extra env.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
}

/// Everything a provider needs to build its command line.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// The agent CLI to run (ignored by `exec`, whose definition names it).
    pub bin: &'a Path,
    /// The agent definition (provider-specific fields such as `model`).
    pub definition: &'a JsonObject,
    /// The task payload (`prompt`, or anything for `exec`).
    pub payload: &'a JsonObject,
    /// The directory the child runs in (the daemon sets it as the cwd).
    pub work_dir: &'a Path,
    /// A session id from an earlier attempt to resume, if any.
    pub resume_session: Option<&'a str>,
}

/// Turns one child's output lines into [`Parsed`] items and, at the end,
/// an [`Outcome`]. Implementations never panic on any input.
pub trait Parser: Send {
    /// One line from `stream`, with or without its `\n` / `\r\n`.
    fn line(&mut self, stream: Stream, line: &str) -> Vec<Parsed>;
    /// The child has exited: `Some(code)`, or `None` if a signal killed it.
    fn finish(&mut self, exit_code: Option<i32>) -> Outcome;
}

/// A supported agent runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    ClaudeCode,
    Codex,
    Exec,
}

impl ProviderKind {
    /// Every provider, in a stable order.
    pub const ALL: [ProviderKind; 3] = [Self::ClaudeCode, Self::Codex, Self::Exec];

    /// The provider's name: `claude-code`, `codex` or `exec`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::Exec => "exec",
        }
    }

    /// The command line for one attempt, or what is wrong with the
    /// definition or payload.
    pub fn command(&self, l: &Launch) -> Result<CommandSpec, String> {
        match self {
            Self::ClaudeCode => claude::command(l),
            Self::Codex => codex::command(l),
            Self::Exec => exec::command(l),
        }
    }

    /// A fresh parser for one attempt. The definition supplies defaults
    /// (such as the model reported in [`Usage`]) that the output may lack.
    pub fn parser(&self, definition: &JsonObject) -> Box<dyn Parser> {
        match self {
            Self::ClaudeCode => Box::new(claude::ClaudeParser::new(definition)),
            Self::Codex => Box::new(codex::CodexParser::new(definition)),
            Self::Exec => Box::new(exec::ExecParser::new()),
        }
    }

    /// The CLI looked up on `PATH` when no binary is configured.
    pub fn default_bin(&self) -> Option<&'static str> {
        match self {
            Self::ClaudeCode => Some("claude"),
            Self::Codex => Some("codex"),
            Self::Exec => None,
        }
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown provider `{s}` (expected claude-code, codex or exec)"))
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

mod util;
use util::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert!("claude".parse::<ProviderKind>().is_err());
        assert_eq!(ProviderKind::ClaudeCode.default_bin(), Some("claude"));
        assert_eq!(ProviderKind::Codex.default_bin(), Some("codex"));
        assert_eq!(ProviderKind::Exec.default_bin(), None);
    }

    #[test]
    fn nul_characters_are_replaced_everywhere_a_report_carries_text() {
        let data = obj(r#"{"k\u0000": ["a\u0000", {"b": "\u0000"}], "n": 1}"#);
        let m = message(MessageKind::Text, "x\0y", Some(data)).without_nul();
        let Parsed::Message { content, data, .. } = m else {
            panic!("not a message");
        };
        assert_eq!(content, "x\u{fffd}y");
        let data = serde_json::to_string(&data).unwrap();
        assert_eq!(
            data,
            "{\"k\u{fffd}\":[\"a\u{fffd}\",{\"b\":\"\u{fffd}\"}],\"n\":1}"
        );
        assert_eq!(
            Parsed::Session("s\0".into()).without_nul(),
            Parsed::Session("s\u{fffd}".into())
        );
        let Outcome::Complete(result) =
            Outcome::Complete(obj(r#"{"text": "\u0000"}"#)).without_nul()
        else {
            panic!("not complete");
        };
        assert_eq!(result["text"], "\u{fffd}");
        assert_eq!(fail("e\0".into()).without_nul(), fail("e\u{fffd}".into()));
    }

    #[test]
    fn long_content_is_cut_at_a_char_boundary() {
        // 'é' is two bytes: an odd prefix puts the limit mid-character.
        let long = format!("a{}", "é".repeat(MAX_CONTENT_BYTES));
        let Parsed::Message { content, data, .. } = message(MessageKind::Text, long, None) else {
            panic!("not a message");
        };
        assert_eq!(content.len(), MAX_CONTENT_BYTES - 1);
        assert_eq!(
            data.and_then(|d| d.get("truncated").cloned()),
            Some(serde_json::Value::Bool(true))
        );

        let exact = "x".repeat(MAX_CONTENT_BYTES);
        let Parsed::Message { content, data, .. } = message(MessageKind::Text, exact, None) else {
            panic!("not a message");
        };
        assert_eq!((content.len(), data), (MAX_CONTENT_BYTES, None));
    }

    #[test]
    fn tails_and_line_ends() {
        assert_eq!(tail_str("héllo", 4), "llo");
        assert_eq!(tail_str("hi", 10), "hi");
        assert_eq!(trim_eol("a\r\n"), "a");
        assert_eq!(trim_eol("a\n"), "a");
        assert_eq!(trim_eol("a"), "a");
        let mut tail = LineTail::default();
        for i in 0..9 {
            tail.push(&format!("line {i}"));
        }
        tail.push("  ");
        assert_eq!(
            tail.error("boom"),
            "boom\nline 4\nline 5\nline 6\nline 7\nline 8"
        );
    }

    #[test]
    fn prompt_is_instructions_then_task() {
        let def = obj(r#"{"instructions":"Be brief."}"#);
        let payload = obj(r#"{"prompt":"Fix it"}"#);
        let raw = obj(r#"{"issue":7}"#);
        let bad = obj(r#"{"prompt":7}"#);
        let empty = JsonObject::new();
        let launch = |definition, payload| Launch {
            bin: Path::new("x"),
            definition,
            payload,
            work_dir: Path::new("/w"),
            resume_session: None,
        };
        assert_eq!(
            prompt_text(&launch(&def, &payload)).unwrap(),
            "Be brief.\n\nFix it"
        );
        assert_eq!(prompt_text(&launch(&empty, &payload)).unwrap(), "Fix it");
        assert_eq!(
            prompt_text(&launch(&empty, &raw)).unwrap(),
            r#"{"issue":7}"#
        );
        assert!(prompt_text(&launch(&empty, &bad)).is_err());
    }
}
