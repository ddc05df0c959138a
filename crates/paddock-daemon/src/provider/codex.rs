//! The `codex` provider: runs `codex exec --json` with the prompt on stdin
//! (`-`), resuming with `codex exec … resume <id> -`, and parses its JSONL
//! events (`thread.*`, `turn.*`, `item.*`, `error`).

use serde_json::Value;

use super::{
    CommandSpec, JsonObject, Launch, LineTail, MessageKind, Outcome, Parsed, Parser, Sessions,
    Stream, Usage, def_str, fail, int_field, json_object, message, prompt_text, str_field,
    system_line, trim_eol,
};

/// `<bin> exec --json --skip-git-repo-check -C <work dir> [-m MODEL]
/// [-s SANDBOX] [resume <session id>] -`, prompt on stdin.
///
/// `-C` and `-s` are options of `codex exec` only (`codex exec resume`
/// rejects them), so every option goes before the `resume` subcommand.
pub fn command(l: &Launch) -> Result<CommandSpec, String> {
    let def = l.definition;
    let work_dir = l
        .work_dir
        .to_str()
        .ok_or_else(|| format!("work dir {} is not valid UTF-8", l.work_dir.display()))?;
    let mut args: Vec<String> = ["exec", "--json", "--skip-git-repo-check", "-C", work_dir]
        .map(String::from)
        .into();
    if let Some(model) = def_str(def, "model")? {
        args.extend(["-m".to_owned(), model.to_owned()]);
    }
    if let Some(sandbox) = def_str(def, "sandbox")? {
        args.extend(["-s".to_owned(), sandbox.to_owned()]);
    }
    if let Some(session) = l.resume_session.filter(|s| !s.is_empty()) {
        args.extend(["resume".to_owned(), session.to_owned()]);
    }
    args.push("-".to_owned());
    Ok(CommandSpec {
        program: l.bin.to_path_buf(),
        args,
        stdin: prompt_text(l)?.into_bytes(),
        env: Vec::new(),
    })
}

/// Parser for one `codex exec --json` run.
#[derive(Debug, Default)]
pub struct CodexParser {
    usage: Usage,
    sessions: Sessions,
    last_text: Option<String>,
    turn_failed: Option<String>,
    last_error: Option<String>,
    stderr: LineTail,
}

impl CodexParser {
    /// A parser whose usage reports the definition's `model`.
    pub fn new(definition: &JsonObject) -> Self {
        Self {
            usage: Usage {
                model: str_field(definition, "model").map(str::to_owned),
                ..Usage::default()
            },
            ..Self::default()
        }
    }

    fn item_completed(&mut self, item: &JsonObject, out: &mut Vec<Parsed>) {
        let text = || str_field(item, "text").unwrap_or("").to_owned();
        match str_field(item, "type").unwrap_or("") {
            "agent_message" => {
                let text = text();
                out.push(message(MessageKind::Text, text.as_str(), None));
                self.last_text = Some(text);
            }
            "reasoning" => out.push(message(MessageKind::Thinking, text(), None)),
            "command_execution" => command_messages(item, out),
            other => out.push(message(
                MessageKind::System,
                item_summary(other, item),
                Some(item.clone()),
            )),
        }
    }
}

impl Parser for CodexParser {
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
        match str_field(&obj, "type") {
            Some("thread.started") => self.sessions.report(obj.get("thread_id"), &mut out),
            Some("turn.started" | "item.started" | "item.updated") => {}
            Some("item.completed") => match obj.get("item").and_then(Value::as_object) {
                Some(item) => self.item_completed(item, &mut out),
                None => out.push(system_line(line)),
            },
            Some("turn.completed") => {
                let empty = JsonObject::new();
                let u = obj
                    .get("usage")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                self.usage.input_tokens += int_field(u, "input_tokens");
                self.usage.cache_read_tokens += int_field(u, "cached_input_tokens");
                self.usage.output_tokens += int_field(u, "output_tokens");
                out.push(Parsed::Usage(self.usage.clone()));
            }
            Some("turn.failed") => {
                let error = obj
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("codex turn failed")
                    .to_owned();
                out.push(message(MessageKind::Error, error.as_str(), None));
                self.turn_failed = Some(error);
            }
            // Includes the "Reconnecting…" retries: reported, never fatal.
            Some("error") => {
                let error = str_field(&obj, "message").unwrap_or(line).to_owned();
                out.push(message(MessageKind::Error, error.as_str(), None));
                self.last_error = Some(error);
            }
            _ => out.push(system_line(line)),
        }
        out
    }

    fn finish(&mut self, exit_code: Option<i32>) -> Outcome {
        if let Some(error) = &self.turn_failed {
            return fail(error.clone());
        }
        let head = match exit_code {
            Some(0) => {
                let text = self.last_text.clone().unwrap_or_default();
                let mut out = JsonObject::new();
                out.insert("text".into(), Value::String(text));
                return Outcome::Complete(out);
            }
            Some(code) => format!("exit code {code}"),
            None => "codex was killed by a signal".to_owned(),
        };
        let head = match &self.last_error {
            Some(e) => format!("{head}: {e}"),
            None => head,
        };
        fail(self.stderr.error(&head))
    }
}

/// A finished command: a `tool_use` then its output as a `tool_result`.
fn command_messages(item: &JsonObject, out: &mut Vec<Parsed>) {
    let field = |key: &str| item.get(key).cloned().unwrap_or(Value::Null);
    let command = str_field(item, "command").unwrap_or("");
    let status = str_field(item, "status").unwrap_or("");
    let exit_code = item.get("exit_code").and_then(Value::as_i64);
    let mut use_data = JsonObject::new();
    use_data.insert("id".into(), field("id"));
    use_data.insert("command".into(), field("command"));
    use_data.insert("exit_code".into(), field("exit_code"));
    use_data.insert("status".into(), field("status"));
    out.push(message(MessageKind::ToolUse, command, Some(use_data)));

    let is_error = matches!(status, "failed" | "declined") || exit_code.is_some_and(|c| c != 0);
    let mut result_data = JsonObject::new();
    result_data.insert("tool_use_id".into(), field("id"));
    result_data.insert("is_error".into(), Value::Bool(is_error));
    result_data.insert("exit_code".into(), field("exit_code"));
    let output = str_field(item, "aggregated_output").unwrap_or("");
    out.push(message(MessageKind::ToolResult, output, Some(result_data)));
}

/// A one-line description of an item shown as a `system` message.
fn item_summary(kind: &str, item: &JsonObject) -> String {
    let detail = match kind {
        "error" => str_field(item, "message").unwrap_or("").to_owned(),
        "file_change" => item
            .get("changes")
            .and_then(Value::as_array)
            .map(|changes| {
                changes
                    .iter()
                    .map(|c| {
                        let get = |k| c.get(k).and_then(Value::as_str).unwrap_or("?");
                        format!("{} {}", get("kind"), get("path"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        "mcp_tool_call" => format!(
            "{}/{} ({})",
            str_field(item, "server").unwrap_or("?"),
            str_field(item, "tool").unwrap_or("?"),
            str_field(item, "status").unwrap_or("?")
        ),
        "web_search" => str_field(item, "query").unwrap_or("").to_owned(),
        "todo_list" => {
            let items = item.get("items").and_then(Value::as_array);
            let total = items.map_or(0, Vec::len);
            let done = items.map_or(0, |i| {
                i.iter()
                    .filter(|t| t.get("completed").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            format!("{done}/{total} done")
        }
        _ => return Value::Object(item.clone()).to_string(),
    };
    format!("{kind}: {detail}")
}

#[cfg(test)]
mod tests;
