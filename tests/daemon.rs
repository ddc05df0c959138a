//! `paddock daemon` against a real server, with real processes: the fake `claude` and `codex`
//! CLIs of `tests/fake-agents/` and the `exec` provider. Each test prints its figures
//! (`daemon: …`): tasks, kills, lost (must be 0), duplicates (must be 0).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::daemon::{DaemonSpec, Scratch, alive, fake_agent};
use common::settings::fast;
use common::{TestApp, Ws, eventually};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The runtime the daemon registered for `provider` (waits for it).
async fn runtime_of(app: &TestApp, ws: &Ws, daemon_id: &str, provider: &str) -> String {
    common::wait::eventually_some(Duration::from_secs(20), "the daemon registers", || async {
        let r = app.get("/api/v1/runtimes?limit=500", &ws.member).await;
        r.body["items"].as_array()?.iter().find_map(|rt| {
            (rt["daemon_id"] == daemon_id && rt["provider"] == provider)
                .then(|| rt["id"].as_str().unwrap().to_owned())
        })
    })
    .await
}

async fn agent(app: &TestApp, ws: &Ws, runtime: &str, max: i64, definition: Value) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            &ws.member,
            json!({ "name": "agent", "runtime_id": runtime, "max_concurrent_tasks": max, "definition": definition }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn enqueue(app: &TestApp, ws: &Ws, agent: &str, body: Value) -> String {
    app.enqueue(ws, agent, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn task(app: &TestApp, ws: &Ws, id: &str) -> Value {
    common::api::task(app, ws, id).await
}

async fn until_status(
    app: &TestApp,
    ws: &Ws,
    id: &str,
    status: &str,
    within: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let t = task(app, ws, id).await;
        if t["status"] == status {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "task {id} is {} not {status} after {within:?}: {t}\ndaemon log:\n{}",
                t["status"],
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn messages(app: &TestApp, ws: &Ws, id: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v1/tasks/{id}/messages?limit=500"),
            &ws.member,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    r.body["items"].as_array().unwrap().clone()
}

async fn events_of(app: &TestApp, kind: &str, subject: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE type = $1 AND subject_id = $2")
        .bind(kind)
        .bind(subject.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn exec(script: &str) -> Value {
    json!({ "command": ["sh", "-c", script] })
}

#[tokio::test]
async fn claude_tasks_complete_with_transcript_usage_and_result() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("claude");
    let record = scratch.path("record");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["claude-code"])
        .env("PADDOCK_CLAUDE_BIN", fake_agent("claude"))
        .env("FAKE_AGENT_RECORD", &record);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "claude-code").await;
    let agent = agent(
        &app,
        &ws,
        &rt,
        4,
        json!({ "model": "sonnet", "instructions": "be brief" }),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            enqueue(
                &app,
                &ws,
                &agent,
                json!({ "payload": { "prompt": format!("hello {n}") } }),
            )
            .await,
        );
    }
    for id in &ids {
        until_status(&app, &ws, id, "completed", Duration::from_secs(30), || {
            daemon.logs()
        })
        .await;
        let t = task(&app, &ws, id).await;
        assert!(
            t["result"]["text"].as_str().is_some_and(|s| !s.is_empty()),
            "{t}"
        );
        assert_eq!(t["usage"]["input_tokens"], 100, "{t}");
        assert_eq!(t["usage"]["cache_read_tokens"], 10);
        assert_eq!(t["usage"]["cache_write_tokens"], 5);
        let kinds: Vec<String> = messages(&app, &ws, id)
            .await
            .iter()
            .map(|m| m["kind"].as_str().unwrap().to_owned())
            .collect();
        for k in ["thinking", "text", "tool_use", "tool_result"] {
            assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
        }
        let attempt = t["attempt_id"].as_str().unwrap();
        let argv = std::fs::read_to_string(record.join(format!("{attempt}.argv"))).unwrap();
        let argv: Vec<&str> = argv.lines().collect();
        for a in [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "sonnet",
        ] {
            assert!(argv.contains(&a), "{a} in {argv:?}");
        }
        let env = std::fs::read_to_string(record.join(format!("{attempt}.env"))).unwrap();
        assert!(
            env.contains(&format!("PADDOCK_TASK_ID={id}")),
            "the task id is in the agent's environment"
        );
        assert!(env.contains(&format!("PADDOCK_ATTEMPT_ID={attempt}")));
        assert!(
            !env.contains("PADDOCK_DAEMON_TOKEN") && !env.contains(&ws.daemon),
            "never the daemon token"
        );
        let stdin = std::fs::read_to_string(record.join(format!("{attempt}.stdin"))).unwrap();
        assert!(
            stdin.contains("be brief") && stdin.contains("hello"),
            "the prompt on stdin: {stdin}"
        );
    }
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE type = 'task.completed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(completed, 3);
    println!(
        "daemon: tasks 3, kills 0, lost 0, duplicates {}",
        completed - 3
    );
}

#[tokio::test]
async fn exec_attempts_never_exceed_max_concurrency() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("concurrency");
    let log = scratch.path("log");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec"])
        .arg("--max-concurrency")
        .arg("2")
        .env("TEST_LOG", &log);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    let script = r#"echo "s $(date +%s%N)" >> "$TEST_LOG/$PADDOCK_TASK_ID"; sleep 0.4; echo "e $(date +%s%N)" >> "$TEST_LOG/$PADDOCK_TASK_ID"; echo done"#;
    let agent = agent(&app, &ws, &rt, 10, exec(script)).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(enqueue(&app, &ws, &agent, json!({})).await);
    }
    for id in &ids {
        until_status(&app, &ws, id, "completed", Duration::from_secs(60), || {
            daemon.logs()
        })
        .await;
    }
    // The processes' own start and end times: never more than 2 at once.
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for id in &ids {
        let lines = std::fs::read_to_string(log.join(id)).unwrap();
        for l in lines.lines() {
            let (what, t) = l.split_once(' ').unwrap();
            edges.push((t.parse().unwrap(), if what == "s" { 1 } else { -1 }));
        }
    }
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    assert!(peak <= 2, "{peak} agents ran at once");
    assert_eq!(peak, 2, "both slots were used");
    let t = task(&app, &ws, &ids[0]).await;
    assert_eq!(t["result"]["exit_code"], 0);
    assert!(
        t["result"]["output"].as_str().unwrap().contains("done"),
        "{t}"
    );
    println!("daemon: tasks 8, peak concurrency {peak} of 2, lost 0, duplicates 0");
}

#[tokio::test]
async fn a_failing_agent_fails_its_task_and_garbage_output_is_kept() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("failing");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec", "claude-code"])
        .env("PADDOCK_CLAUDE_BIN", fake_agent("claude"));
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    let claude = runtime_of(&app, &ws, &spec.daemon_id, "claude-code").await;
    let failing = agent(
        &app,
        &ws,
        &rt,
        1,
        exec("echo working; echo boom >&2; exit 3"),
    )
    .await;
    let id = enqueue(&app, &ws, &failing, json!({})).await;
    until_status(&app, &ws, &id, "failed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["failure_reason"], "agent_error");
    let error = t["error"].as_str().unwrap();
    assert!(error.contains('3') && error.contains("boom"), "{error}");
    let kinds: Vec<(String, String)> = messages(&app, &ws, &id)
        .await
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("stdout".into(), "working".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("stderr".into(), "boom".into())),
        "{kinds:?}"
    );

    // Garbage between the JSON lines is kept as system messages; the task still completes.
    let garbled = agent(&app, &ws, &claude, 1, json!({})).await;
    let g = enqueue(
        &app,
        &ws,
        &garbled,
        json!({ "payload": { "prompt": "GARBAGE please" } }),
    )
    .await;
    until_status(&app, &ws, &g, "completed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let system = messages(&app, &ws, &g)
        .await
        .iter()
        .filter(|m| m["kind"] == "system")
        .count();
    assert!(
        system >= 2,
        "garbage lines kept as system messages ({system})"
    );

    // NUL bytes (which PostgreSQL text cannot hold) in output and in the result do not cost a
    // report: they arrive as U+FFFD and the task completes.
    let nul = agent(
        &app,
        &ws,
        &rt,
        1,
        exec(r"printf 'a\000b\n'; printf 'last\000'"),
    )
    .await;
    let n = enqueue(&app, &ws, &nul, json!({})).await;
    until_status(&app, &ws, &n, "completed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let contents: Vec<String> = messages(&app, &ws, &n)
        .await
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(contents.contains(&"a\u{fffd}b".to_owned()), "{contents:?}");
    let output = task(&app, &ws, &n).await["result"]["output"].clone();
    assert!(
        output.as_str().is_some_and(|o| o.contains("last\u{fffd}")),
        "{output}"
    );
    println!("daemon: tasks 3, kills 0, lost 0, duplicates 0");
}

#[tokio::test]
async fn cancel_kills_the_process_group_within_kill_grace() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("cancel");
    let log = scratch.path("log");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec"]).env("TEST_LOG", &log);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    // The shell ignores SIGTERM, and so does its child (ignored signals are inherited): only the
    // SIGKILL after kill_grace (1 s) stops them.
    let script = r#"trap "" TERM; sleep 300 & echo "$$ $!" > "$TEST_LOG/$PADDOCK_TASK_ID"; wait"#;
    let agent = agent(&app, &ws, &rt, 1, exec(script)).await;
    let id = enqueue(&app, &ws, &agent, json!({})).await;
    until_status(&app, &ws, &id, "running", Duration::from_secs(20), || {
        daemon.logs()
    })
    .await;
    let pids: Vec<i32> = common::wait::eventually_some(
        Duration::from_secs(10),
        "the agent wrote its pids",
        || async {
            let s = std::fs::read_to_string(log.join(&id)).ok()?;
            let p: Vec<i32> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (p.len() == 2).then_some(p)
        },
    )
    .await;
    assert!(pids.iter().all(|&p| alive(p)));
    let t0 = Instant::now();
    let r = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), &ws.member, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "the agent and its child are gone",
        || async { pids.iter().all(|&p| !alive(p)) },
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "SIGTERM was ignored, so only SIGKILL after the grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "within kill_grace and a heartbeat: {took:?}"
    );
    // No further report of the attempt: the task stays cancelled, with no result.
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["status"], "cancelled");
    println!(
        "daemon: tasks 1, kills 1 (process group gone {took:?} after cancel), lost 0, duplicates 0"
    );
}

