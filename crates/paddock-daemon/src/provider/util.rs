//! Helpers shared by the providers: capped messages, JSON field access,
//! agent-definition fields, the prompt text, session and stderr bookkeeping.

use std::collections::VecDeque;

use serde_json::Value;

use paddock_api::{JsonObject, MessageKind};

use super::{ERROR_TAIL_LINE_BYTES, ERROR_TAIL_LINES, Launch, MAX_CONTENT_BYTES, Outcome, Parsed};
#[cfg(test)]
use super::{Parser, Stream};

/// A message, with `content` cut to [`MAX_CONTENT_BYTES`] if need be.
pub(super) fn message(
    kind: MessageKind,
    content: impl Into<String>,
    data: Option<JsonObject>,
) -> Parsed {
    let mut content = content.into();
    let mut data = data;
    if content.len() > MAX_CONTENT_BYTES {
        content.truncate(floor_char_boundary(&content, MAX_CONTENT_BYTES));
        data.get_or_insert_with(JsonObject::new)
            .insert("truncated".into(), Value::Bool(true));
    }
    Parsed::Message {
        kind,
        content,
        data,
    }
}

/// `s` with every NUL character replaced by U+FFFD.
pub(super) fn scrub(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

/// `obj` with every NUL character in its keys and strings (at any depth) replaced by U+FFFD.
pub(super) fn scrub_object(obj: JsonObject) -> JsonObject {
    obj.into_iter()
        .map(|(k, v)| (scrub(k), scrub_value(v)))
        .collect()
}

fn scrub_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(scrub(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub_value).collect()),
        Value::Object(obj) => Value::Object(scrub_object(obj)),
        other => other,
    }
}

/// A line the provider did not understand, kept as a `system` message.
pub(super) fn system_line(line: &str) -> Parsed {
    message(MessageKind::System, line, None)
}

/// The largest char boundary of `s` at or below `index`.
pub(super) fn floor_char_boundary(s: &str, index: usize) -> usize {
    let mut i = index.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The last at most `max` bytes of `s`, starting at a char boundary.
pub(super) fn tail_str(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `line` without its trailing `\n` or `\r\n`.
pub(super) fn trim_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// `line` as a JSON object, or `None` if it is anything else.
pub(super) fn json_object(line: &str) -> Option<JsonObject> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    }
}

/// The string field `key` of `obj`, if present and a string.
pub(super) fn str_field<'a>(obj: &'a JsonObject, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// The integer field `key` of `obj`, or 0.
pub(super) fn int_field(obj: &JsonObject, key: &str) -> i64 {
    match obj.get(key) {
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        None => 0,
    }
}

/// An optional string field of the agent definition (absent or `null` is
/// `None`; any other non-string is an error).
pub(super) fn def_str<'a>(def: &'a JsonObject, key: &str) -> Result<Option<&'a str>, String> {
    match def.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("agent definition field `{key}` must be a string")),
    }
}

/// An optional positive integer field of the agent definition.
pub(super) fn def_positive_int(def: &JsonObject, key: &str) -> Result<Option<u64>, String> {
    match def.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "agent definition field `{key}` must be a positive integer"
            )),
        },
    }
}

/// An optional array-of-strings field of the agent definition.
pub(super) fn def_str_array<'a>(
    def: &'a JsonObject,
    key: &str,
) -> Result<Option<Vec<&'a str>>, String> {
    match def.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| format!("agent definition field `{key}[{i}]` must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!(
            "agent definition field `{key}` must be an array of strings"
        )),
    }
}

/// The prompt an agent CLI gets on stdin: the definition's `instructions`
/// (if any) and a blank line, then the payload's `prompt` or, without one,
/// the payload as JSON.
pub(super) fn prompt_text(l: &Launch) -> Result<String, String> {
    let instructions = def_str(l.definition, "instructions")?.filter(|s| !s.trim().is_empty());
    let task = match l.payload.get("prompt") {
        None | Some(Value::Null) => serde_json::to_string(l.payload)
            .map_err(|e| format!("cannot encode the task payload: {e}"))?,
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("task payload field `prompt` must be a string".into()),
    };
    Ok(match instructions {
        Some(i) => format!("{i}\n\n{task}"),
        None => task,
    })
}

/// The session ids already reported, so each distinct one is reported once.
#[derive(Debug, Default)]
pub(super) struct Sessions(Vec<String>);

impl Sessions {
    /// Pushes [`Parsed::Session`] if `id` is a new, non-empty string.
    pub(super) fn report(&mut self, id: Option<&Value>, out: &mut Vec<Parsed>) {
        if let Some(id) = id.and_then(Value::as_str)
            && !id.is_empty()
            && !self.0.iter().any(|s| s == id)
        {
            self.0.push(id.to_owned());
            out.push(Parsed::Session(id.to_owned()));
        }
    }
}

/// The last few stderr lines, quoted in a failure's error text.
#[derive(Debug, Default)]
pub(super) struct LineTail(VecDeque<String>);

impl LineTail {
    pub(super) fn push(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if self.0.len() == ERROR_TAIL_LINES {
            self.0.pop_front();
        }
        let cut = floor_char_boundary(line, ERROR_TAIL_LINE_BYTES);
        self.0.push_back(line[..cut].to_owned());
    }

    /// `head`, followed by the kept lines (one per line), if any.
    pub(super) fn error(&self, head: &str) -> String {
        let mut error = head.to_owned();
        for line in &self.0 {
            error.push('\n');
            error.push_str(line);
        }
        error
    }
}

/// A failure; every provider failure is worth retrying.
pub(super) fn fail(error: String) -> Outcome {
    Outcome::Fail {
        error,
        retryable: true,
    }
}

/// Test helper: every line of `text` through `parser`.
#[cfg(test)]
pub(super) fn feed(parser: &mut dyn Parser, stream: Stream, text: &str) -> Vec<Parsed> {
    text.lines().flat_map(|l| parser.line(stream, l)).collect()
}

/// Test helper: the (kind, content) of each message in `parsed`.
#[cfg(test)]
pub(super) fn messages(parsed: &[Parsed]) -> Vec<(MessageKind, &str)> {
    parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Message { kind, content, .. } => Some((*kind, content.as_str())),
            _ => None,
        })
        .collect()
}

/// Test helper: a JSON object literal.
#[cfg(test)]
pub(super) fn obj(json: &str) -> JsonObject {
    serde_json::from_str(json).expect("test JSON object")
}
