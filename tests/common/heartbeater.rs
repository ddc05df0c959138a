//! A simulated daemon that heartbeats in the background (load, not synchronisation).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::json::s;
use super::{TestApp, Ws};

/// A daemon heartbeating some runtimes every `every` in a spawned task (load, not synchronisation).
/// `stop` returns every reply (HTTP status, statuses of the runtimes, latency).
pub struct Heartbeater {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Vec<Beat>>>,
}

/// One heartbeat and its reply.
#[derive(Debug)]
pub struct Beat {
    /// The HTTP status (0 when the request failed).
    pub code: u16,
    /// The `status` of each runtime in the reply, in order; the whole body (or the error) instead
    /// when the reply has no `runtimes` list, so that it never passes for "all online".
    pub statuses: Vec<String>,
    /// How long the reply took.
    pub took: Duration,
}

impl Heartbeater {
    /// Reply-driven: the next heartbeat goes `every` after the previous reply.
    pub fn start(app: &TestApp, ws: &Ws, ids: &[&str], every: Duration) -> Self {
        Self::spawn(app, ws, ids, every, false)
    }

    /// Timer-driven: a heartbeat every `every` whether or not the previous one has answered.
    pub fn on_timer(app: &TestApp, ws: &Ws, ids: &[&str], every: Duration) -> Self {
        Self::spawn(app, ws, ids, every, true)
    }

    /// Reply-driven, listing the attempts in `attempts` (as they are at each heartbeat) for the
    /// runtimes: a reconciling daemon (DESIGN §10).
    pub fn listing(
        app: &TestApp,
        ws: &Ws,
        ids: &[&str],
        attempts: Arc<Mutex<Vec<String>>>,
        every: Duration,
    ) -> Self {
        Self::spawn_with(app, ws, ids, Some(attempts), every, false)
    }

    fn spawn(app: &TestApp, ws: &Ws, ids: &[&str], every: Duration, on_timer: bool) -> Self {
        Self::spawn_with(app, ws, ids, None, every, on_timer)
    }

    fn spawn_with(
        app: &TestApp,
        ws: &Ws,
        ids: &[&str],
        attempts: Option<Arc<Mutex<Vec<String>>>>,
        every: Duration,
        on_timer: bool,
    ) -> Self {
        let stop = CancellationToken::new();
        let (http, url, token) = (
            app.http.clone(),
            format!("{}/api/v1/daemon/heartbeat", app.base),
            ws.daemon.clone(),
        );
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let one = move || {
            let body = match &attempts {
                Some(a) => json!({ "runtime_ids": ids, "attempts": *a.lock().unwrap() }),
                None => json!({ "runtime_ids": ids }),
            };
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let t0 = Instant::now();
                let res = http.post(&url).bearer_auth(&token).json(&body).send().await;
                let (code, statuses) = match res {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        let statuses = v["runtimes"]
                            .as_array()
                            .map(|a| a.iter().map(|x| s(&x["status"])).collect())
                            .unwrap_or_else(|| vec![v.to_string()]);
                        (code, statuses)
                    }
                    Err(e) => (0, vec![e.to_string()]),
                };
                Beat {
                    code,
                    statuses,
                    took: t0.elapsed(),
                }
            }
        };
        let cancelled = stop.clone();
        let handle = tokio::spawn(async move {
            let mut beats = Vec::new();
            let mut in_flight = Vec::new();
            loop {
                if on_timer {
                    in_flight.push(tokio::spawn(one()));
                } else {
                    beats.push(one().await);
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = cancelled.cancelled() => break,
                }
            }
            for h in in_flight {
                beats.push(h.await.expect("heartbeat"));
            }
            beats
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the loop; returns every reply, in the order the heartbeats were sent.
    pub async fn stop(mut self) -> Vec<Beat> {
        self.stop.cancel();
        let handle = self.handle.take().expect("running");
        handle.await.expect("heartbeat loop")
    }
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Asserts that there was at least one heartbeat and that every one answered 200 with every
/// runtime `online`.
pub fn assert_all_online(beats: &[Beat]) {
    assert!(!beats.is_empty(), "no heartbeat was sent");
    for (i, b) in beats.iter().enumerate() {
        assert!(
            b.code == 200 && b.statuses.iter().all(|x| x == "online"),
            "heartbeat {i} of {}: {b:?}",
            beats.len()
        );
    }
}
