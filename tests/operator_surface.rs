//! The operator surface: Prometheus metrics, SQL views and the read-only role, request ids.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestApp;
use common::api::heartbeat;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

#[tokio::test]
async fn metrics_scrape_is_valid_prometheus_text_labelled_by_route_template() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let task = app.enqueue(&ws, &agent, json!({})).await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/tasks/{id}"), &ws.member)
            .await
            .status,
        StatusCode::OK
    );
    heartbeat(&app, &ws, &[&rt]).await;

    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains(r#"route="/api/v1/tasks/{id}""#),
        "route template label missing:\n{text}"
    );
    assert!(
        !text.contains(id),
        "a raw path (with an id) leaked into the labels"
    );
    assert!(text.contains("paddock_http_request_duration_seconds_bucket"));
    assert!(text.contains("paddock_heartbeats_total"));
    assert!(
        text.contains(&format!(
            r#"paddock_tasks{{workspace="{}",status="queued"}} 1"#,
            ws.id
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        r#"paddock_runtimes{{workspace="{}",status="online",provider="claude-code"}} 1"#,
        ws.id
    )));
    assert!(text.contains("paddock_oldest_queued_age_seconds"));

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian: apt-get install prometheus); ./test.sh installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the scrape:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn readonly_role_reads_ops_views_but_not_token_digests() {
    let app = TestApp::spawn().await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "d1").await;
    let agent = app.agent(&ws, &rt, 1).await;
    app.enqueue(&ws, &agent, json!({})).await;

    let mut conn = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("SET ROLE paddock_readonly")
        .execute(&mut conn)
        .await
        .unwrap();
    for view in [
        "runtime_health",
        "queue_depth",
        "task_throughput",
        "stuck_tasks",
        "sweeper_runs",
        "attempts",
        "usage_daily",
    ] {
        sqlx::query(&format!("SELECT * FROM ops.{view}"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("ops.{view} unreadable: {e}"));
    }
    let depth: i64 =
        sqlx::query_scalar("SELECT tasks FROM ops.queue_depth WHERE status = 'queued'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(depth, 1);
    for secret in [
        "SELECT digest FROM tokens",
        "SELECT * FROM public.tokens",
        "SELECT * FROM tasks",
    ] {
        let err = sqlx::query(secret).fetch_all(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{secret}: {err}"
        );
    }
}

/// Every panel of the Grafana dashboard runs, as the read-only role it is provisioned with.
#[tokio::test]
async fn grafana_panels_run_as_the_readonly_role() {
    let app = TestApp::spawn().await;
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/grafana/paddock.json")).unwrap();
    let mut conn = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("SET ROLE paddock_readonly")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(sql) = target["rawSql"].as_str() else {
                continue;
            };
            // Grafana's macros, as it expands them for the last six hours.
            let sql = sql
                .replace("$__timeFilter(day)", "day > now() - interval '6 hours'")
                .replace(
                    "$__timeFilter(minute)",
                    "minute > now() - interval '6 hours'",
                );
            sqlx::query(&sql)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("panel {}: {e}\n{sql}", panel["title"]));
            panels += 1;
        }
    }
    assert!(panels >= 9, "{panels} panels ran");
}

#[tokio::test]
async fn request_id_is_propagated_or_generated() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID request id: {generated}");
}

#[tokio::test]
async fn dashboard_page_is_served_at_root() {
    let app = TestApp::spawn().await;
    let res = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = res.text().await.unwrap();
    // The page follows the event WebSocket (`/api/v1` + `/ws`).
    assert!(body.contains(r#"const api = "/api/v1""#) && body.contains(r#"wsUrl("/ws""#));
}
