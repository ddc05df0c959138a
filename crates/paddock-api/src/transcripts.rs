//! Transcripts (DESIGN §9): the messages a running agent produces, posted by its daemon in batches
//! and read back (or followed live) by members; and the usage and session an attempt reports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::TaskStatus;
use crate::ids::{AttemptId, RuntimeId};
use crate::values::JsonObject;

crate::wire_enum! {
    /// What a transcript message is.
    MessageKind {
        Text = "text",
        Thinking = "thinking",
        ToolUse = "tool_use",
        ToolResult = "tool_result",
        Stdout = "stdout",
        Stderr = "stderr",
        Error = "error",
        System = "system",
    }
}

/// Largest `content` of one message, in bytes (64 KiB).
pub const MAX_MESSAGE_CONTENT: usize = 64 * 1024;
/// Messages one `POST /tasks/{id}/messages` may carry.
pub const MAX_MESSAGES_PER_CALL: usize = 500;

/// One message as a daemon posts it. `seq` is chosen by the daemon, increasing within the attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    #[schema(minimum = 0)]
    pub seq: i64,
    pub kind: MessageKind,
    /// At most 64 KiB (UTF-8 bytes).
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<JsonObject>,
}

/// `POST /tasks/{id}/messages`: 1 to 500 messages of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessages {
    pub attempt_id: AttemptId,
    pub messages: Vec<NewMessage>,
}

/// What a post stored: `duplicates` were stored before (by seq) and are not again; `truncated`
/// says the attempt's transcript reached `transcript_max_bytes` and later messages are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostedMessages {
    pub accepted: u32,
    pub duplicates: u32,
    /// The highest seq of this call that is stored now (accepted or a duplicate); null when none.
    pub last_seq: Option<i64>,
    pub truncated: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub attempt: i32,
    pub seq: i64,
    pub kind: MessageKind,
    pub content: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// When the server stored it.
    pub at: DateTime<Utc>,
}

/// A frame of `GET /tasks/{id}/messages/ws`: each message, then `end` once the task is terminal
/// and everything committed before it ended has been sent (then the socket closes with 1000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptFrame {
    Message(Message),
    End { status: TaskStatus },
}

/// An attempt's cumulative usage so far (the last report wins, so a repeated report counts once).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub input_tokens: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub output_tokens: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub cache_read_tokens: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub cache_write_tokens: i64,
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub cost_usd: f64,
}

impl Usage {
    /// Why these figures cannot be stored (negative, not finite, a model name over 200 characters).
    pub fn invalid(&self) -> Option<String> {
        let counts = [
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("cache_write_tokens", self.cache_write_tokens),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v < 0) {
            return Some(format!("usage.{name} must not be negative"));
        }
        if !self.cost_usd.is_finite() || self.cost_usd < 0.0 {
            return Some("usage.cost_usd must be a finite amount ≥ 0".into());
        }
        if self.model.as_ref().is_some_and(|m| m.chars().count() > 200) {
            return Some("usage.model must be at most 200 characters".into());
        }
        None
    }

    /// The sum of two attempts' figures (the model of the later one when it has one).
    pub fn plus(&self, later: &Usage) -> Usage {
        Usage {
            model: later.model.clone().or_else(|| self.model.clone()),
            input_tokens: self.input_tokens.saturating_add(later.input_tokens),
            output_tokens: self.output_tokens.saturating_add(later.output_tokens),
            cache_read_tokens: self
                .cache_read_tokens
                .saturating_add(later.cache_read_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_add(later.cache_write_tokens),
            cost_usd: self.cost_usd + later.cost_usd,
        }
    }
}

/// The agent's resumable session, as a daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// 1 to 500 characters.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
}

impl Session {
    /// Why this session cannot be stored.
    pub fn invalid(&self) -> Option<String> {
        let id = self.id.chars().count();
        if id == 0 || id > 500 {
            return Some("session.id must be 1 to 500 characters".into());
        }
        if self
            .work_dir
            .as_ref()
            .is_some_and(|w| w.chars().count() > 4096)
        {
            return Some("session.work_dir must be at most 4096 characters".into());
        }
        None
    }
}

/// In a claim of a task that had an earlier attempt: the latest session one of them reported, and
/// the runtime it ran on (a daemon there can resume the conversation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriorSession {
    pub id: String,
    pub work_dir: Option<String>,
    pub runtime_id: RuntimeId,
}
