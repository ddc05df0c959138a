//! The `claude-code` provider: runs `claude -p --output-format stream-json
//! --verbose` with the prompt on stdin and parses its NDJSON stream
//! (`system`/`init`, `assistant` and `user` content blocks, `result`).

use serde_json::Value;

use super::{
    CommandSpec, JsonObject, Launch, LineTail, MessageKind, Outcome, Parsed, Parser, Sessions,
    Stream, Usage, def_positive_int, def_str, def_str_array, fail, int_field, json_object, message,
    prompt_text, str_field, system_line, trim_eol,
};

/// How much of a tool's input the `tool_use` message's content shows.
const TOOL_INPUT_PREVIEW_BYTES: usize = 200;

/// `<bin> -p --output-format stream-json --verbose [--model M] [--resume S]
/// [--permission-mode P] [--max-turns N] [--allowedTools a,b]`, prompt on stdin.
pub fn command(l: &Launch) -> Result<CommandSpec, String> {
    let def = l.definition;
    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .map(String::from)
        .into();
    let mut flag = |name: &str, value: String| {
        args.push(name.to_owned());
        args.push(value);
    };
    if let Some(model) = def_str(def, "model")? {
        flag("--model", model.to_owned());
    }
    if let Some(session) = l.resume_session.filter(|s| !s.is_empty()) {
        flag("--resume", session.to_owned());
    }
    if let Some(mode) = def_str(def, "permission_mode")? {
        flag("--permission-mode", mode.to_owned());
    }
    if let Some(turns) = def_positive_int(def, "max_turns")? {
        flag("--max-turns", turns.to_string());
    }
    if let Some(tools) = def_str_array(def, "allowed_tools")?.filter(|t| !t.is_empty()) {
        flag("--allowedTools", tools.join(","));
    }
    Ok(CommandSpec {
        program: l.bin.to_path_buf(),
        args,
        stdin: prompt_text(l)?.into_bytes(),
        env: Vec::new(),
    })
}

/// What the `result` line said.
#[derive(Debug)]
struct ResultLine {
    failed: bool,
    error: String,
    text: String,
    num_turns: Value,
    duration_ms: Value,
}

/// Parser for one `claude -p --output-format stream-json` run.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    definition_model: Option<String>,
    init_model: Option<String>,
    sessions: Sessions,
    result: Option<ResultLine>,
    stderr: LineTail,
}

impl ClaudeParser {
    /// A parser whose usage falls back to the definition's `model`.
    pub fn new(definition: &JsonObject) -> Self {
        Self {
            definition_model: str_field(definition, "model").map(str::to_owned),
            ..Self::default()
        }
    }

    fn init(&mut self, obj: &JsonObject, out: &mut Vec<Parsed>) {
        if let Some(model) = str_field(obj, "model") {
            self.init_model = Some(model.to_owned());
        }
        self.sessions.report(obj.get("session_id"), out);
        let mut data = JsonObject::new();
        for key in ["subtype", "session_id", "model", "cwd", "permissionMode"] {
            if let Some(v) = obj.get(key) {
                data.insert(key.to_owned(), v.clone());
            }
        }
        let content = format!(
            "session started (model {})",
            self.init_model.as_deref().unwrap_or("unknown")
        );
        out.push(message(MessageKind::System, content, Some(data)));
    }

    fn result(&mut self, obj: &JsonObject, out: &mut Vec<Parsed>) {
        self.sessions.report(obj.get("session_id"), out);
        let usage = obj.get("usage").and_then(Value::as_object);
        if usage.is_some() || obj.contains_key("total_cost_usd") {
            let empty = JsonObject::new();
            let u = usage.unwrap_or(&empty);
            out.push(Parsed::Usage(Usage {
                model: self.init_model.clone().or(self.definition_model.clone()),
                input_tokens: int_field(u, "input_tokens"),
                output_tokens: int_field(u, "output_tokens"),
                cache_read_tokens: int_field(u, "cache_read_input_tokens"),
                cache_write_tokens: int_field(u, "cache_creation_input_tokens"),
                cost_usd: obj
                    .get("total_cost_usd")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            }));
        }
        let subtype = str_field(obj, "subtype").unwrap_or("");
        let text = str_field(obj, "result").unwrap_or("").to_owned();
        let failed = obj.get("is_error").and_then(Value::as_bool) == Some(true)
            || (!subtype.is_empty() && subtype != "success");
        let errors: Vec<&str> = obj
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let error = if !text.is_empty() {
            text.clone()
        } else if !errors.is_empty() {
            errors.join("\n")
        } else {
            format!("claude reported `{subtype}`")
        };
        if failed {
            out.push(message(MessageKind::Error, error.clone(), None));
        }
        self.result = Some(ResultLine {
            failed,
            error,
            text,
            num_turns: obj.get("num_turns").cloned().unwrap_or(Value::Null),
            duration_ms: obj.get("duration_ms").cloned().unwrap_or(Value::Null),
        });
    }
}

