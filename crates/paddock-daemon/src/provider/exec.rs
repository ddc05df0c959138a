//! The `exec` provider: runs the agent definition's `command` (an argv
//! array) with the task payload as JSON on stdin, and keeps its stdout and
//! stderr lines as `stdout`/`stderr` messages.

use serde_json::Value;

use super::{
    CommandSpec, JsonObject, Launch, LineTail, MAX_CONTENT_BYTES, MessageKind, Outcome, Parsed,
    Parser, Stream, fail, message, tail_str, trim_eol,
};

/// The definition's `command` argv, with the payload JSON (and a newline)
/// on stdin. `Launch::bin` is not used.
pub fn command(l: &Launch) -> Result<CommandSpec, String> {
    const WANT: &str = "an argv array of strings";
    let argv = match l.definition.get("command") {
        None | Some(Value::Null) => {
            return Err(format!("exec agent definition has no `command` ({WANT})"));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("exec agent definition `command` must be {WANT}")),
    };
    let argv = argv
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| format!("exec agent definition `command[{i}]` is not a string"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((program, args)) = argv.split_first() else {
        return Err(format!("exec agent definition `command` is empty ({WANT})"));
    };
    if program.is_empty() {
        return Err("exec agent definition `command[0]` (the program) is empty".into());
    }
    let mut stdin = serde_json::to_vec(l.payload)
        .map_err(|e| format!("cannot encode the task payload: {e}"))?;
    stdin.push(b'\n');
    Ok(CommandSpec {
        program: program.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        stdin,
        env: Vec::new(),
    })
}

/// Parser for an `exec` child: every line is a message; the outcome is its
/// exit code and the tail of its stdout.
#[derive(Debug, Default)]
pub struct ExecParser {
    /// The end of stdout, lines joined with `\n` (kept under 2 × the limit).
    output: String,
    any_output: bool,
    stderr: LineTail,
}

impl ExecParser {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Parser for ExecParser {
    fn line(&mut self, stream: Stream, line: &str) -> Vec<Parsed> {
        let line = trim_eol(line);
        let kind = match stream {
            Stream::Stdout => {
                if self.any_output {
                    self.output.push('\n');
                }
                self.any_output = true;
                self.output.push_str(tail_str(line, MAX_CONTENT_BYTES));
                if self.output.len() > 2 * MAX_CONTENT_BYTES {
                    let keep = tail_str(&self.output, MAX_CONTENT_BYTES).len();
                    self.output.drain(..self.output.len() - keep);
                }
                MessageKind::Stdout
            }
            Stream::Stderr => {
                self.stderr.push(line);
                MessageKind::Stderr
            }
        };
        vec![message(kind, line, None)]
    }

    fn finish(&mut self, exit_code: Option<i32>) -> Outcome {
        match exit_code {
            Some(0) => {
                let mut out = JsonObject::new();
                out.insert("exit_code".into(), Value::from(0));
                let output = tail_str(&self.output, MAX_CONTENT_BYTES).to_owned();
                out.insert("output".into(), Value::String(output));
                Outcome::Complete(out)
            }
            Some(code) => fail(self.stderr.error(&format!("exit code {code}"))),
            None => fail(self.stderr.error("killed by a signal")),
        }
    }
}

#[cfg(test)]
mod tests;
