//! Prometheus metrics: the process-wide recorder, the HTTP metrics layer (labelled by route template,
//! never the raw path), and business gauges sampled from Postgres at scrape time.
//!
//! Business gauges are read through a small dedicated pool with a short statement timeout and cached
//! for a few seconds, with one query per gauge family (not one per workspace), over active rows only.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::state::AppState;

/// Latency buckets in seconds: 1 ms … 30 s (long polls last up to 30 s).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const GAUGE_CACHE: Duration = Duration::from_secs(5);

/// The process-wide Prometheus handle (several servers in one process, as in tests, share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("valid buckets")
            .set_buckets_for_metric(
                Matcher::Full("paddock_claim_tasks".into()),
                &[0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0],
            )
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first (then ours just renders nothing).
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "paddock_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "paddock_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_counter!("paddock_heartbeats_total", "Runtime heartbeats received");
    describe_counter!(
        "paddock_claim_deadlocks_total",
        "Claims retried after PostgreSQL broke a lock cycle between concurrency keys"
    );
    describe_counter!(
        "paddock_claims_total",
        "Claim requests answered, by outcome"
    );
    describe_histogram!("paddock_claim_tasks", "Tasks handed out per claim");
    describe_counter!(
        "paddock_long_poll_wakeups_total",
        "Long-poll claims that waited and then got tasks"
    );
    describe_counter!(
        "paddock_reports_total",
        "Daemon reports by action and outcome (ok or error code)"
    );
    describe_gauge!(
        "paddock_reports_waiting",
        "Batch reports waiting for a report writer"
    );
    describe_histogram!(
        "paddock_report_group_size",
        "Batch reports applied together in one transaction (groups of two or more)"
    );
    describe_counter!(
        "paddock_report_handoffs_total",
        "Batch reports that waited report_lock_wait for a lock and left the report writers"
    );
    describe_histogram!(
        "paddock_sweep_duration_seconds",
        Unit::Seconds,
        "Duration of one sweep"
    );
    describe_counter!("paddock_sweep_rows_total", "Rows changed by sweeps");
    describe_counter!("paddock_sweep_errors_total", "Sweeps that failed");
    describe_gauge!(
        "paddock_sweeper_leader",
        "1 on the replica that runs the sweepers, else 0"
    );
    describe_counter!(
        "paddock_liveness_errors_total",
        "Liveness store errors by operation"
    );
    describe_counter!(
        "paddock_liveness_fallbacks_total",
        "Times Postgres was used because the liveness store failed"
    );
    describe_gauge!("paddock_websocket_connections", "Open WebSocket sessions");
    describe_counter!(
        "paddock_websocket_dropped_total",
        "WebSocket sessions closed for being too slow (reason: lagged, timeout, budget)"
    );
    describe_counter!(
        "paddock_websocket_refused_total",
        "WebSocket upgrades refused by the per-token or per-workspace cap"
    );
    describe_gauge!(
        "paddock_websocket_queued_bytes",
        Unit::Bytes,
        "Bytes of frames queued for WebSocket peers that have not taken them (the send budget)"
    );
    describe_gauge!("paddock_http_connections", "Open client connections");
    describe_gauge!(
        "paddock_breaker_open",
        "1 while the store is unreachable and calls to it fail fast"
    );
    describe_counter!(
        "paddock_http_connections_refused_total",
        "Connections answered 503 over max_connections"
    );
    describe_counter!(
        "paddock_http_connections_timed_out_total",
        "Connections closed by the header read or keep-alive idle timeout (reason)"
    );
    describe_counter!(
        "paddock_http_accept_errors_total",
        "Failed accepts (out of descriptors or memory)"
    );
}

/// Records count and latency of every request by method, route template and status.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("paddock_http_requests_total", &labels).increment(1);
    metrics::histogram!("paddock_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Samples business gauges from Postgres, cached for `GAUGE_CACHE`.
pub struct Gauges {
    pool: PgPool,
    cache: Mutex<Option<(Instant, String)>>,
}

impl Gauges {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(None),
        }
    }

    async fn render(&self) -> String {
        let mut cache = self.cache.lock().await;
        if let Some((at, text)) = cache.as_ref()
            && at.elapsed() < GAUGE_CACHE
        {
            return text.clone();
        }
        let text = match self.sample().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "could not sample business gauges");
                "# business gauges unavailable: database did not answer\n".to_owned()
            }
        };
        *cache = Some((Instant::now(), text.clone()));
        text
    }

    async fn sample(&self) -> anyhow::Result<String> {
        use std::fmt::Write;
        let mut tx = crate::db::begin(&self.pool).await?;
        sqlx::query("SET LOCAL statement_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        let runtimes: Vec<(uuid::Uuid, String, String, i64)> = sqlx::query_as(
            "SELECT workspace_id, status, provider, count(*) FROM runtimes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .fetch_all(&mut *tx)
        .await?;
        // Active statuses only: the partial indexes keep this flat in history.
        let tasks: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(
            "SELECT workspace_id, status, count(*) FROM tasks \
             WHERE status IN ('queued', 'dispatched', 'running') GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .fetch_all(&mut *tx)
        .await?;
        let oldest: Vec<(uuid::Uuid, f64)> = sqlx::query_as(
            "SELECT workspace_id, extract(epoch FROM now() - min(enqueued_at))::float8 FROM tasks \
             WHERE status = 'queued' GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = String::new();
        writeln!(
            out,
            "# HELP paddock_runtimes Runtimes by workspace, status and provider"
        )?;
        writeln!(out, "# TYPE paddock_runtimes gauge")?;
        for (ws, status, provider, n) in runtimes {
            writeln!(
                out,
                "paddock_runtimes{{workspace=\"{ws}\",status=\"{}\",provider=\"{}\"}} {n}",
                escape(&status),
                escape(&provider)
            )?;
        }
        writeln!(
            out,
            "# HELP paddock_tasks Active tasks by workspace and status"
        )?;
        writeln!(out, "# TYPE paddock_tasks gauge")?;
        for (ws, status, n) in tasks {
            writeln!(
                out,
                "paddock_tasks{{workspace=\"{ws}\",status=\"{}\"}} {n}",
                escape(&status)
            )?;
        }
        writeln!(
            out,
            "# HELP paddock_oldest_queued_age_seconds Age of the oldest queued task by workspace"
        )?;
        writeln!(out, "# TYPE paddock_oldest_queued_age_seconds gauge")?;
        for (ws, age) in oldest {
            writeln!(
                out,
                "paddock_oldest_queued_age_seconds{{workspace=\"{ws}\"}} {age}"
            )?;
        }
        Ok(out)
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    let handle = handle();
    handle.run_upkeep();
    let mut body = handle.render();
    body.push_str(&state.gauges.render().await);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
