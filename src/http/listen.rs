//! The listener: accepts TCP connections and serves HTTP/1.1 on them with hyper, with the bounds
//! `axum::serve` does not set.
//!
//! - **Header read timeout**: a connection that has sent part of a request header must finish it
//!   within `header_read_timeout`, counted from the first byte (slowloris).
//! - **Keep-alive idle timeout**: a connection with no request in flight and no traffic for
//!   `keepalive_timeout` is closed. A request in flight (a long poll) and an upgraded connection (a
//!   WebSocket) are not idle: they keep their own bounds.
//! - **Connection cap**: past `max_connections` open connections, a new one is answered 503 and
//!   closed at once — a refusal the client can read, where running out of descriptors would be an
//!   outage for everyone.
//! - **Lingering close**: when the server closes a connection it has answered (a 413 sent before the
//!   body was read), it first reads and discards what the client is still sending, up to a bound, as
//!   nginx's `lingering_close` does. Closing a socket with unread data makes the kernel send a reset,
//!   and a client still writing its body would lose the answer.
//!
//! The request-body timeout is in the JSON extractor (`http::extract`), where it can answer 408.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Settings;
use crate::http::error::ApiError;

/// What a closing connection reads and discards at most before it closes.
const LINGER_BYTES: usize = 4 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The bounds of `serve`, from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The settings' bounds, the connection cap lowered to what the open-file limit allows (raised
    /// first to its hard limit where the OS lets a process do so).
    pub fn from_settings(s: &Settings) -> Self {
        let mut max_connections = s.max_connections;
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(nofile) => {
                // Descriptors for the Postgres pool, Redis, the embedded cluster's pipes, logs.
                let spare = nofile.saturating_sub(256).max(16);
                let allowed = usize::try_from(spare).unwrap_or(usize::MAX);
                if allowed < max_connections {
                    // A setting someone chose is worth a warning; the default, a note.
                    if max_connections == crate::config::DEFAULT_MAX_CONNECTIONS {
                        tracing::info!(
                            max_connections = allowed,
                            open_file_limit = nofile,
                            "max_connections set to what the open-file limit allows"
                        );
                    } else {
                        tracing::warn!(
                            max_connections,
                            open_file_limit = nofile,
                            "max_connections lowered to what the open-file limit allows \
                             (raise the hard limit, `ulimit -Hn`, to hold more)"
                        );
                    }
                    max_connections = allowed;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read or raise the open-file limit"),
        }
        Limits {
            header_read_timeout: s.header_read_timeout,
            keepalive_timeout: s.keepalive_timeout,
            max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests finish
/// (for at most `grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: wait for some to be freed.
                tracing::error!(error = %e, "accept failed");
                metrics::counter!("paddock_http_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("paddock_http_connections_refused_total").increment(1);
            conns.spawn(refuse(tcp));
            continue;
        };
        conns.spawn(connection(
            tcp,
            permit,
            app.clone(),
            limits,
            shutdown.clone(),
        ));
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!(
            open = conns.len(),
            "connections still open after the shutdown grace; closing them"
        );
    }
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap: 503 problem+json, then a lingering close.
async fn refuse(mut tcp: TcpStream) {
    let problem = ApiError::Unavailable("too many open connections; retry later".into()).problem();
    let body = serde_json::to_string(&problem).expect("a problem serializes");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await
    };
    if tokio::time::timeout(LINGER_TIME, write).await.is_ok() {
        linger(tcp, 64 << 10).await;
    }
}

/// Reads and discards what the peer still sends (up to `bound` bytes, for up to `LINGER_TIME`),
/// so closing does not reset the connection under an answer the peer has not read yet.
async fn linger(mut tcp: TcpStream, bound: usize) {
    let drain = async {
        let mut buf = vec![0u8; 16 << 10];
        let mut read = 0;
        while read < bound {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

async fn connection(
    tcp: TcpStream,
    permit: OwnedSemaphorePermit,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    metrics::gauge!("paddock_http_connections").increment(1.0);
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        tcp: Some(tcp),
        watch: watch.clone(),
        shut: false,
        _permit: permit,
    });
    let svc_watch = watch.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let watch = svc_watch.clone();
        async move {
            let _in_flight = watch.begin();
            let res = app.oneshot(req.map(Body::new)).await;
            if let Ok(r) = &res
                && r.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                watch.upgraded.store(true, Ordering::Relaxed);
            }
            res
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // The timeouts are the watchdog's (hyper's own header timer would also close kept-alive
        // connections between requests, so idle and header bounds could not differ).
        .header_read_timeout(None)
        .serve_connection(io, svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            why = watch.expired(limits) => {
                metrics::counter!("paddock_http_connections_timed_out_total", "reason" => why)
                    .increment(1);
                break;
            }
        }
    }
    metrics::gauge!("paddock_http_connections").decrement(1.0);
}

/// What the watchdog knows of one connection. The socket only counts its traffic (relaxed atomics,
/// no clock reads on the I/O path); the watchdog reads the clock once a tick.
struct Watch {
    in_flight: AtomicUsize,
    upgraded: AtomicBool,
    /// Reads and writes so far (and request ends): changes mean the connection is not idle.
    activity: AtomicU64,
    /// Bytes arrived while no request was in flight: a request header has begun.
    header_begun: AtomicBool,
}

impl Watch {
    fn new() -> Self {
        Watch {
            in_flight: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            header_begun: AtomicBool::new(false),
        }
    }

    fn active(&self, read: bool) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        if read
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.header_begun.load(Ordering::Relaxed)
        {
            self.header_begun.store(true, Ordering::Relaxed);
        }
    }

    /// A request's header has been read: it is in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.header_begun.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves when the connection has broken a bound: "header" or "idle". Never for a connection
    /// with a request in flight, nor once it is upgraded. Its resolution is one tick (a quarter of
    /// the smaller bound, at most 1 s).
    async fn expired(&self, limits: Limits) -> &'static str {
        let (header, idle) = (limits.header_read_timeout, limits.keepalive_timeout);
        let tick = (header.min(idle) / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut seen = self.activity.load(Ordering::Relaxed);
        let mut changed = Instant::now();
        let mut header_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            if self.upgraded.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            let now = Instant::now();
            let count = self.activity.load(Ordering::Relaxed);
            if count != seen || self.in_flight.load(Ordering::Relaxed) > 0 {
                (seen, changed) = (count, now);
            }
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                header_since = None;
                continue;
            }
            if self.header_begun.load(Ordering::Relaxed) {
                // Counted from the tick that first saw it: up to one tick late, never early.
                let since = *header_since.get_or_insert(now);
                if now - since >= header {
                    return "header";
                }
            } else {
                header_since = None;
                if now - changed >= idle {
                    return "idle";
                }
            }
        }
    }
}

struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// The connection's socket, reporting its traffic to the watchdog; it holds the connection's
/// permit, so an upgraded connection counts until its WebSocket ends.
struct Watched {
    tcp: Option<TcpStream>,
    watch: Arc<Watch>,
    /// The server shut its side down: close with a linger.
    shut: bool,
    _permit: OwnedSemaphorePermit,
}

impl Watched {
    fn tcp(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.tcp.as_mut().expect("the socket is present until drop"))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = self.tcp().poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.active(true);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.tcp().poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.active(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.tcp().poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.active(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        self.tcp().poll_shutdown(cx)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.shut {
            return;
        }
        if let (Some(tcp), Ok(rt)) = (self.tcp.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(linger(tcp, LINGER_BYTES));
        }
    }
}
