//! Cross-replica fan-out over Postgres `LISTEN/NOTIFY`.
//!
//! * The **notifier** coalesces this replica's commits: at most one `NOTIFY paddock_events, '<max id>'`
//!   every `COALESCE` window, sent in its own tiny transaction — never inside the writing transactions,
//!   where a pending notification would take a global lock at commit.
//! * The **listener** `LISTEN`s on a dedicated connection and nudges the reader; when the connection
//!   drops it reconnects and nudges anyway, so the reader catches up from its last position.
//! * The **reader** keeps one log position per replica and reads new events below the commit horizon
//!   (`db::events::feed_after`), delivering each once to the hub. A nudge is answered after
//!   `READ_COALESCE`, so that one read covers the commits arriving together. It re-reads shortly
//!   while a known event is still above the horizon, and every second regardless.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::db;

pub const CHANNEL: &str = "paddock_events";
/// Token revocations, so that open WebSocket sessions of a revoked token close on every replica.
pub const REVOCATIONS: &str = "paddock_revocations";
const COALESCE: Duration = Duration::from_millis(2);
const READ_BATCH: i64 = 1000;
/// After a nudge, how long the reader waits for more commits before it reads.
const READ_COALESCE: Duration = Duration::from_millis(3);
const SAFETY_POLL: Duration = Duration::from_secs(1);

pub async fn notifier(pool: PgPool, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut rx = hub.committed_id.subscribe();
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        tokio::time::sleep(COALESCE).await;
        let id = *rx.borrow_and_update();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id.to_string())
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "could not notify other replicas; they catch up on their next poll");
        }
    }
}

/// LISTENs for commit notifications and revocations from every replica.
///
/// A lost connection is the first sign of a PostgreSQL outage on every replica: it asks the
/// database breaker's prober (`crate::breaker`) to check at once, which opens the breaker if a fresh
/// connection fails too, so requests answer 503 at once instead of waiting for the pool.
pub async fn listener(
    pool: PgPool,
    hub: Arc<Hub>,
    db_health: Arc<crate::breaker::Breaker>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                retry_pause(&shutdown).await;
                continue;
            }
        };
        let channels = [CHANNEL, REVOCATIONS, crate::transcripts::feed::CHANNEL];
        if let Err(e) = listener.listen_all(channels).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            retry_pause(&shutdown).await;
            continue;
        }
        // Anything committed while we were not listening is caught up by the reader; revocations
        // missed meanwhile cannot matter because the token cache was bypassed and is emptied now.
        hub.tokens.set_listening(true);
        hub.feed_nudge.notify_one();
        hub.transcripts.nudge.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(n)) if n.channel() == crate::transcripts::feed::CHANNEL => {
                        hub.transcripts.nudge.notify_one();
                    }
                    Ok(Some(n)) if n.channel() == REVOCATIONS => {
                        if let Ok(token) = n.payload().parse::<uuid::Uuid>() {
                            hub.revoke(token);
                        }
                    }
                    Ok(Some(n)) => {
                        // A malformed payload still means "something was committed": read.
                        hub.known(n.payload().parse::<i64>().unwrap_or(0));
                    }
                    Ok(None) => {
                        // Reconnect explicitly, so that "listening" is set again only once LISTEN
                        // has succeeded on the new connection.
                        hub.tokens.set_listening(false);
                        db_health.suspect();
                        tracing::warn!("event listener connection lost; reconnecting and catching up");
                        hub.feed_nudge.notify_one();
                        break;
                    }
                    Err(e) => {
                        hub.tokens.set_listening(false);
                        db_health.suspect();
                        tracing::warn!(error = %e, "event listener failed; reconnecting");
                        hub.feed_nudge.notify_one();
                        break;
                    }
                },
            }
        }
        retry_pause(&shutdown).await;
    }
}

async fn retry_pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        _ = shutdown.cancelled() => {}
    }
}

pub async fn reader(pool: PgPool, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut pos = loop {
        match pool.acquire().await {
            Ok(mut conn) => match db::events::horizon(&mut conn).await {
                Ok(p) => break p,
                Err(e) => tracing::warn!(error = %e, "event reader cannot read the horizon"),
            },
            Err(e) => tracing::warn!(error = %e, "event reader cannot connect"),
        }
        retry_pause(&shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
    };
    let mut delivered_max = 0i64;
    let mut backoff = Duration::from_millis(2);
    loop {
        let batch = match pool.acquire().await {
            Ok(mut conn) => db::events::feed_after(&mut conn, &pos, READ_BATCH)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "event feed read failed");
                    Vec::new()
                }),
            Err(e) => {
                tracing::warn!(error = %e, "event reader cannot connect");
                Vec::new()
            }
        };
        let full = batch.len() as i64 == READ_BATCH;
        for e in batch {
            pos = e.position();
            delivered_max = delivered_max.max(e.id());
            hub.deliver(e);
        }
        if full {
            continue;
        }
        // Something committed is still above the horizon (an older transaction is open): look again
        // soon, backing off; otherwise sleep until nudged.
        let pending = hub.known_max_id.load(Ordering::Acquire) > delivered_max;
        let wait = if pending {
            backoff = (backoff * 2).min(SAFETY_POLL);
            backoff
        } else {
            backoff = Duration::from_millis(2);
            SAFETY_POLL
        };
        tokio::select! {
            _ = hub.feed_nudge.notified() => {
                // Let the commits arriving together land first: one read then covers them all
                // (under load a nudge comes with every commit).
                tokio::time::sleep(READ_COALESCE).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Tells every replica (this one at once) that a token was revoked.
pub async fn announce_revocation(pool: &PgPool, hub: &Hub, token: uuid::Uuid) {
    hub.revoke(token);
    if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVOCATIONS)
        .bind(token.to_string())
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "could not announce a token revocation to other replicas");
    }
}
