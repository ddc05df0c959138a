//! Runtime use cases: register, heartbeat, deregister (going offline).

use paddock_api::{EventType, HeartbeatReply, HeartbeatStatus, RuntimeState, RuntimeStatus};
use serde_json::json;
use sqlx::PgConnection;

use super::{Changes, Error, Result, commit, tasks::fail_tasks_of_runtimes};
use crate::db;
use crate::db::runtimes::{NewRuntime, Registered};
use crate::events;
use crate::ids::AttemptId;
use crate::ids::{RuntimeId, WorkspaceId};
use crate::live::{Listing, Touched};
use crate::state::App;

/// Registers a runtime; returns it and whether it was created now.
pub async fn register(app: &App, new: &NewRuntime<'_>) -> Result<(Registered, bool)> {
    let mut tx = db::begin(&app.pool).await?;
    // Insert, else lock and update; a runtime deleted in between (the offline-runtime sweep) is
    // inserted again. Each step waits for concurrent registrations, so exactly one caller creates.
    let reg = loop {
        if let Some(reg) = db::runtimes::register(&mut tx, new).await? {
            break reg;
        }
        if let Some(reg) = db::runtimes::reregister(&mut tx, new).await? {
            break reg;
        }
    };
    let mut ch = Changes::default();
    let extra = json!({ "daemon_id": new.daemon_id, "provider": new.provider });
    match reg.was_status {
        None => ch.push(events::runtime(
            EventType::RuntimeRegistered,
            new.workspace,
            reg.id,
            extra,
        )),
        Some(RuntimeStatus::Offline) => {
            ch.push(events::runtime(
                EventType::RuntimeOnline,
                new.workspace,
                reg.id,
                extra,
            ));
            let agents = db::agents::of_runtimes(&mut tx, &[reg.id]).await?;
            ch.agents_changed(&agents);
        }
        Some(RuntimeStatus::Online) => {}
    }
    commit(app, tx, ch).await?;
    let created = reg.was_status.is_none();
    if let Err(e) = app.live.touch(new.workspace, &[reg.id], None).await {
        tracing::warn!(error = %e, "liveness store unavailable at registration");
    }
    Ok((reg, created))
}

/// A heartbeat for some runtimes. Hot path: one liveness-store round trip. Postgres is read only
/// for runtimes the store did not know as alive (new, revived, or foreign ids; their waiting
/// cancellations too, as the store flags only runtimes it knows), and for runtimes the store says a
/// cancellation waits for; if the store fails, heartbeats write `last_seen_at` to Postgres directly.
///
/// A daemon that lists its attempts (`attempts`) leaves that listing in the store for the
/// attempt-lost sweep; the attempts among them the server revoked come back in `cancel`, in every
/// reply whose request lists them (the store flags the runtime until the daemon stops listing
/// them).
pub async fn heartbeat(
    app: &App,
    ws: WorkspaceId,
    ids: &[RuntimeId],
    attempts: Option<&[AttemptId]>,
) -> Result<HeartbeatReply> {
    metrics::counter!("paddock_heartbeats_total").increment(ids.len() as u64);
    let listing = attempts.map(|a| Listing::new(chrono::Utc::now(), a));
    let (touched, fallback) = match app.live.touch(ws, ids, listing.as_ref()).await {
        Ok(t) => (t, false),
        Err(e) => {
            tracing::warn!(error = %e, "liveness store failed; heartbeat falls back to Postgres");
            metrics::counter!("paddock_liveness_errors_total", "op" => "touch").increment(1);
            metrics::counter!("paddock_liveness_fallbacks_total", "op" => "heartbeat").increment(1);
            // Known to no store: every runtime is checked in Postgres, cancellations included.
            (vec![Default::default(); ids.len()], true)
        }
    };
    let mut reply = HeartbeatReply {
        runtimes: ids
            .iter()
            .map(|&id| RuntimeState {
                runtime_id: id,
                status: HeartbeatStatus::Online,
            })
            .collect(),
        cancel: Vec::new(),
    };
    let pick = |keep: fn(&Touched) -> bool| -> Vec<RuntimeId> {
        ids.iter()
            .zip(&touched)
            .filter(|(_, t)| keep(t))
            .map(|(id, _)| *id)
            .collect()
    };
    let slow = SlowPath {
        ws,
        to_check: pick(|t| !t.was_alive),
        want_cancels: pick(|t| t.cancel_waiting || !t.was_alive),
        fallback,
        // Revoked attempts among the listed ones: looked up when the listing changed (a newly
        // listed attempt may be one), when something was revoked since (flagged), or when the last
        // check found some (they are answered again while listed).
        recheck: listing.filter(|l| !l.attempts.is_empty()).filter(|_| {
            touched
                .iter()
                .any(|t| t.recheck || t.cancel_waiting || t.listing_changed || !t.was_alive)
        }),
        runtimes: ids.to_vec(),
    };
    if !slow.to_check.is_empty() || !slow.want_cancels.is_empty() || slow.recheck.is_some() {
        if app.db_health.is_open() {
            return Err(super::Error::DatabaseDown);
        }
        slow.run(app, &mut reply).await?;
    }
    Ok(reply)
}

