//! Redis liveness store: one key per runtime, `{prefix}:live:{workspace}:{runtime}`, with a TTL. Its
//! value is a [`Value`]: flags (`1` none, `c` a cancellation waits, `r` recheck the listing) and a
//! reconciling daemon's latest listing of its attempts. A heartbeat is one command,
//! `SET key <value> PX ttl GET`: the previous value tells whether the runtime was alive, whether a
//! cancellation waited and whether the listing changed, and the write clears the flags. Each call is one
//! pipelined round trip however many runtimes it covers, and heartbeats arriving together share
//! one: a batcher task sends whatever touches are waiting as a single pipeline (one write and one
//! read instead of one per heartbeat), so that Redis and the socket work grow with the round trips,
//! not with the heartbeats.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::{Listing, Touched, Value};
use crate::ids::{RuntimeId, WorkspaceId};

/// Longest a liveness call may take before the caller falls back to Postgres. The connection
/// manager's own timeouts do not bound a call that waits on its reconnect attempt.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

async fn bounded<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(anyhow::anyhow!(
            "redis did not answer within {CALL_TIMEOUT:?}"
        )),
    }
}

/// Most touches one pipeline carries; more wait for the next round trip.
const MAX_TOUCHES_PER_TRIP: usize = 512;

/// The value of a live key while a cancellation waits (set on an existing key; the listing goes
/// with it until the next heartbeat writes it again).
const CANCEL_WAITING: &str = "c";

struct TouchRequest {
    keys: Vec<String>,
    /// The value every key of the request gets.
    value: String,
    listing: Option<Listing>,
    ttl_ms: u64,
    reply: oneshot::Sender<anyhow::Result<Vec<Touched>>>,
}

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    touches: mpsc::UnboundedSender<TouchRequest>,
}

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        // Short timeouts: when Redis is down, heartbeats fall back to Postgres quickly instead of
        // waiting on a dead connection.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(1)
            .set_max_delay(200);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let (touches, rx) = mpsc::unbounded_channel();
        tokio::spawn(touch_batcher(conn.clone(), rx));
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            touches,
        })
    }

    fn live_key(&self, ws: WorkspaceId, id: RuntimeId) -> String {
        format!("{}:live:{}:{}", self.prefix, ws, id)
    }

    pub async fn touch(
        &self,
        ws: WorkspaceId,
        ids: &[RuntimeId],
        ttl: Duration,
        listing: Option<&Listing>,
    ) -> anyhow::Result<Vec<Touched>> {
        let (reply, answer) = oneshot::channel();
        let value = Value {
            listing: listing.cloned(),
            ..Value::default()
        };
        let request = TouchRequest {
            keys: ids.iter().map(|&id| self.live_key(ws, id)).collect(),
            value: value.encode(),
            listing: listing.cloned(),
            ttl_ms: ttl.as_millis() as u64,
            reply,
        };
        self.touches
            .send(request)
            .map_err(|_| anyhow::anyhow!("the redis touch batcher has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the redis touch batcher dropped a heartbeat"))?
    }

    pub async fn listings(
        &self,
        ids: &[(WorkspaceId, RuntimeId)],
    ) -> anyhow::Result<Vec<Option<Listing>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for &(ws, id) in ids {
            cmd.arg(self.live_key(ws, id));
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = bounded(cmd.query_async(&mut conn)).await?;
        Ok(values
            .into_iter()
            .map(|v| v.and_then(|v| Value::decode(&v).listing))
            .collect())
    }

    /// Replaces the values of keys that exist, keeping their TTL.
    pub async fn set_existing(
        &self,
        ws: WorkspaceId,
        ids: &[RuntimeId],
        value: &Value,
    ) -> anyhow::Result<()> {
        let text = value.encode();
        let mut pipe = redis::pipe();
        for &id in ids {
            pipe.cmd("SET")
                .arg(self.live_key(ws, id))
                .arg(&text)
                .arg("XX")
                .arg("KEEPTTL")
                .ignore();
        }
        let mut conn = self.conn.clone();
        let () = bounded(pipe.query_async(&mut conn)).await?;
        Ok(())
    }

    pub async fn alive(&self, ids: &[(WorkspaceId, RuntimeId)]) -> anyhow::Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &(ws, id) in ids {
            pipe.cmd("EXISTS").arg(self.live_key(ws, id));
        }
        let mut conn = self.conn.clone();
        let replies: Vec<i64> = bounded(pipe.query_async(&mut conn)).await?;
        Ok(replies.into_iter().map(|n| n > 0).collect())
    }

    pub async fn forget(&self, ids: &[(WorkspaceId, RuntimeId)]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for &(ws, id) in ids {
            cmd.arg(self.live_key(ws, id));
        }
        let mut conn = self.conn.clone();
        let _: i64 = bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    /// Flags the runtime's key, if it has one. Without one the runtime is not alive in the store,
    /// and its next heartbeat reads Postgres anyway (cancellations included).
    pub async fn flag_cancel(&self, ws: WorkspaceId, id: RuntimeId) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.live_key(ws, id))
            .arg(CANCEL_WAITING)
            .arg("XX")
            .arg("KEEPTTL");
        let _: Option<String> = bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}

/// Sends the touches that are waiting, together, until the store is dropped. A failed round trip
/// fails every heartbeat in it (each falls back to Postgres).
async fn touch_batcher(conn: ConnectionManager, mut rx: mpsc::UnboundedReceiver<TouchRequest>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_TOUCHES_PER_TRIP).await > 0 {
        let mut pipe = redis::pipe();
        for req in &batch {
            for live in &req.keys {
                // SET … GET returns the previous value: present means the runtime was alive, and
                // `c` that a cancellation waited (the write clears it).
                pipe.cmd("SET")
                    .arg(live)
                    .arg(&req.value)
                    .arg("PX")
                    .arg(req.ttl_ms)
                    .arg("GET");
            }
        }
        let expected: usize = batch.iter().map(|r| r.keys.len()).sum();
        let mut c = conn.clone();
        let result = bounded(pipe.query_async::<Vec<Option<String>>>(&mut c))
            .await
            .and_then(|replies| {
                anyhow::ensure!(
                    replies.len() == expected,
                    "redis answered {} replies to {expected} commands",
                    replies.len()
                );
                Ok(replies)
            });
        match result {
            Ok(replies) => {
                let mut previous = replies.into_iter();
                for req in batch.drain(..) {
                    let touched: Vec<Touched> = previous
                        .by_ref()
                        .take(req.keys.len())
                        .map(|was| {
                            let was = was.map(|v| Value::decode(&v));
                            Value::touched(was.as_ref(), req.listing.as_ref())
                        })
                        .collect();
                    let _ = req.reply.send(Ok(touched));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(anyhow::anyhow!("{msg}")));
                }
            }
        }
    }
}
