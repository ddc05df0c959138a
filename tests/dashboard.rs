//! The dashboard in headless Chromium: a task enqueued through the API appears on the page live,
//! without a reload. The screenshot goes to target/dashboard.png (not in git).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::TestApp;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_task_appears_on_the_dashboard_without_reload() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "laptop").await;
    let agent = app.agent(&ws, &rt, 1).await;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shot = dir.join("target").join("dashboard.png");
    let mut child = Command::new("node")
        .arg(dir.join("tests/browser/dashboard.mjs"))
        .args([
            app.base.as_str(),
            ws.member.as_str(),
            shot.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the dashboard test; ./test.sh installs its dependencies");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert_eq!(
        ready
            .expect("browser did not get ready")
            .unwrap()
            .as_deref(),
        Some("READY"),
        "run `npm install` in tests/browser and install chromium (./test.sh does both)"
    );
    app.enqueue(
        &ws,
        &agent,
        json!({ "payload": { "from": "dashboard test" } }),
    )
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert_eq!(
        seen.expect("event did not appear").unwrap().as_deref(),
        Some("SEEN")
    );
    let status = child.wait().await.unwrap();
    assert!(status.success(), "browser script failed: {status}");
    assert!(shot.exists());
}