/// A heartbeat's Postgres work, for the runtimes the liveness store could not vouch for.
struct SlowPath {
    ws: WorkspaceId,
    /// Runtimes not known as alive: new to the store, revived, or not of this workspace.
    to_check: Vec<RuntimeId>,
    /// Runtimes whose daemon has cancellations waiting (or may have).
    want_cancels: Vec<RuntimeId>,
    /// The store failed: nothing to forget there.
    fallback: bool,
    /// The daemon's listing, when its attempts must be checked against the revoked ones.
    recheck: Option<Listing>,
    /// Every runtime of the heartbeat.
    runtimes: Vec<RuntimeId>,
}

impl SlowPath {
    async fn run(self, app: &App, reply: &mut HeartbeatReply) -> Result<()> {
        let ws = self.ws;
        // With the store down, a heartbeat of runtimes that are online in Postgres only reads:
        // the heard map and the flusher keep their last_seen_at. Two statements, no transaction,
        // no row lock, no WAL flush; the full path below runs only to revive or refuse one.
        if self.fallback && self.recheck.is_none() && !self.to_check.is_empty() {
            let mut conn = app.pool.acquire().await?;
            let online = db::runtimes::online_of(&mut conn, ws, &self.to_check).await?;
            if self.to_check.iter().all(|id| online.contains(id)) {
                if !self.want_cancels.is_empty() {
                    reply.cancel = db::tasks::take_cancels(&mut conn, &self.want_cancels).await?;
                }
                return Ok(());
            }
        }
        let mut tx = db::begin(&app.pool).await?;
        let mut ch = Changes::default();
        let mut unknown = Vec::new();
        if !self.to_check.is_empty() {
            let touched = db::runtimes::touch_or_revive(&mut tx, ws, &self.to_check).await?;
            for state in reply.runtimes.iter_mut() {
                let id = state.runtime_id;
                if self.to_check.contains(&id) && !touched.iter().any(|t| t.id == id) {
                    state.status = HeartbeatStatus::Unknown;
                    unknown.push((ws, id));
                }
            }
            let revived: Vec<RuntimeId> = touched
                .iter()
                .filter(|t| t.was_status == RuntimeStatus::Offline)
                .map(|t| t.id)
                .collect();
            for id in &revived {
                ch.push(events::runtime(
                    EventType::RuntimeOnline,
                    ws,
                    *id,
                    json!({}),
                ));
            }
            let agents = db::agents::of_runtimes(&mut tx, &revived).await?;
            ch.agents_changed(&agents);
        }
        let known_cancels: Vec<RuntimeId> = self
            .want_cancels
            .into_iter()
            .filter(|id| !unknown.iter().any(|(_, u)| u == id))
            .collect();
        if !known_cancels.is_empty() {
            reply.cancel = db::tasks::take_cancels(&mut tx, &known_cancels).await?;
        }
        let mut revoked_listed = false;
        if let Some(listing) = &self.recheck {
            for notice in db::liveness::revoked_of(&mut tx, ws, &listing.attempts).await? {
                revoked_listed = true;
                if !reply.cancel.contains(&notice) {
                    reply.cancel.push(notice);
                }
            }
        }
        commit(app, tx, ch).await?;
        if let (true, Some(listing)) = (revoked_listed, &self.recheck) {
            // Answer them again while the daemon still lists them.
            if let Err(e) = app.live.flag_recheck(ws, &self.runtimes, listing).await {
                tracing::warn!(error = %e, "could not flag listed revoked attempts");
            }
        }
        if !unknown.is_empty() && !self.fallback {
            let _ = app.live.forget(&unknown).await;
        }
        Ok(())
    }
}

