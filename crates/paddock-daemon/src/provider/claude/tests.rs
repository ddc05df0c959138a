//! Unit tests of the `claude` provider on recorded output.

use std::path::Path;

use super::super::{feed, messages, obj};
use super::*;
use MessageKind::*;

const SESSION: &str = include_str!("../../../tests/recorded/claude_session.jsonl");
const NOT_LOGGED_IN: &str = include_str!("../../../tests/recorded/claude_real_not_logged_in.jsonl");
const RESUME_MISSING: &str =
    include_str!("../../../tests/recorded/claude_real_resume_missing.jsonl");
const RESUME_MISSING_ERR: &str =
    include_str!("../../../tests/recorded/claude_real_resume_missing.stderr.txt");

fn launch<'a>(def: &'a JsonObject, payload: &'a JsonObject, resume: Option<&'a str>) -> Launch<'a> {
    Launch {
        bin: Path::new("/opt/claude"),
        definition: def,
        payload,
        work_dir: Path::new("/work/task"),
        resume_session: resume,
    }
}

#[test]
fn command_line_has_every_flag() {
    let def = obj(
        r#"{"model":"sonnet","permission_mode":"acceptEdits","max_turns":7,
        "allowed_tools":["Read","Bash(git *)"],"instructions":"Be careful."}"#,
    );
    let payload = obj(r#"{"prompt":"Fix the bug"}"#);
    let spec = command(&launch(&def, &payload, Some("sess-1"))).unwrap();
    assert_eq!(spec.program, Path::new("/opt/claude"));
    assert_eq!(
        spec.args,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "sonnet",
            "--resume",
            "sess-1",
            "--permission-mode",
            "acceptEdits",
            "--max-turns",
            "7",
            "--allowedTools",
            "Read,Bash(git *)"
        ]
    );
    assert_eq!(spec.stdin, b"Be careful.\n\nFix the bug");
    assert!(spec.env.is_empty());

    let bare = command(&launch(&JsonObject::new(), &payload, None)).unwrap();
    assert_eq!(
        bare.args,
        ["-p", "--output-format", "stream-json", "--verbose"]
    );
}

