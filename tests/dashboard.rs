//! The dashboard in headless Chromium (scripts under tests/browser/, driven with node):
//! * a task enqueued through the API appears on the overview live, without a reload;
//! * the tasks list (newest first, names not ids, filters, live rows) and the task view (fields,
//!   usage, attempts, and the transcript: live, styled by kind, collapsible tool calls,
//!   auto-scroll, reconnection after a drop, the end).
//!
//! Screenshots go to target/dashboard.png, target/dashboard-tasks.png and
//! target/dashboard-task.png (not in git).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Resp, TestApp, Ws};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A browser script under tests/browser/ and its step protocol: the script prints a line when it
/// needs the test to act, and waits for the test's answer on stdin.
struct Browser {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    stdin: ChildStdin,
}

impl Browser {
    fn spawn(script: &str, args: &[&str]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(dir.join("tests/browser").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is needed for the dashboard test; ./test.sh installs its dependencies");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take().unwrap();
        Browser { child, out, stdin }
    }

    /// The script's next line; panics if it ends or stays silent for `within`.
    async fn line(&mut self, within: Duration) -> Option<String> {
        match tokio::time::timeout(within, self.out.next_line()).await {
            Ok(line) => line.expect("reading the browser script's output"),
            Err(_) => panic!("the browser script said nothing for {within:?}"),
        }
    }

    /// Awaits the script asking for `step`; panics (with the script's exit status) otherwise.
    async fn expect(&mut self, step: &str) {
        let got = self.line(STEP_TIMEOUT).await;
        if got.as_deref() != Some(step) {
            let status = self.child.wait().await;
            panic!(
                "expected the browser to reach {step}, got {got:?} (script exit: {status:?}; its stderr is above)"
            );
        }
    }

    async fn answer(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("writing to the browser script");
        self.stdin.flush().await.unwrap();
    }

    async fn succeeds(mut self) {
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "browser script failed: {status}");
    }
}

fn target(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(file)
}

fn ok(r: &Resp, what: &str) {
    assert_eq!(r.status, StatusCode::OK, "{what}: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_task_appears_on_the_dashboard_without_reload() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;

    let shot = target("dashboard.png");
    let mut browser = Browser::spawn(
        "dashboard.mjs",
        &[
            app.base.as_str(),
            ws.member.as_str(),
            shot.to_str().unwrap(),
        ],
    );
    let ready = browser.line(STEP_TIMEOUT).await;
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "run `npm install` in tests/browser and install chromium (./test.sh does both)"
    );
    app.enqueue(
        &ws,
        &agent,
        json!({ "payload": { "from": "dashboard test" } }),
    )
    .await;
    let seen = browser.line(Duration::from_secs(30)).await;
    assert_eq!(seen.as_deref(), Some("SEEN"), "event did not appear");
    browser.succeeds().await;
    assert!(shot.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_agents_draining_runtimes_and_why_a_task_waits_are_shown() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({})).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let shot = target("dashboard-scheduling.png");
    let mut browser = Browser::spawn(
        "scheduling.mjs",
        &[
            app.base.as_str(),
            ws.member.as_str(),
            task_id.as_str(),
            shot.to_str().unwrap(),
        ],
    );
    browser.expect("READY").await;
    common::api::set_paused(&app, &ws, &agent, true).await;
    let r = app
        .post(
            &format!("/api/v1/runtimes/{rt}/drain"),
            &ws.member,
            json!({}),
        )
        .await;
    ok(&r, "drain");
    browser.expect("SEEN").await;
    browser.succeeds().await;
    assert!(shot.exists());
}

