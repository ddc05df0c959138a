//! Unit tests of the `exec` provider on recorded output.

use std::path::Path;

use super::super::{feed, messages, obj};
use super::*;

const STDOUT: &str = include_str!("../../../tests/recorded/exec_stdout.txt");
const STDERR: &str = include_str!("../../../tests/recorded/exec_stderr.txt");

fn launch<'a>(def: &'a JsonObject, payload: &'a JsonObject) -> Launch<'a> {
    Launch {
        bin: Path::new("unused"),
        definition: def,
        payload,
        work_dir: Path::new("/work/task"),
        resume_session: Some("ignored"),
    }
}

#[test]
fn command_is_the_definition_argv_with_the_payload_on_stdin() {
    let def = obj(r#"{"command":["/bin/sh","-c","cat"]}"#);
    let payload = obj(r#"{"n":1,"s":"x"}"#);
    let spec = command(&launch(&def, &payload)).unwrap();
    assert_eq!(spec.program, Path::new("/bin/sh"));
    assert_eq!(spec.args, ["-c", "cat"]);
    assert_eq!(spec.stdin, b"{\"n\":1,\"s\":\"x\"}\n");
}

#[test]
fn bad_commands_are_errors_naming_the_problem() {
    let payload = JsonObject::new();
    for (def, want) in [
        (r#"{}"#, "no `command`"),
        (r#"{"command":null}"#, "no `command`"),
        (r#"{"command":"ls -l"}"#, "must be an argv array"),
        (r#"{"command":[]}"#, "is empty"),
        (r#"{"command":["ls",3]}"#, "`command[1]` is not a string"),
        (r#"{"command":[""]}"#, "the program"),
    ] {
        let err = command(&launch(&obj(def), &payload)).unwrap_err();
        assert!(err.contains(want), "{def}: {err}");
    }
}

#[test]
fn recorded_output_becomes_messages_and_an_outcome() {
    let mut p = ExecParser::new();
    let mut parsed = feed(&mut p, Stream::Stdout, STDOUT);
    parsed.extend(feed(&mut p, Stream::Stderr, STDERR));
    let msgs = messages(&parsed);
    assert_eq!(msgs.len(), 11);
    assert_eq!(
        &msgs[..3],
        [
            (MessageKind::Stdout, "build started"),
            (MessageKind::Stdout, ""),
            (MessageKind::Stdout, "step 1 ok"),
        ]
    );
    assert_eq!(msgs[3].1.len(), MAX_CONTENT_BYTES - 1);
    assert!(matches!(&parsed[3], Parsed::Message { data: Some(d), .. } if d["truncated"] == true));
    assert_eq!(
        &msgs[4..7],
        [
            (MessageKind::Stdout, r#"{"looks":"like json"}"#),
            (MessageKind::Stdout, r#"{"truncated":"#),
            (MessageKind::Stdout, "result: 42"),
        ]
    );
    assert_eq!(msgs[10], (MessageKind::Stderr, "hint: check the input"));

    let Outcome::Complete(done) = p.finish(Some(0)) else {
        panic!("not complete")
    };
    let output = done["output"].as_str().unwrap_or_default();
    assert_eq!(done["exit_code"], 0);
    assert!(output.len() > MAX_CONTENT_BYTES - 4 && output.len() <= MAX_CONTENT_BYTES);
    assert!(output.ends_with("éé\n{\"looks\":\"like json\"}\n{\"truncated\":\nresult: 42"));

    assert_eq!(
        p.finish(Some(3)),
        fail(
            "exit code 3\nwarning: something odd\nerror: step 2 failed\nhint: check the input"
                .into()
        )
    );
    assert!(
        matches!(p.finish(None), Outcome::Fail { error, retryable: true }
        if error.starts_with("killed by a signal\n"))
    );
}

#[test]
fn output_keeps_only_the_last_64_kib() {
    let mut p = ExecParser::new();
    for i in 0..20_000 {
        p.line(Stream::Stdout, &format!("line {i}\n"));
    }
    let Outcome::Complete(done) = p.finish(Some(0)) else {
        panic!("not complete")
    };
    let output = done["output"].as_str().unwrap_or_default();
    assert!(output.len() <= MAX_CONTENT_BYTES && output.len() > MAX_CONTENT_BYTES - 20);
    assert!(output.ends_with("line 19998\nline 19999"));

    let mut empty = ExecParser::new();
    assert_eq!(
        empty.finish(Some(0)),
        Outcome::Complete(obj(r#"{"exit_code":0,"output":""}"#))
    );
}