#[tokio::test]
async fn a_daemon_killed_mid_task_restarts_and_attempt_2_completes_exactly_once() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.retry_backoff_base = Duration::from_millis(1);
    })
    .await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("kill9");
    let log = scratch.path("log");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec"]).env("TEST_LOG", &log);
    let mut daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    // Attempt 1 hangs (and records its pid); attempt 2 finishes.
    let script = r#"if [ -e "$TEST_LOG/$PADDOCK_TASK_ID" ]; then echo second; else echo $$ > "$TEST_LOG/$PADDOCK_TASK_ID"; sleep 300; fi"#;
    let agent = agent(&app, &ws, &rt, 1, exec(script)).await;
    let id = enqueue(&app, &ws, &agent, json!({ "max_attempts": 2 })).await;
    until_status(&app, &ws, &id, "running", Duration::from_secs(20), || {
        daemon.logs()
    })
    .await;
    let orphan: i32 =
        common::wait::eventually_some(Duration::from_secs(10), "attempt 1 runs", || async {
            std::fs::read_to_string(log.join(&id))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .await;
    daemon.kill9().await;
    assert!(
        alive(orphan),
        "the agent outlives the daemon's SIGKILL (its own process group)"
    );
    let mut daemon = spec.start();
    until_status(&app, &ws, &id, "completed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the restarted daemon killed the orphan",
        || async { !alive(orphan) },
    )
    .await;
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["attempt"], 2);
    assert_eq!(t["attempts"][0]["failure_reason"], "agent_error");
    assert!(
        t["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("daemon restarted"),
        "{t}"
    );
    assert!(t["result"]["output"].as_str().unwrap().contains("second"));
    let completions = events_of(&app, "task.completed", &id).await;
    assert_eq!(completions, 1, "exactly one completion");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exited(Duration::from_secs(30)).await, Some(0));
    println!(
        "daemon: tasks 1, kills 1, lost 0, duplicates {}",
        completions - 1
    );
}