async fn named_agent(app: &TestApp, ws: &Ws, runtime: &str, name: &str) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            &ws.member,
            json!({ "name": name, "runtime_id": runtime, "max_concurrent_tasks": 1, "definition": { "model": "test" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "create agent: {:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn enqueue(app: &TestApp, ws: &Ws, agent: &str, payload: Value) -> String {
    let t = app.enqueue(ws, agent, json!({ "payload": payload })).await;
    t["id"].as_str().unwrap().to_owned()
}

/// Claims the one task there is to claim (`want`) and starts it; returns its attempt id.
async fn claim_and_start(app: &TestApp, ws: &Ws, runtime: &str, want: &str) -> String {
    let claimed = app.claim(ws, runtime, 1, 0).await;
    assert_eq!(claimed["tasks"][0]["task_id"], want, "{claimed}");
    let attempt = claimed["tasks"][0]["attempt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .report(ws, want, "start", json!({ "attempt_id": attempt }))
        .await;
    ok(&r, "start");
    attempt
}

async fn post_messages(app: &TestApp, ws: &Ws, task: &str, attempt: &str, messages: Value) {
    let n = messages.as_array().unwrap().len();
    let r = app
        .post(
            &format!("/api/v1/tasks/{task}/messages"),
            &ws.daemon,
            json!({ "attempt_id": attempt, "messages": messages }),
        )
        .await;
    ok(&r, "post messages");
    assert_eq!(r.body["accepted"], n, "{:?}", r.body);
}

/// Messages `seqs` of assorted kinds (the ones the first batch has not shown yet among them).
fn lines(seqs: std::ops::RangeInclusive<i64>) -> Value {
    const KINDS: [&str; 5] = ["stdout", "thinking", "system", "error", "text"];
    seqs.map(|seq| json!({ "seq": seq, "kind": KINDS[seq as usize % KINDS.len()], "content": format!("line {seq}") }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_list_and_task_view_are_live() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app
        .runtime_with(
            &ws,
            json!({ "daemon_id": "laptop-1", "provider": "claude-code", "name": "laptop" }),
        )
        .await;
    let reviewer = named_agent(&app, &ws, &rt, "reviewer").await;
    let writer = named_agent(&app, &ws, &rt, "writer").await;

    // Oldest first: completed, failed, running (with a transcript and usage), queued.
    let done = enqueue(&app, &ws, &reviewer, json!({ "n": 1 })).await;
    let attempt = claim_and_start(&app, &ws, &rt, &done).await;
    let r = app
        .report(
            &ws,
            &done,
            "complete",
            json!({ "attempt_id": attempt, "result": {} }),
        )
        .await;
    ok(&r, "complete");
    let failed = enqueue(&app, &ws, &writer, json!({ "n": 2 })).await;
    let attempt = claim_and_start(&app, &ws, &rt, &failed).await;
    let r = app
        .report(
            &ws,
            &failed,
            "fail",
            json!({ "attempt_id": attempt, "error": "boom", "retryable": false }),
        )
        .await;
    ok(&r, "fail");
    let running = enqueue(&app, &ws, &reviewer, json!({ "from": "dashboard test" })).await;
    let attempt = claim_and_start(&app, &ws, &rt, &running).await;
    post_messages(
        &app,
        &ws,
        &running,
        &attempt,
        json!([
            { "seq": 0, "kind": "text", "content": "hello" },
            { "seq": 1, "kind": "tool_use", "content": "Read", "data": { "name": "Read", "input": { "path": "a.rs" } } },
            { "seq": 2, "kind": "tool_result", "content": "fn main(){}", "data": { "tool_use_id": "t1", "is_error": false } },
            { "seq": 3, "kind": "stderr", "content": "warn" },
        ]),
    )
    .await;
    let usage = json!({ "input_tokens": 100, "output_tokens": 50, "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.01 });
    let r = app
        .report(
            &ws,
            &running,
            "progress",
            json!({ "attempt_id": attempt, "progress": {}, "usage": usage }),
        )
        .await;
    ok(&r, "progress");
    let queued = enqueue(&app, &ws, &writer, json!({ "n": 4 })).await;

    let ids = json!({ "reviewer": reviewer, "writer": writer, "done": done, "failed": failed, "running": running, "queued": queued });
    let dir = target("");
    let mut browser = Browser::spawn(
        "tasks.mjs",
        &[
            app.base.as_str(),
            ws.member.as_str(),
            dir.to_str().unwrap(),
            &ids.to_string(),
        ],
    );

    browser.expect("LIST_READY").await;
    let live = enqueue(&app, &ws, &reviewer, json!({ "n": 5 })).await;
    browser.answer(&live).await;

    browser.expect("LIVE_SEEN").await;
    let r = app
        .post(
            &format!("/api/v1/tasks/{queued}/cancel"),
            &ws.member,
            json!({}),
        )
        .await;
    ok(&r, "cancel");
    browser.answer("ok").await;

    browser.expect("TRANSCRIPT_SHOWN").await;
    post_messages(
        &app,
        &ws,
        &running,
        &attempt,
        json!([{ "seq": 4, "kind": "text", "content": "a live message <img src=x onerror=\"window.__xss = 1\">" }]),
    )
    .await;
    browser.answer("ok").await;

    browser.expect("RECONNECTED").await;
    post_messages(&app, &ws, &running, &attempt, lines(5..=5)).await;
    browser.answer("ok").await;

    browser.expect("FLOOD").await;
    post_messages(&app, &ws, &running, &attempt, lines(6..=69)).await;
    browser.answer("ok").await;

    browser.expect("SCROLLED_UP").await;
    post_messages(&app, &ws, &running, &attempt, lines(70..=89)).await;
    browser.answer("ok").await;

    browser.expect("AT_BOTTOM").await;
    post_messages(&app, &ws, &running, &attempt, lines(90..=90)).await;
    browser.answer("ok").await;

    browser.expect("COMPLETE").await;
    let usage = json!({ "input_tokens": 200, "output_tokens": 80, "cache_read_tokens": 10, "cache_write_tokens": 5, "cost_usd": 0.02, "model": "test-model" });
    let r = app
        .report(
            &ws,
            &running,
            "complete",
            json!({ "attempt_id": attempt, "result": { "summary": "done" }, "usage": usage }),
        )
        .await;
    ok(&r, "complete");
    browser.answer("ok").await;

    browser.expect("DONE").await;
    browser.succeeds().await;
    assert!(target("dashboard-tasks.png").exists());
    assert!(target("dashboard-task.png").exists());
}
