//! Runs the fake CLIs in `fake-agents/` (and `/bin/sh` for `exec`) with the
//! command lines the providers build, and feeds their output through the
//! matching parsers: proves that the fakes and the parsers agree.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use paddock_api::{JsonObject, MessageKind, Usage};
use paddock_daemon::provider::{
    CommandSpec, Launch, Outcome, Parsed, Parser, ProviderKind, Stream,
};
use serde_json::{Value, json};

use MessageKind::*;
use ProviderKind::{ClaudeCode, Codex, Exec};

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paddock-fakes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The command line `kind` builds for a fake (or, for exec, the definition).
fn spec(
    kind: ProviderKind,
    def: &JsonObject,
    payload: &JsonObject,
    resume: Option<&str>,
) -> CommandSpec {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fake-agents")
        .join(kind.default_bin().unwrap_or("none"));
    let work_dir = std::env::temp_dir();
    let launch = Launch {
        bin: &bin,
        definition: def,
        payload,
        work_dir: &work_dir,
        resume_session: resume,
    };
    kind.command(&launch).expect("command line")
}

/// Spawns `spec` in its own process group, writes its stdin and closes it.
fn spawn(spec: &CommandSpec, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().cloned())
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        // A child that exits without reading stdin makes this fail: fine.
        let _ = stdin.write_all(&spec.stdin);
    }
    child
}

struct Run {
    parsed: Vec<Parsed>,
    outcome: Outcome,
    code: Option<i32>,
}

impl Run {
    fn messages(&self) -> Vec<(MessageKind, &str)> {
        self.parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Message { kind, content, .. } => Some((*kind, content.as_str())),
                _ => None,
            })
            .collect()
    }
    fn sessions(&self) -> Vec<&str> {
        self.parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Session(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }
    fn last_usage(&self) -> Option<&Usage> {
        self.parsed.iter().rev().find_map(|p| match p {
            Parsed::Usage(u) => Some(u),
            _ => None,
        })
    }
    fn error(&self) -> &str {
        match &self.outcome {
            Outcome::Fail {
                error,
                retryable: true,
            } => error,
            other => panic!("expected a retryable failure, got {other:?}"),
        }
    }
    fn complete(&self) -> &JsonObject {
        match &self.outcome {
            Outcome::Complete(done) => done,
            other => panic!("expected completion, got {other:?}: {:?}", self.messages()),
        }
    }
}

/// Waits at most `limit` for `child`; kills its group if it is still running.
fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            signal_group(child, "KILL");
            let _ = child.wait();
            panic!("child still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to the child's process group (only the processes it started).
fn signal_group(child: &Child, signal: &str) {
    let group = format!("-{}", child.id());
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &group])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {group}");
}

/// A running fake whose stdout is read line by line.
struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    parser: Box<dyn Parser>,
    parsed: Vec<Parsed>,
}

impl Running {
    fn start(
        kind: ProviderKind,
        def: Value,
        payload: Value,
        resume: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let (def, payload) = (obj(def), obj(payload));
        let mut child = spawn(&spec(kind, &def, &payload, resume), env);
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Running {
            child,
            stdout,
            parser: kind.parser(&def),
            parsed: Vec::new(),
        }
    }

    /// Reads and parses one stdout line.
    fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("stdout line");
        self.parsed.extend(self.parser.line(Stream::Stdout, &line));
        line
    }

    /// Reads and parses the rest of the output, then the exit code.
    fn finish(mut self) -> Run {
        let mut stderr = self.child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("stdout line") == 0 {
                break;
            }
            self.parsed.extend(self.parser.line(Stream::Stdout, &line));
        }
        let stderr = reader.join().expect("stderr reader");
        for line in stderr.lines() {
            self.parsed.extend(self.parser.line(Stream::Stderr, line));
        }
        let code = wait(&mut self.child, Duration::from_secs(20));
        Run {
            parsed: self.parsed,
            outcome: self.parser.finish(code),
            code,
        }
    }
}

fn run(kind: ProviderKind, prompt: &str) -> Run {
    Running::start(kind, json!({}), json!({ "prompt": prompt }), None, &[]).finish()
}

fn texts(run: &Run) -> Vec<&str> {
    run.messages()
        .into_iter()
        .filter(|(k, _)| *k == Text)
        .map(|(_, c)| c)
        .collect()
}

// ---- claude-code ----

