//! The two WebSockets with resume. [`Client::events`] yields the workspace's events in log order
//! (`GET /api/v1/ws`); [`Client::transcript`] a task's transcript and then its `end`
//! (`GET /api/v1/tasks/{id}/messages/ws`). When a socket closes early (the server drops a slow
//! reader with 1013, a replica restarts, the network breaks), the stream reconnects after the last
//! frame it yielded (`?after=<id>`, `?cursor=<attempt>:<seq>`), so that nothing is missed or
//! repeated.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use paddock_api::{Event, EventId, TaskId, TranscriptFrame};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{Client, Error, Result};

/// Frames as they come, resuming across reconnects. Dropping it closes the socket.
pub struct FrameStream<F> {
    rx: mpsc::Receiver<Result<F>>,
    task: tokio::task::JoinHandle<()>,
}

/// The workspace's events ([`Client::events`]).
pub type EventStream = FrameStream<Event>;
/// A task's transcript ([`Client::transcript`]).
pub type TranscriptStream = FrameStream<TranscriptFrame>;

impl<F> FrameStream<F> {
    /// The next frame; `None` once the stream ended or gave up.
    pub async fn next(&mut self) -> Option<Result<F>> {
        self.rx.recv().await
    }
}

impl<F> Drop for FrameStream<F> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A frame of a followed stream: where to resume after it, and whether it is the last.
pub trait Followed: DeserializeOwned + Send + 'static {
    /// The query parameter that resumes after this frame.
    fn resume(&self) -> Option<(&'static str, String)>;
    fn is_last(&self) -> bool {
        false
    }
}

impl Followed for Event {
    fn resume(&self) -> Option<(&'static str, String)> {
        Some(("after", self.id.to_string()))
    }
}

impl Followed for TranscriptFrame {
    fn resume(&self) -> Option<(&'static str, String)> {
        match self {
            TranscriptFrame::Message(m) => Some(("cursor", format!("{}:{}", m.attempt, m.seq))),
            TranscriptFrame::End { .. } => None,
        }
    }

    fn is_last(&self) -> bool {
        matches!(self, TranscriptFrame::End { .. })
    }
}

/// Consecutive failed connection attempts after which the stream reports the error and ends.
const GIVE_UP_AFTER: u32 = 8;

impl Client {
    /// The workspace's events after `after` (or from now on), live, resuming on reconnect. A
    /// refusal (401, 403) ends the stream with that error.
    pub fn events(&self, after: Option<EventId>) -> EventStream {
        let start = after.map(|a| ("after", a.to_string()));
        self.follow("api/v1/ws".into(), Vec::new(), start)
    }

    /// A task's transcript: the stored messages (of one `attempt`, or across attempts), then each
    /// new one as it commits, then `end` once the task is terminal; resuming by cursor.
    pub fn transcript(
        &self,
        task: TaskId,
        attempt: Option<i32>,
        cursor: Option<String>,
    ) -> TranscriptStream {
        let fixed: Vec<(&'static str, String)> = attempt
            .map(|a| ("attempt", a.to_string()))
            .into_iter()
            .collect();
        let start = cursor.map(|c| ("cursor", c));
        self.follow(format!("api/v1/tasks/{task}/messages/ws"), fixed, start)
    }

    fn follow<F: Followed>(
        &self,
        path: String,
        fixed: Vec<(&'static str, String)>,
        start: Option<(&'static str, String)>,
    ) -> FrameStream<F> {
        let (tx, rx) = mpsc::channel(256);
        let stream = Stream {
            client: self.clone(),
            path,
            fixed,
        };
        let task = tokio::spawn(async move { stream.pump(start, tx).await });
        FrameStream { rx, task }
    }
}

/// Where a stream resumes: a query parameter and its value.
type Resume = Option<(&'static str, String)>;

/// One followed WebSocket: its path and the query every connection carries.
struct Stream {
    client: Client,
    path: String,
    fixed: Vec<(&'static str, String)>,
}

impl Stream {
    fn url(&self, resume: &Resume) -> Result<url::Url> {
        let mut url = self.client.url(&self.path)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| Error::Url(url::ParseError::RelativeUrlWithCannotBeABaseBase))?;
        if !self.fixed.is_empty() || resume.is_some() {
            let mut q = url.query_pairs_mut();
            for (k, v) in self.fixed.iter().chain(resume) {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn pump<F: Followed>(self, mut resume: Resume, tx: mpsc::Sender<Result<F>>) {
        let mut failures = 0u32;
        loop {
            match self.session(&mut resume, &tx).await {
                Ok(Ended::Receiver | Ended::Last) => return,
                Ok(Ended::Socket) => failures = 0,
                Err(e) if !e.is_transient() || failures + 1 >= GIVE_UP_AFTER => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(error = %e, failures, "socket failed; reconnecting");
                }
            }
            let pause = self.client.retry.pause(failures.max(1)) + Duration::from_millis(10);
            tokio::time::sleep(pause).await;
        }
    }

    async fn session<F: Followed>(
        &self,
        resume: &mut Resume,
        tx: &mpsc::Sender<Result<F>>,
    ) -> Result<Ended> {
        let mut req = self.url(resume)?.as_str().into_client_request()?;
        let auth = format!("Bearer {}", self.client.token)
            .parse()
            .map_err(|_| Error::Status {
                status: 0,
                body: "the token is not a valid header value".into(),
            })?;
        req.headers_mut().insert("authorization", auth);
        let (mut socket, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(refusal)?;
        while let Some(msg) = socket.next().await {
            match msg? {
                Message::Text(text) => {
                    let frame: F = crate::decode("a frame", text.as_bytes())?;
                    if let Some(r) = frame.resume() {
                        *resume = Some(r);
                    }
                    let last = frame.is_last();
                    if tx.send(Ok(frame)).await.is_err() {
                        let _ = socket.close(None).await;
                        return Ok(Ended::Receiver);
                    }
                    if last {
                        let _ = socket.close(None).await;
                        return Ok(Ended::Last);
                    }
                }
                Message::Ping(p) => socket.send(Message::Pong(p)).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(Ended::Socket)
    }
}

enum Ended {
    /// The socket closed; reconnect.
    Socket,
    /// The stream's last frame came (a transcript's `end`).
    Last,
    /// Nobody listens any more.
    Receiver,
}

/// An HTTP refusal of the upgrade (401, 403) is final; anything else may be retried.
fn refusal(e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as W;
    match e {
        W::Http(res) => {
            let status = res.status().as_u16();
            let body = res
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match serde_json::from_str(&body) {
                Ok(problem) => Error::Api {
                    status,
                    problem,
                    retry_after: None,
                },
                Err(_) => Error::Status { status, body },
            }
        }
        other => Error::WebSocket(other),
    }
}