#[tokio::test]
async fn a_completion_during_a_server_outage_is_delivered_once_it_is_back() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("outage");
    let log = scratch.path("log");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec"]).env("TEST_LOG", &log);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    // The agent waits for the test's go (the server is down by then), then finishes.
    let script = r#"touch "$TEST_LOG/$PADDOCK_TASK_ID.running"; while [ ! -e "$TEST_LOG/go" ]; do sleep 0.05; done; echo finished"#;
    let agent = agent(&app, &ws, &rt, 1, exec(script)).await;
    let id = enqueue(&app, &ws, &agent, json!({})).await;
    until_status(&app, &ws, &id, "running", Duration::from_secs(20), || {
        daemon.logs()
    })
    .await;
    let (addr, settings) = (app.addr, app.settings.clone());
    let pool = app.pool.clone();
    app.stop().await.unwrap();
    std::fs::write(log.join("go"), "").unwrap();
    // The daemon journals the completion and retries while the server is down.
    eventually(
        Duration::from_secs(10),
        "the daemon tried to deliver it",
        || async { daemon.logs().contains("not delivered") },
    )
    .await;
    let app = TestApp::start_at(settings, addr).await;
    until_status(&app, &ws, &id, "completed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let completions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'task.completed' AND subject_id = $1",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(completions, 1);
    assert!(
        task(&app, &ws, &id).await["result"]["output"]
            .as_str()
            .unwrap()
            .contains("finished")
    );
    println!(
        "daemon: tasks 1, server restarts 1, lost 0, duplicates {}",
        completions - 1
    );
}