#[test]
fn claude_default_run_and_recording() {
    let record = scratch("claude-record");
    let record_str = record.to_str().expect("utf-8 temp dir");
    let def = json!({"model":"sonnet","instructions":"Be brief.","max_turns":3,"allowed_tools":["Read","Bash"]});
    let payload = json!({"prompt":"Say hello"});
    let run = Running::start(
        ClaudeCode,
        def.clone(),
        payload.clone(),
        None,
        &[
            ("FAKE_AGENT_RECORD", record_str),
            ("PADDOCK_ATTEMPT_ID", "att-1"),
        ],
    )
    .finish();

    assert_eq!(
        run.messages(),
        [
            (System, "session started (model sonnet)"),
            (Thinking, "Thinking about the task."),
            (Text, "Hello from fake claude."),
            (
                ToolUse,
                r#"Bash {"command":"echo hi","description":"Say hi"}"#
            ),
            (ToolResult, "hi"),
        ]
    );
    let sessions = run.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].starts_with("fake-session-"), "{sessions:?}");
    assert_eq!(
        run.last_usage(),
        Some(&Usage {
            model: Some("sonnet".into()),
            input_tokens: 100,
            output_tokens: 50,
            cache_read_tokens: 10,
            cache_write_tokens: 5,
            cost_usd: 0.0123,
        })
    );
    assert_eq!(
        run.complete(),
        &obj(json!({"text":"Hello from fake claude.","num_turns":2,"duration_ms":1234}))
    );

    // The fake recorded exactly what the provider asked for.
    let spec = spec(ClaudeCode, &obj(def), &obj(payload), None);
    let argv = std::fs::read_to_string(record.join("att-1.argv")).expect("argv");
    assert_eq!(argv.lines().collect::<Vec<_>>(), spec.args);
    assert_eq!(
        std::fs::read(record.join("att-1.stdin")).expect("stdin"),
        spec.stdin
    );
    assert_eq!(spec.stdin, b"Be brief.\n\nSay hello");
    let env = std::fs::read_to_string(record.join("att-1.env")).expect("env");
    assert!(env.lines().any(|l| l == "PADDOCK_ATTEMPT_ID=att-1"));
    let _ = std::fs::remove_dir_all(&record);
}

#[test]
fn claude_resume_reuses_the_session() {
    let run = Running::start(
        ClaudeCode,
        json!({}),
        json!({"prompt":"go on"}),
        Some("sess-42"),
        &[],
    )
    .finish();
    assert_eq!(run.sessions(), ["sess-42"]);
    assert_eq!(texts(&run), ["resumed sess-42"]);
    assert_eq!(run.complete()["text"], "resumed sess-42");
}

#[test]
fn claude_failures() {
    let fail = run(ClaudeCode, "please FAIL");
    assert_eq!(
        (fail.code, fail.error()),
        (Some(0), "fake failure requested")
    );

    let login = run(ClaudeCode, "LOGIN");
    assert_eq!(login.error(), "Not logged in · Please run /login");
    assert!(texts(&login).contains(&"Not logged in · Please run /login"));

    let exit3 = run(ClaudeCode, "EXIT3");
    assert_eq!(exit3.code, Some(3));
    assert_eq!(
        exit3.error(),
        "claude exited with code 3 without a result\nfake claude: fatal error, exiting with 3"
    );
    assert!(
        exit3
            .messages()
            .contains(&(Stderr, "fake claude: fatal error, exiting with 3"))
    );
}

#[test]
fn claude_garbage_is_kept_and_many_texts() {
    let garbage = run(ClaudeCode, "GARBAGE");
    let system: Vec<_> = garbage
        .messages()
        .into_iter()
        .filter(|(k, _)| *k == System)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        &system[1..],
        [
            "this is not JSON",
            r#"{"type":"assistant","message":{"content":[{"type":"te"#,
            r#"{"type":"mystery","x":1}"#,
            r#"{"type":"result","subtype":"succ"#,
        ]
    );
    assert_eq!(garbage.complete()["text"], "Hello from fake claude.");

    let many = run(ClaudeCode, "MANY 25");
    let want: Vec<String> = (1..=25).map(|i| format!("text {i}")).collect();
    assert_eq!(texts(&many), want);
    assert_eq!(many.complete()["text"], "text 25");
}

// ---- codex ----

