//! Sweeper leadership: a Postgres session advisory lock held on a dedicated connection. Exactly one
//! replica holds it; when that replica dies its connection closes, Postgres releases the lock, and
//! another replica takes it at its next tick (within one `sweep_interval`).

use sqlx::{Connection, PgConnection};

/// Advisory lock key: "paddock sweeper" as ASCII-ish bytes, fixed so every replica agrees.
const LOCK_KEY: i64 = 0x7061_6464_6f63_6b01;

pub struct Leader {
    url: String,
    conn: Option<PgConnection>,
    leading: bool,
}

impl Leader {
    pub fn new(url: String) -> Self {
        Self {
            url,
            conn: None,
            leading: false,
        }
    }

    /// Whether this replica leads now: verifies a held lock's connection is alive, else tries to take it.
    pub async fn ensure(&mut self) -> bool {
        if self.leading {
            let alive = match self.conn.as_mut() {
                Some(c) => c.ping().await.is_ok(),
                None => false,
            };
            if alive {
                return true;
            }
            tracing::warn!("lost the sweeper leader connection");
            self.leading = false;
            self.conn = None;
        }
        if self.conn.is_none() {
            match PgConnection::connect(&self.url).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper cannot connect to try for leadership");
                    return false;
                }
            }
        }
        let conn = self.conn.as_mut().expect("connection just set");
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(conn)
            .await
        {
            Ok(true) => {
                tracing::info!("this replica is now the sweeper leader");
                self.leading = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader lock attempt failed");
                self.conn = None;
            }
        }
        self.leading
    }

    /// Gives up leadership (graceful shutdown), so another replica takes over at its next tick.
    pub async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if self.leading {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(LOCK_KEY)
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
        }
        self.leading = false;
    }
}