impl Parser for ClaudeParser {
    fn line(&mut self, stream: Stream, line: &str) -> Vec<Parsed> {
        let line = trim_eol(line);
        if line.trim().is_empty() {
            return Vec::new();
        }
        if stream == Stream::Stderr {
            self.stderr.push(line);
            return vec![message(MessageKind::Stderr, line, None)];
        }
        let Some(obj) = json_object(line) else {
            return vec![system_line(line)];
        };
        let mut out = Vec::new();
        match (str_field(&obj, "type"), str_field(&obj, "subtype")) {
            (Some("system"), Some("init")) => self.init(&obj, &mut out),
            (Some("result"), _) => self.result(&obj, &mut out),
            (Some(role @ ("assistant" | "user")), _) => {
                if !blocks(&obj, role == "assistant", &mut out) {
                    out.push(system_line(line));
                }
            }
            _ => out.push(system_line(line)),
        }
        out
    }

    fn finish(&mut self, exit_code: Option<i32>) -> Outcome {
        match (&self.result, exit_code) {
            (_, None) => fail(self.stderr.error("claude was killed by a signal")),
            (Some(r), _) if r.failed => fail(r.error.clone()),
            (Some(r), Some(0)) => {
                let mut out = JsonObject::new();
                out.insert("text".into(), Value::String(r.text.clone()));
                out.insert("num_turns".into(), r.num_turns.clone());
                out.insert("duration_ms".into(), r.duration_ms.clone());
                Outcome::Complete(out)
            }
            (Some(_), Some(code)) => fail(self.stderr.error(&format!("exit code {code}"))),
            (None, Some(code)) => fail(
                self.stderr
                    .error(&format!("claude exited with code {code} without a result")),
            ),
        }
    }
}

/// The messages of an `assistant` or `user` line's `message.content`;
/// `false` if the line has no content to show.
fn blocks(obj: &JsonObject, assistant: bool, out: &mut Vec<Parsed>) -> bool {
    let parent = obj.get("parent_tool_use_id").filter(|v| v.is_string());
    let with_parent = |mut data: JsonObject| {
        if let Some(p) = parent {
            data.insert("parent_tool_use_id".into(), p.clone());
        }
        (!data.is_empty()).then_some(data)
    };
    let plain = if assistant {
        MessageKind::Text
    } else {
        MessageKind::System
    };
    match obj.get("message").and_then(|m| m.get("content")) {
        Some(Value::String(text)) => out.push(message(
            plain,
            text.as_str(),
            with_parent(JsonObject::new()),
        )),
        Some(Value::Array(items)) => {
            for block in items {
                let (kind, content, data) = block_message(block, plain);
                out.push(message(kind, content, with_parent(data)));
            }
        }
        _ => return false,
    }
    true
}

/// One content block as (kind, content, data).
fn block_message(block: &Value, plain: MessageKind) -> (MessageKind, String, JsonObject) {
    let field = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
    let mut data = JsonObject::new();
    match field("type") {
        "text" => (plain, field("text").to_owned(), data),
        "thinking" => (MessageKind::Thinking, field("thinking").to_owned(), data),
        "redacted_thinking" => (MessageKind::Thinking, "[redacted thinking]".into(), data),
        "tool_use" => {
            let input = block.get("input").cloned().unwrap_or(Value::Null);
            let content = tool_line(field("name"), &input);
            data.insert("id".into(), Value::String(field("id").to_owned()));
            data.insert("name".into(), Value::String(field("name").to_owned()));
            data.insert("input".into(), input);
            (MessageKind::ToolUse, content, data)
        }
        "tool_result" => {
            let is_error = block.get("is_error").and_then(Value::as_bool) == Some(true);
            data.insert(
                "tool_use_id".into(),
                Value::String(field("tool_use_id").to_owned()),
            );
            data.insert("is_error".into(), Value::Bool(is_error));
            let content = result_text(block.get("content"));
            (MessageKind::ToolResult, content, data)
        }
        other => {
            data.insert("block_type".into(), Value::String(other.to_owned()));
            (MessageKind::System, block.to_string(), data)
        }
    }
}

/// A short human line for a tool call: the tool name and compact input.
fn tool_line(name: &str, input: &Value) -> String {
    let input = input.to_string();
    let cut = super::floor_char_boundary(&input, TOOL_INPUT_PREVIEW_BYTES);
    let ellipsis = if cut < input.len() { "…" } else { "" };
    format!("{name} {}{ellipsis}", &input[..cut])
}

/// A tool result's text: a string, or its text blocks one per line.
fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                Some(other) => format!("[{other}]"),
                None => b.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
