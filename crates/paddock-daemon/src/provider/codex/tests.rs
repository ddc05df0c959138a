//! Unit tests of the `codex` provider on recorded output.

use std::path::Path;

use super::super::{feed, messages, obj};
use super::*;
use MessageKind::*;

const SESSION: &str = include_str!("../../../tests/recorded/codex_session.jsonl");
const TURN_FAILED: &str = include_str!("../../../tests/recorded/codex_turn_failed.jsonl");
const OFFLINE: &str = include_str!("../../../tests/recorded/codex_real_offline.jsonl");
const OFFLINE_ERR: &str = include_str!("../../../tests/recorded/codex_real_offline.stderr.txt");
const RESUME_OFFLINE: &str =
    include_str!("../../../tests/recorded/codex_real_resume_offline.jsonl");
const RESUME_MISSING_ERR: &str =
    include_str!("../../../tests/recorded/codex_real_resume_missing.stderr.txt");

fn launch<'a>(def: &'a JsonObject, payload: &'a JsonObject, resume: Option<&'a str>) -> Launch<'a> {
    Launch {
        bin: Path::new("codex"),
        definition: def,
        payload,
        work_dir: Path::new("/work/task"),
        resume_session: resume,
    }
}

#[test]
fn command_lines() {
    let def =
        obj(r#"{"model":"gpt-5-codex","sandbox":"workspace-write","instructions":"Be brief."}"#);
    let payload = obj(r#"{"prompt":"Fix it"}"#);
    let spec = command(&launch(&def, &payload, None)).unwrap();
    assert_eq!(
        spec.args,
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-C",
            "/work/task",
            "-m",
            "gpt-5-codex",
            "-s",
            "workspace-write",
            "-"
        ]
    );
    assert_eq!(spec.stdin, b"Be brief.\n\nFix it");
    let resumed = command(&launch(&JsonObject::new(), &payload, Some("0199a213"))).unwrap();
    assert_eq!(
        resumed.args,
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "-C",
            "/work/task",
            "resume",
            "0199a213",
            "-"
        ]
    );
    assert!(command(&launch(&obj(r#"{"sandbox":true}"#), &payload, None)).is_err());
}

#[test]
fn recorded_session_becomes_a_transcript() {
    let mut p = CodexParser::new(&obj(r#"{"model":"gpt-5-codex"}"#));
    let parsed = feed(&mut p, Stream::Stdout, SESSION);
    assert_eq!(
        parsed[0],
        Parsed::Session("0199a213-81c0-7800-8aa1-bbab2a035a53".into())
    );
    let msgs = messages(&parsed);
    assert_eq!(
        &msgs[..12],
        [
            (Thinking, "**Scanning the repo**\n\nI'll list files first."),
            (ToolUse, "/bin/bash -lc ls"),
            (ToolResult, "Cargo.toml\nsrc\n"),
            (
                Error,
                "Reconnecting... 1/5 (stream disconnected before completion: error sending request for url)"
            ),
            (
                System,
                "file_change: update /work/task/src/lib.rs, add /work/task/NOTES.md"
            ),
            (System, "mcp_tool_call: docs/search (completed)"),
            (System, "web_search: serde flatten tag"),
            (System, "todo_list: 2/2 done"),
            (ToolUse, "/bin/bash -lc 'cargo test'"),
            (ToolResult, "error: could not compile `task`"),
            (System, "not json, just a log line"),
            (
                System,
                r#"{"type":"item.completed","item":{"id":"item_7","type":"agent_mess"#
            ),
        ]
    );
    assert!(msgs[12].1.contains("item.plan.delta"));
    assert_eq!(msgs[13], (System, r#""just a string""#));
    assert_eq!(msgs[14], (Text, "Fixed the build."));
    assert_eq!(
        (msgs[15].0, msgs[15].1.len()),
        (Text, super::super::MAX_CONTENT_BYTES - 1)
    );
    assert_eq!(msgs[16], (Text, "All done."));
    assert_eq!(msgs.len(), 17);

    let data: Vec<_> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Message { data, .. } => {
                Some(data.clone().map(Value::Object).unwrap_or(Value::Null))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        data[1],
        serde_json::json!({"id":"item_1","command":"/bin/bash -lc ls","exit_code":0,"status":"completed"})
    );
    assert_eq!(
        data[9],
        serde_json::json!({"tool_use_id":"item_6","is_error":true,"exit_code":101})
    );
    assert_eq!(data[4]["changes"][1]["kind"], "add");
    assert_eq!(data[15], serde_json::json!({"truncated":true}));

    let usages: Vec<_> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Usage(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(usages.len(), 2);
    assert_eq!(
        usages[1],
        Usage {
            model: Some("gpt-5-codex".into()),
            input_tokens: 25763,
            output_tokens: 172,
            cache_read_tokens: 24948,
            cache_write_tokens: 0,
            cost_usd: 0.0,
        }
    );
    assert_eq!(
        p.finish(Some(0)),
        Outcome::Complete(obj(r#"{"text":"All done."}"#))
    );
    assert!(matches!(p.finish(Some(1)), Outcome::Fail { .. }));
}

#[test]
fn turn_failed_is_a_failure_even_on_exit_zero() {
    let mut p = CodexParser::new(&JsonObject::new());
    let parsed = feed(&mut p, Stream::Stdout, TURN_FAILED);
    let error =
        "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header";
    assert_eq!(messages(&parsed).last(), Some(&(Error, error)));
    assert_eq!(p.finish(Some(0)), fail(error.into()));
}

#[test]
fn real_offline_retries_are_messages_not_failures() {
    let mut p = CodexParser::new(&JsonObject::new());
    let mut parsed = feed(&mut p, Stream::Stdout, OFFLINE);
    parsed.extend(feed(&mut p, Stream::Stderr, OFFLINE_ERR));
    assert_eq!(
        parsed[0],
        Parsed::Session("01a23c2a-efd8-71d2-a6be-e2e554f81ee7".into())
    );
    let msgs = messages(&parsed);
    assert_eq!(
        msgs.iter()
            .filter(|(k, c)| *k == Error && c.starts_with("Reconnecting..."))
            .count(),
        6
    );
    assert!(
        msgs.iter()
            .any(|(k, c)| *k == System && c.starts_with("error: Falling back"))
    );
    assert_eq!(msgs.iter().filter(|(k, _)| *k == Stderr).count(), 8);
    // The real run was killed by the timeout: a signal is a failure.
    let Outcome::Fail { error, retryable } = p.finish(None) else {
        panic!("not a failure")
    };
    assert!(retryable);
    assert!(
        error.starts_with("codex was killed by a signal: Reconnecting... waiting for network"),
        "{error}"
    );
}

#[test]
fn real_resume_output_and_missing_session() {
    let mut p = CodexParser::new(&JsonObject::new());
    let parsed = feed(&mut p, Stream::Stdout, RESUME_OFFLINE);
    assert_eq!(
        parsed
            .iter()
            .filter(|p| matches!(p, Parsed::Session(_)))
            .count(),
        1
    );
    assert!(
        messages(&parsed)[0]
            .1
            .starts_with("error: This session was recorded with model")
    );

    let mut p = CodexParser::new(&JsonObject::new());
    feed(&mut p, Stream::Stderr, RESUME_MISSING_ERR);
    let Outcome::Fail { error, .. } = p.finish(Some(1)) else {
        panic!("not a failure")
    };
    assert!(error.starts_with("exit code 1\nWARNING"), "{error}");
    assert!(error.ends_with(
        "no rollout found for thread id 99999999-2222-3333-4444-555555555555 (code -32600)"
    ));
}

#[test]
fn odd_lines_never_panic() {
    let mut p = CodexParser::new(&JsonObject::new());
    for line in [
        "",
        "  ",
        "{",
        "{}",
        "[]",
        r#"{"type":"item.completed"}"#,
        r#"{"type":"item.completed","item":{"type":"command_execution"}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":"many"}}"#,
        r#"{"type":"thread.started","thread_id":""}"#,
        r#"{"type":"error"}"#,
    ] {
        p.line(Stream::Stdout, line);
    }
    let huge = p.line(Stream::Stderr, &"x".repeat(100_000));
    assert!(
        matches!(&huge[..], [Parsed::Message { kind: Stderr, content, .. }]
        if content.len() == super::super::MAX_CONTENT_BYTES)
    );
    assert_eq!(p.finish(Some(0)), Outcome::Complete(obj(r#"{"text":""}"#)));
}
