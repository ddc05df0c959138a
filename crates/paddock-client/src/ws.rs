//! The event WebSocket (`GET /api/v1/ws`) with resume: [`EventStream`] yields the workspace's
//! events in log order and, when the socket closes (the server drops a slow reader with 1013, a
//! replica restarts, the network breaks), reconnects with `?after=<last id>` so that nothing is
//! missed or repeated.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use paddock_api::{Event, EventId};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{Client, Error, Result};

/// Events as they commit, resuming across reconnects. Dropping it closes the socket.
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// The next event; `None` once the stream has given up (see [`Client::events`]).
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Consecutive failed connection attempts after which the stream reports the error and ends.
const GIVE_UP_AFTER: u32 = 8;

impl Client {
    /// The workspace's events after `after` (or from now on), live, resuming on reconnect. A
    /// refusal (401, 403) ends the stream with that error.
    pub fn events(&self, after: Option<EventId>) -> EventStream {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        let task = tokio::spawn(async move { pump(client, after, tx).await });
        EventStream { rx, task }
    }

    fn ws_url(&self, path: &str, after: Option<EventId>) -> Result<url::Url> {
        let mut url = self.url(path)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| Error::Url(url::ParseError::RelativeUrlWithCannotBeABaseBase))?;
        if let Some(after) = after {
            url.query_pairs_mut()
                .append_pair("after", &after.to_string());
        }
        Ok(url)
    }
}

async fn pump(client: Client, mut after: Option<EventId>, tx: mpsc::Sender<Result<Event>>) {
    let mut failures = 0u32;
    loop {
        match session(&client, &mut after, &tx).await {
            Ok(Ended::Receiver) => return,
            Ok(Ended::Socket) => failures = 0,
            Err(e) if !e.is_transient() || failures + 1 >= GIVE_UP_AFTER => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "event socket failed; reconnecting");
            }
        }
        tokio::time::sleep(client.retry.pause(failures.max(1)) + Duration::from_millis(10)).await;
    }
}

enum Ended {
    /// The socket closed; reconnect.
    Socket,
    /// Nobody listens any more.
    Receiver,
}

async fn session(
    client: &Client,
    after: &mut Option<EventId>,
    tx: &mpsc::Sender<Result<Event>>,
) -> Result<Ended> {
    let url = client.ws_url("api/v1/ws", *after)?;
    let mut req = url.as_str().into_client_request()?;
    let auth = format!("Bearer {}", client.token)
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
                let event: Event = crate::decode("an event frame", text.as_bytes())?;
                *after = Some(event.id);
                if tx.send(Ok(event)).await.is_err() {
                    let _ = socket.close(None).await;
                    return Ok(Ended::Receiver);
                }
            }
            Message::Ping(p) => socket.send(Message::Pong(p)).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(Ended::Socket)
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