#[test]
fn codex_default_run_and_recording() {
    let record = scratch("codex-record");
    let record_str = record.to_str().expect("utf-8 temp dir");
    let def = json!({"model":"gpt-5-codex","sandbox":"workspace-write"});
    let payload = json!({"task":"no prompt field"});
    let run = Running::start(
        Codex,
        def.clone(),
        payload.clone(),
        None,
        &[("FAKE_AGENT_RECORD", record_str)],
    )
    .finish();

    assert_eq!(
        run.messages(),
        [
            (Thinking, "**Thinking about the task**"),
            (ToolUse, r#"/bin/bash -lc "echo hi""#),
            (ToolResult, "hi\n"),
            (Text, "Hello from fake codex."),
        ]
    );
    assert!(run.sessions()[0].starts_with("fake-session-"));
    assert_eq!(
        run.last_usage(),
        Some(&Usage {
            model: Some("gpt-5-codex".into()),
            input_tokens: 100,
            output_tokens: 50,
            cache_read_tokens: 10,
            ..Usage::default()
        })
    );
    assert_eq!(
        run.complete(),
        &obj(json!({"text":"Hello from fake codex."}))
    );

    let spec = spec(Codex, &obj(def), &obj(payload), None);
    let argv = std::fs::read_to_string(record.join("argv")).expect("argv");
    assert_eq!(argv.lines().collect::<Vec<_>>(), spec.args);
    assert_eq!(
        std::fs::read(record.join("stdin")).expect("stdin"),
        br#"{"task":"no prompt field"}"#
    );
    let _ = std::fs::remove_dir_all(&record);
}

#[test]
fn codex_resume_reuses_the_thread() {
    let run = Running::start(
        Codex,
        json!({}),
        json!({"prompt":"go on"}),
        Some("0199-abc"),
        &[],
    )
    .finish();
    assert_eq!(run.sessions(), ["0199-abc"]);
    assert_eq!(run.complete()["text"], "resumed 0199-abc");
}

#[test]
fn codex_failures() {
    let fail = run(Codex, "FAIL");
    assert_eq!(
        (fail.code, fail.error()),
        (Some(0), "fake failure requested")
    );

    let login = run(Codex, "LOGIN");
    assert_eq!(login.code, Some(1));
    assert!(
        login
            .error()
            .starts_with("unexpected status 401 Unauthorized")
    );

    let exit3 = run(Codex, "EXIT3");
    assert_eq!(exit3.code, Some(3));
    assert_eq!(
        exit3.error(),
        "exit code 3\nfake codex: fatal error, exiting with 3"
    );
}

#[test]
fn codex_reconnects_garbage_and_many() {
    let reconnect = run(Codex, "RECONNECT");
    let errors = reconnect
        .messages()
        .into_iter()
        .filter(|(k, c)| *k == Error && c.starts_with("Reconnecting"))
        .count();
    assert_eq!(errors, 3);
    assert_eq!(
        reconnect
            .messages()
            .iter()
            .filter(|(k, _)| *k == Stderr)
            .count(),
        2
    );
    assert_eq!(reconnect.complete()["text"], "Hello from fake codex.");

    let garbage = run(Codex, "GARBAGE");
    let system: Vec<_> = garbage
        .messages()
        .into_iter()
        .filter(|(k, _)| *k == System)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        system,
        [
            "this is not JSON",
            r#"{"type":"item.completed","item":{"id":"item_9","type":"agent_mess"#,
            r#"{"type":"mystery.event","x":1}"#,
            r#"{"type":"turn.compl"#,
        ]
    );
    assert_eq!(garbage.complete()["text"], "Hello from fake codex.");

    let many = run(Codex, "MANY 7");
    assert_eq!(texts(&many).len(), 7);
    assert_eq!(many.complete()["text"], "text 7");
}

// ---- cancellation (SIGTERM / SIGKILL) ----

#[test]
fn sleep_dies_on_sigterm() {
    for kind in [ClaudeCode, Codex] {
        let mut running = Running::start(kind, json!({}), json!({"prompt":"SLEEP 30"}), None, &[]);
        let first = running.next_line();
        assert!(
            first.contains("init") || first.contains("thread.started"),
            "{first}"
        );
        let started = Instant::now();
        signal_group(&running.child, "TERM");
        let run = running.finish();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{kind}: took {:?}",
            started.elapsed()
        );
        assert_eq!(run.code, Some(143), "{kind}");
        run.error();
        assert_eq!(run.sessions().len(), 1);
    }
}

#[test]
fn sleep_then_finishes_normally() {
    let run = run(Codex, "SLEEP 1");
    assert_eq!(run.complete()["text"], "Hello from fake codex.");
}

#[test]
fn ignoreterm_only_dies_on_sigkill() {
    for kind in [ClaudeCode, Codex] {
        let mut running =
            Running::start(kind, json!({}), json!({"prompt":"IGNORETERM 5"}), None, &[]);
        running.next_line();
        std::thread::sleep(Duration::from_millis(500));
        signal_group(&running.child, "TERM");
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            running.child.try_wait().expect("try_wait").is_none(),
            "{kind} died on SIGTERM"
        );
        signal_group(&running.child, "KILL");
        let run = running.finish();
        assert_eq!(run.code, None, "{kind}");
        assert!(run.error().contains("killed by a signal"), "{kind}");
        assert!(
            run.messages()
                .iter()
                .any(|(k, c)| *k == Stderr && c.contains("ignoring SIGTERM")),
            "{kind}"
        );
    }
}

// ---- exec ----

fn run_exec(script: &str, payload: Value) -> Run {
    Running::start(
        Exec,
        json!({"command":["/bin/sh","-c",script]}),
        payload,
        None,
        &[],
    )
    .finish()
}

#[test]
fn exec_success_keeps_stdout() {
    let run = run_exec("cat; echo; echo done; echo note >&2", json!({"n":1}));
    assert_eq!(
        run.messages(),
        [
            (Stdout, r#"{"n":1}"#),
            (Stdout, ""),
            (Stdout, "done"),
            (Stderr, "note")
        ]
    );
    assert_eq!(
        run.complete(),
        &obj(json!({"exit_code":0,"output":"{\"n\":1}\n\ndone"}))
    );
}

#[test]
fn exec_failures() {
    let failed = run_exec(
        "echo partial; echo bad input >&2; echo see docs >&2; exit 4",
        json!({}),
    );
    assert_eq!(failed.error(), "exit code 4\nbad input\nsee docs");

    let killed = run_exec("echo before; kill -9 $$", json!({}));
    assert_eq!(killed.code, None);
    assert_eq!(killed.error(), "killed by a signal");
}
