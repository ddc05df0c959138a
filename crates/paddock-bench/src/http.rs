//! The bench's HTTP clients: [`Api`], JSON calls over a shared keep-alive pool for set-up, and
//! [`Conn`], one keep-alive connection driven by hyper directly for the hot loops.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON over HTTP/1.1 with keep-alive; one client is shared by every simulated daemon.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// Parsed once: each call only joins its path (the client's own cost counts against the server
    /// on this shared machine).
    base: reqwest::Url,
}

impl Api {
    pub fn new(base: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let base = reqwest::Url::parse(&base).context("bad server address")?;
        Ok(Self { http, base })
    }

    /// POSTs `body`; any status but 200/201 is an error carrying the answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let res = self
            .http
            .post(self.base.join(path)?)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path} failed"))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .with_context(|| format!("POST {path}: reading the answer"))?;
        if !status.is_success() {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "POST {path}: unexpected answer {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        let Ok(url) = self.base.join("/readyz") else {
            return false;
        };
        match self.http.get(url).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

/// One keep-alive HTTP/1.1 connection, as a daemon holds to its server, driven by hyper directly: a
/// hot loop over it costs the client little beyond the socket work (the client shares the machine
/// with the server it measures).
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: http::HeaderValue,
    auth: http::HeaderValue,
    /// Sent as `Prefer` with every call (`return=minimal`: batch answers without their tasks).
    prefer: Option<http::HeaderValue>,
}

impl Conn {
    pub async fn open(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            host: addr.to_string().parse()?,
            auth: format!("Bearer {token}").parse()?,
            prefer: None,
        })
    }

    /// Asks for minimal batch answers (`Prefer: return=minimal`: each result names its task by id
    /// instead of carrying it) when `on`.
    pub fn minimal(mut self, on: bool) -> Self {
        self.prefer = on.then(|| http::HeaderValue::from_static("return=minimal"));
        self
    }

    /// POSTs a JSON body; any status but 2xx is an error carrying the answer.
    pub async fn post(&mut self, path: &str, body: String) -> anyhow::Result<bytes::Bytes> {
        use http::header;
        use http_body_util::BodyExt;
        self.sender.ready().await?;
        let mut req = http::Request::post(path)
            .header(header::HOST, self.host.clone())
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(p) = &self.prefer {
            req = req.header("prefer", p.clone());
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(Refused {
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }
            .into());
        }
        Ok(bytes)
    }
}

/// A call [`Conn::post`] sent and the server answered with an error status.
#[derive(Debug)]
pub struct Refused {
    pub path: String,
    pub status: http::StatusCode,
    pub body: String,
}

impl Refused {
    /// Whether `e` is a call the server answered `503 Service Unavailable` (a daemon retries it).
    pub fn is_unavailable(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Self>()
            .is_some_and(|r| r.status == http::StatusCode::SERVICE_UNAVAILABLE)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "POST {} answered {}: {}",
            self.path, self.status, self.body
        )
    }
}

impl std::error::Error for Refused {}