#[test]
fn bad_definition_fields_are_errors() {
    let payload = obj(r#"{"prompt":"x"}"#);
    for def in [
        r#"{"model":3}"#,
        r#"{"max_turns":0}"#,
        r#"{"max_turns":"2"}"#,
        r#"{"allowed_tools":"Read"}"#,
        r#"{"allowed_tools":["Read",1]}"#,
        r#"{"instructions":["x"]}"#,
    ] {
        let def = obj(def);
        assert!(command(&launch(&def, &payload, None)).is_err(), "{def:?}");
    }
}

#[test]
fn recorded_session_becomes_a_transcript() {
    let mut p = ClaudeParser::new(&obj(r#"{"model":"from-definition"}"#));
    let parsed = feed(&mut p, Stream::Stdout, SESSION);
    let msgs = messages(&parsed);
    assert_eq!(
        msgs[0],
        (System, "session started (model claude-sonnet-4-5)")
    );
    assert_eq!(
        &msgs[1..4],
        [
            (Thinking, "I should list the files first."),
            (Text, "I'll look at the directory."),
            (
                ToolUse,
                r#"Bash {"command":"ls","description":"List files"}"#
            ),
        ]
    );
    assert_eq!(msgs[4], (ToolResult, "Cargo.toml\nsrc"));
    // Malformed, truncated and unknown lines are kept verbatim; blank ones dropped.
    assert_eq!(msgs[5], (System, "this line is not JSON at all"));
    assert_eq!(
        msgs[6],
        (
            System,
            r#"{"type":"assistant","message":{"id":"msg_01B","content":[{"type":"text","te"#
        )
    );
    assert!(msgs[7].1.starts_with(r#"{"type":"stream_event""#));
    assert!(msgs[8].1.contains("compact_boundary"));
    assert_eq!(msgs[9], (System, "[1,2,3]"));
    assert_eq!(msgs[10].0, ToolUse);
    assert_eq!(
        msgs[11],
        (ToolResult, "[package]\nname = \"task\"\n[image]")
    );
    assert_eq!(msgs[12], (Text, "Done: two files."));
    assert_eq!(msgs[13], (Thinking, "[redacted thinking]"));
    assert_eq!(
        (msgs[14].0, msgs[14].1),
        (System, r#"{"type":"mystery_block","x":1}"#)
    );
    assert_eq!(msgs[15].0, Text);
    assert_eq!(msgs[15].1.len(), super::super::MAX_CONTENT_BYTES - 1);
    assert_eq!(msgs.len(), 16);

    let data = |i: usize| match parsed
        .iter()
        .filter(|p| matches!(p, Parsed::Message { .. }))
        .nth(i)
    {
        Some(Parsed::Message { data, .. }) => {
            data.clone().map(Value::Object).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    assert_eq!(
        data(3),
        serde_json::json!({"id":"toolu_01","name":"Bash",
        "input":{"command":"ls","description":"List files"}})
    );
    assert_eq!(
        data(4),
        serde_json::json!({"tool_use_id":"toolu_01","is_error":false})
    );
    assert_eq!(
        data(11),
        serde_json::json!({"tool_use_id":"toolu_02","is_error":true,
        "parent_tool_use_id":"toolu_00"})
    );
    assert_eq!(data(15), serde_json::json!({"truncated":true}));

    let sessions: Vec<_> = parsed
        .iter()
        .filter(|p| matches!(p, Parsed::Session(_)))
        .collect();
    assert_eq!(
        sessions,
        [&Parsed::Session(
            "5f1c9a3e-0d5e-4a36-9a39-7e0f3c2b8d11".into()
        )]
    );
    assert_eq!(
        parsed.last(),
        Some(&Parsed::Usage(Usage {
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: 1200,
            output_tokens: 250,
            cache_read_tokens: 4000,
            cache_write_tokens: 300,
            cost_usd: 0.0456,
        }))
    );
    assert_eq!(
        p.finish(Some(0)),
        Outcome::Complete(obj(
            r#"{"text":"Done: two files.","num_turns":3,"duration_ms":5123}"#
        ))
    );
}

#[test]
fn success_result_still_fails_on_a_bad_exit_or_signal() {
    let mut p = ClaudeParser::new(&JsonObject::new());
    feed(&mut p, Stream::Stdout, SESSION);
    p.line(Stream::Stderr, "oops\r\n");
    assert_eq!(p.finish(Some(2)), fail("exit code 2\noops".into()));
    assert!(matches!(
        p.finish(None),
        Outcome::Fail {
            retryable: true,
            ..
        }
    ));
}

#[test]
fn real_not_logged_in_output_is_a_failure_with_the_cli_text() {
    for code in [0, 1] {
        let mut p = ClaudeParser::new(&JsonObject::new());
        let parsed = feed(&mut p, Stream::Stdout, NOT_LOGGED_IN);
        assert_eq!(
            parsed[0],
            Parsed::Session("81402241-ca3a-4213-9f45-23debeea265c".into())
        );
        assert!(messages(&parsed).contains(&(Text, "Not logged in · Please run /login")));
        assert!(parsed.iter().any(|p| matches!(p, Parsed::Usage(u)
            if u.model.as_deref() == Some("claude-opus-4-8[1m]") && u.input_tokens == 0)));
        assert_eq!(
            p.finish(Some(code)),
            fail("Not logged in · Please run /login".into())
        );
    }
}

#[test]
fn real_missing_resume_reports_the_errors() {
    let mut p = ClaudeParser::new(&JsonObject::new());
    let mut parsed = feed(&mut p, Stream::Stdout, RESUME_MISSING);
    parsed.extend(feed(&mut p, Stream::Stderr, RESUME_MISSING_ERR));
    let error = "No conversation found with session ID: 11111111-2222-3333-4444-555555555555";
    assert_eq!(
        parsed[0],
        Parsed::Session("11111111-2222-3333-4444-555555555555".into())
    );
    assert_eq!(messages(&parsed), [(Error, error), (Stderr, error)]);
    assert_eq!(p.finish(Some(1)), fail(error.into()));
}

#[test]
fn no_result_line_is_a_failure() {
    let mut p = ClaudeParser::new(&JsonObject::new());
    feed(
        &mut p,
        Stream::Stdout,
        NOT_LOGGED_IN.lines().next().unwrap_or(""),
    );
    p.line(Stream::Stderr, "fatal: boom");
    assert_eq!(
        p.finish(Some(0)),
        fail("claude exited with code 0 without a result\nfatal: boom".into())
    );
}

#[test]
fn huge_garbage_and_empty_lines_never_panic() {
    let mut p = ClaudeParser::new(&JsonObject::new());
    let huge = "{".repeat(200_000);
    let parsed = p.line(Stream::Stdout, &huge);
    assert!(
        matches!(&parsed[..], [Parsed::Message { kind: System, content, data: Some(d) }]
        if content.len() == super::super::MAX_CONTENT_BYTES && d["truncated"] == true)
    );
    for line in [
        "",
        "\r\n",
        "null",
        "{}",
        r#"{"type":"assistant"}"#,
        r#"{"type":"user","message":{"content":7}}"#,
    ] {
        p.line(Stream::Stdout, line);
    }
    assert!(matches!(p.finish(Some(0)), Outcome::Fail { .. }));
}
