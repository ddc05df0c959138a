//! A typed async client for Paddock's API (DESIGN §14): every endpoint, the long-poll claim, the
//! event WebSocket with resume, retries with jittered backoff for the calls that are safe to
//! repeat, and errors that carry the problem `code`.
//!
//! ```no_run
//! use paddock_client::{Client, api};
//!
//! # async fn demo(agent: api::AgentId) -> paddock_client::Result<()> {
//! let member = Client::new("http://127.0.0.1:8080", "pdk_…")?;
//! let payload = serde_json::json!({ "prompt": "review PR 42" });
//! let task = member
//!     .enqueue(&api::CreateTask::new(agent, payload.as_object().unwrap().clone()))
//!     .await?
//!     .value;
//! let mut events = member.events(None);
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     if event.subject_id == task.id.0 && event.kind == api::EventType::TaskCompleted {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! One `Client` holds one token; it is cheap to clone (the connection pool is shared).

mod calls;
mod error;
mod retry;
mod ws;

use std::borrow::Cow;
use std::time::Duration;

pub use paddock_api as api;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use calls::{MessageQuery, PageQuery, TaskQuery};
pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use ws::{EventStream, FrameStream, TranscriptStream};

/// What a create-or-return call answered: `created` is false when the resource existed already
/// (registration of a known runtime, an enqueue with a used idempotency key).
#[derive(Debug, Clone)]
pub struct Created<T> {
    pub value: T,
    pub created: bool,
}

/// A client for one server and one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: String,
    retry: RetryPolicy,
    timeout: Duration,
}

/// Whether a call may be repeated after a transient failure (see [`RetryPolicy`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Never,
}

impl Client {
    /// A client for the server at `base` (`http://host:8080`, without `/api/v1`).
    pub fn new(base: &str, token: impl Into<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Self::with_http(http, base, token)
    }

    /// A client sharing an existing `reqwest::Client` (and its connection pool).
    pub fn with_http(http: reqwest::Client, base: &str, token: impl Into<String>) -> Result<Self> {
        let mut base = url::Url::parse(base)?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http,
            base,
            token: token.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// The same server and connection pool with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            ..self.clone()
        }
    }

    /// Retries of the calls that are safe to repeat (default: 4 tries, 100 ms doubling to 5 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Time limit of one request (default 30 s; a long-poll claim adds its `wait_ms`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        Ok(self.base.join(path.trim_start_matches('/'))?)
    }

    /// Sends a request, retrying it when it is safe to and the failure is transient; returns the
    /// status and body of a 2xx or 304 answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(dyn erased::Body + Sync)>,
        extra: RequestExtra<'_>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes)> {
        let url = self.url(path)?;
        let tries = match extra.repeat {
            Repeat::Safe => self.retry.attempts.max(1),
            Repeat::Never => 1,
        };
        let mut n = 0;
        loop {
            n += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.token)
                .timeout(self.timeout + extra.longer);
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_json()?);
            }
            for (k, v) in extra.headers {
                req = req.header(*k, v.as_ref());
            }
            let res = match req.send().await {
                Ok(res) => read(res, path).await,
                Err(e) => Err(Error::Transport(e)),
            };
            match res {
                Err(e) if n < tries && e.is_transient() => {
                    let pause = retry_after(&e).unwrap_or_else(|| self.retry.pause(n));
                    tracing::debug!(error = %e, ?pause, path, "retrying");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(dyn erased::Body + Sync)>,
        repeat: Repeat,
    ) -> Result<(StatusCode, T)> {
        let extra = RequestExtra {
            repeat,
            ..Default::default()
        };
        self.call_with(method, path, body, extra).await
    }

    /// [`Client::call`] with a timeout or headers of its own.
    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(dyn erased::Body + Sync)>,
        extra: RequestExtra<'_>,
    ) -> Result<(StatusCode, T)> {
        let (status, _, bytes) = self.send(method, path, body, extra).await?;
        Ok((status, decode(path, &bytes)?))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.call(Method::GET, path, None, Repeat::Safe).await?.1)
    }

    async fn post<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        repeat: Repeat,
    ) -> Result<T> {
        Ok(self
            .call(Method::POST, path, Some(&erased::Json(body)), repeat)
            .await?
            .1)
    }
}

/// Per-request additions to [`Client::send`].
struct RequestExtra<'a> {
    repeat: Repeat,
    /// Added to the client's timeout (a long poll waits that much longer).
    longer: Duration,
    headers: &'a [(&'static str, Cow<'a, str>)],
}

impl Default for RequestExtra<'_> {
    fn default() -> Self {
        Self {
            repeat: Repeat::Never,
            longer: Duration::ZERO,
            headers: &[],
        }
    }
}

/// A 2xx or 304 answer's parts; any other answer is an error (a problem when it carries one).
async fn read(
    res: reqwest::Response,
    path: &str,
) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes)> {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await?;
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok((status, headers, bytes));
    }
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let _ = path;
    match serde_json::from_slice::<paddock_api::Problem>(&bytes) {
        Ok(problem) => Err(Error::Api {
            status: status.as_u16(),
            problem,
            retry_after: retry_after.map(Duration::from_secs),
        }),
        Err(_) => Err(Error::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }),
    }
}

/// How long the server asked to wait (`Retry-After` of a 429 or 503).
fn retry_after(e: &Error) -> Option<Duration> {
    match e {
        Error::Api { retry_after, .. } => *retry_after,
        _ => None,
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        what: what.to_owned(),
        source,
    })
}

/// Request bodies behind a trait object, so `send` is not generic over them.
mod erased {
    use serde::Serialize;

    pub trait Body {
        fn to_json(&self) -> Result<Vec<u8>, super::Error>;
    }

    pub struct Json<'a, T>(pub &'a T);

    impl<T: Serialize> Body for Json<'_, T> {
        fn to_json(&self) -> Result<Vec<u8>, super::Error> {
            serde_json::to_vec(self.0).map_err(|source| super::Error::Decode {
                what: "request body".into(),
                source,
            })
        }
    }
}