#[tokio::test]
async fn attempt_2_resumes_the_session_attempt_1_reported() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.retry_backoff_base = Duration::from_millis(1);
    })
    .await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("resume");
    let record = scratch.path("record");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["claude-code"])
        .env("PADDOCK_CLAUDE_BIN", fake_agent("claude"))
        .env("FAKE_AGENT_RECORD", &record);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "claude-code").await;
    let agent = agent(&app, &ws, &rt, 1, json!({})).await;
    let id = enqueue(
        &app,
        &ws,
        &agent,
        json!({ "max_attempts": 2, "payload": { "prompt": "FAIL now" } }),
    )
    .await;
    until_status(&app, &ws, &id, "failed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let t = task(&app, &ws, &id).await;
    assert_eq!(t["attempt"], 2, "{t}");
    let first = t["attempts"][0]["attempt_id"].as_str().unwrap().to_owned();
    let second = t["attempts"][1]["attempt_id"].as_str().unwrap().to_owned();
    let session: String =
        sqlx::query_scalar("SELECT session->>'id' FROM task_attempts WHERE attempt_id = $1")
            .bind(first.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let argv1 = std::fs::read_to_string(record.join(format!("{first}.argv"))).unwrap();
    assert!(
        !argv1.lines().any(|a| a == "--resume"),
        "attempt 1 starts afresh"
    );
    let argv2 = std::fs::read_to_string(record.join(format!("{second}.argv"))).unwrap();
    let args: Vec<&str> = argv2.lines().collect();
    let at = args
        .iter()
        .position(|a| *a == "--resume")
        .expect("attempt 2 resumes");
    assert_eq!(args[at + 1], session, "with attempt 1's session");
    println!("daemon: tasks 1, attempts 2, resumed session {session}, lost 0, duplicates 0");
}

#[tokio::test]
async fn sigterm_drains_running_attempts_then_deregisters_and_exits_0() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("drain");
    let log = scratch.path("log");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["exec"]).env("TEST_LOG", &log);
    let mut daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "exec").await;
    let script = r#"touch "$TEST_LOG/$PADDOCK_TASK_ID"; sleep 1; echo drained"#;
    let agent = agent(&app, &ws, &rt, 1, exec(script)).await;
    let id = enqueue(&app, &ws, &agent, json!({})).await;
    eventually(Duration::from_secs(20), "the agent runs", || async {
        log.join(&id).exists()
    })
    .await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.exited(Duration::from_secs(30)).await,
        Some(0),
        "{}",
        daemon.logs()
    );
    let t = task(&app, &ws, &id).await;
    assert_eq!(
        t["status"], "completed",
        "the running attempt finished: {t}"
    );
    assert_eq!(
        common::api::runtime_status(&app, &ws, &rt).await,
        "offline",
        "deregistered"
    );
    let mut counts = HashMap::new();
    for kind in ["task.completed", "task.failed"] {
        counts.insert(kind, events_of(&app, kind, &id).await);
    }
    assert_eq!(counts["task.completed"], 1);
    assert_eq!(counts["task.failed"], 0);
    println!("daemon: tasks 1, drained 1, lost 0, duplicates 0");
}

#[tokio::test]
async fn codex_tasks_complete_with_transcript_and_usage() {
    let app = TestApp::spawn_with(fast).await;
    let ws = app.workspace().await;
    let scratch = Scratch::new("codex");
    let record = scratch.path("record");
    let spec = DaemonSpec::new(&app, &ws, &scratch, &["codex"])
        .env("PADDOCK_CODEX_BIN", fake_agent("codex"))
        .env("FAKE_AGENT_RECORD", &record);
    let daemon = spec.start();
    let rt = runtime_of(&app, &ws, &spec.daemon_id, "codex").await;
    let agent = agent(&app, &ws, &rt, 1, json!({ "model": "gpt-5" })).await;
    let id = enqueue(
        &app,
        &ws,
        &agent,
        json!({ "payload": { "prompt": "RECONNECT then work" } }),
    )
    .await;
    until_status(&app, &ws, &id, "completed", Duration::from_secs(30), || {
        daemon.logs()
    })
    .await;
    let t = task(&app, &ws, &id).await;
    assert!(t["usage"]["input_tokens"].as_i64().unwrap() > 0, "{t}");
    assert!(
        t["result"]["text"].as_str().is_some_and(|s| !s.is_empty()),
        "{t}"
    );
    let kinds: Vec<String> = messages(&app, &ws, &id)
        .await
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.iter().any(|k| k == "text"), "{kinds:?}");
    assert!(
        kinds.iter().any(|k| k == "error"),
        "the reconnect notices are kept: {kinds:?}"
    );
    let attempt = t["attempt_id"].as_str().unwrap();
    let argv = std::fs::read_to_string(record.join(format!("{attempt}.argv"))).unwrap();
    for a in ["exec", "--json", "--skip-git-repo-check", "-m", "gpt-5"] {
        assert!(argv.lines().any(|l| l == a), "{a} in {argv}");
    }
    println!("daemon: tasks 1, kills 0, lost 0, duplicates 0");
}