/// Takes runtimes that were just marked offline through the consequences: their active tasks fail
/// with `runtime_offline` (retried when attempts are left) — at once when `fail_now`, else after
/// `offline_grace` (the attempt-liveness sweep) — and their agents go offline.
pub(super) async fn after_offline(
    conn: &mut PgConnection,
    app: &App,
    changed: &[db::runtimes::Changed],
    fail_now: bool,
    ch: &mut Changes,
) -> Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<RuntimeId> = changed.iter().map(|c| c.id).collect();
    for c in changed {
        ch.push(events::runtime(
            EventType::RuntimeOffline,
            c.workspace_id,
            c.id,
            json!({}),
        ));
    }
    if fail_now {
        fail_tasks_of_runtimes(conn, app.backoff(), &ids, ch).await?;
    }
    let agents = db::agents::of_runtimes(conn, &ids).await?;
    ch.agents_changed(&agents);
    Ok(())
}

/// Deregisters runtimes: offline now. Returns the ids that were online.
pub async fn deregister(app: &App, ws: WorkspaceId, ids: &[RuntimeId]) -> Result<Vec<RuntimeId>> {
    let mut tx = db::begin(&app.pool).await?;
    let changed = db::runtimes::mark_offline(&mut tx, ws, ids).await?;
    let mut ch = Changes::default();
    // A daemon that deregisters is going away: its attempts end now, whatever the grace.
    after_offline(&mut tx, app, &changed, true, &mut ch).await?;
    forget(app, &changed).await;
    commit(app, tx, ch).await?;
    Ok(changed.into_iter().map(|c| c.id).collect())
}

/// Drops the liveness keys of runtimes being taken offline — before the transaction commits, so a
/// key never outlives the runtime's online status: a heartbeat that arrives in between finds no key,
/// takes the slow path, waits for the row lock and revives the runtime. If the store fails, the keys
/// expire within `stale_threshold` and the same happens then.
pub(super) async fn forget(app: &App, changed: &[db::runtimes::Changed]) {
    let keys: Vec<(WorkspaceId, RuntimeId)> =
        changed.iter().map(|c| (c.workspace_id, c.id)).collect();
    if let Err(e) = app.live.forget(&keys).await {
        tracing::warn!(error = %e, "could not drop liveness keys of runtimes going offline");
        metrics::counter!("paddock_liveness_errors_total", "op" => "forget").increment(1);
    }
}

/// Writes `runtimes.last_seen_at` for every runtime heard since the last flush, in one statement
/// (the heartbeat flusher's write). What fails to be written is kept for the next flush.
pub async fn flush_heard(app: &App) -> Result<u64> {
    let batch = app.live.take_heard();
    if batch.is_empty() {
        return Ok(0);
    }
    let mut ws = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    let mut seen = Vec::with_capacity(batch.len());
    for (&(w, id), &at) in &batch {
        ws.push(w);
        ids.push(id);
        seen.push(at);
    }
    let written = async {
        let mut conn = app.pool.acquire().await?;
        db::runtimes::flush_last_seen(&mut conn, &ws, &ids, &seen).await
    }
    .await;
    written.map_err(|e| {
        app.live.restore_heard(batch);
        e.into()
    })
}

/// Drains (no new claims; running tasks finish) or undrains a runtime: `runtime.draining` /
/// `runtime.undrained` when that changes it. Undraining wakes its waiting claims.
pub async fn set_draining(
    app: &App,
    ws: WorkspaceId,
    id: RuntimeId,
    draining: bool,
) -> Result<db::runtimes::Runtime> {
    let mut tx = db::begin(&app.pool).await?;
    let (rt, changed) = db::runtimes::set_draining(&mut tx, id, ws, draining)
        .await?
        .ok_or(Error::NotFound("runtime"))?;
    let mut evs = Vec::new();
    if changed {
        let kind = if draining {
            EventType::RuntimeDraining
        } else {
            EventType::RuntimeUndrained
        };
        evs.push(events::runtime(
            kind,
            ws,
            id,
            json!({ "draining": draining }),
        ));
    }
    commit(app, tx, evs).await?;
    Ok(rt)
}
