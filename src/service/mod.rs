//! Use cases, and the owner of every write: each public function here opens its transaction,
//! asks `domain` what to do, persists through `db`, writes the events of every change in the same
//! transaction, commits, and publishes the events once committed. Routes parse, call one of these
//! and translate; sweeps call them too, so a change made by a sweep emits exactly the events and
//! agent-status updates the API path does. Reads may go from a route to `db` directly.
//!
//! | module | writes |
//! |---|---|
//! | `workspaces` | workspaces, tokens (mint, revoke) |
//! | `agents` | create, update, archive |
//! | `runtimes` | register, heartbeat (slow path), deregister, the heartbeat flush |
//! | `tasks` | enqueue, cancel, claim |
//! | `reports` | the daemon's reports, single and batched |
//! | `report_groups` | concurrent batch reports of a workspace, applied as one transaction |
//! | `transcripts` | the messages of an attempt |
//! | `sweeps` | every sweep's changes, and the `sweeper_runs` bookkeeping |
//! | `liveness` | the attempt-liveness sweep: lost attempts, the offline grace |

pub mod agents;
pub mod error;
pub mod liveness;
pub mod report_groups;
pub mod reports;
pub mod runtimes;
pub mod sweeps;
pub mod tasks;
pub mod transcripts;
pub mod workspaces;

use paddock_api::EventType;
use sqlx::{PgConnection, Postgres, Transaction};

pub use error::{Error, Refusal, Result};

use crate::db;
use crate::db::events::NewEvent;
use crate::ids::AgentId;
use crate::state::App;

/// What a transaction changed besides its own rows: the events to write and the agents whose status
/// must be recomputed. Both are written once, just before the commit, however many changes the
/// transaction made (a batch report completing 50 tasks of one agent refreshes that agent once).
#[derive(Default)]
pub struct Changes {
    pub events: Vec<NewEvent>,
    agents: Vec<AgentId>,
    /// Attempts the server ended while their daemons may still run them.
    revoked: Vec<db::liveness::Revoked>,
}

impl Changes {
    pub fn push(&mut self, e: NewEvent) {
        self.events.push(e);
    }

    /// The agent's active tasks changed: recompute its status before commit.
    pub fn agent_changed(&mut self, id: AgentId) {
        self.agents.push(id);
    }

    pub fn agents_changed(&mut self, ids: &[AgentId]) {
        self.agents.extend_from_slice(ids);
    }

    /// The server ended this active attempt: its daemon is told to stop it (in the next heartbeat
    /// or claim, and in every heartbeat that still lists it).
    pub fn revoked(&mut self, task: &crate::db::tasks::Task) {
        if let (Some(attempt), Some(runtime)) = (task.attempt_id, task.runtime_id) {
            self.revoked.push(db::liveness::Revoked {
                attempt,
                task: task.id,
                workspace: task.workspace_id,
                runtime,
            });
        }
    }
}

impl From<Vec<NewEvent>> for Changes {
    fn from(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// Ends a use case's transaction: recomputes the changed agents' status, writes the events,
/// commits, then publishes the events (waking claims, feeding sockets).
async fn commit(
    app: &App,
    mut tx: Transaction<'static, Postgres>,
    changes: impl Into<Changes>,
) -> Result<()> {
    let mut ch = changes.into();
    refresh_agents(&mut tx, &ch.agents, &mut ch.events).await?;
    db::liveness::revoke(&mut tx, &ch.revoked).await?;
    let stored = db::events::insert(&mut tx, ch.events).await?;
    tx.commit().await?;
    app.hub.committed(stored);
    flag_revoked(app, &ch.revoked).await;
    Ok(())
}

/// Flags the runtimes of revoked attempts in the liveness store, so that their next heartbeat
/// reads what waits for them. If the store fails, the claim response still carries cancellations
/// (it reads Postgres), and later reports of those attempts get 409.
async fn flag_revoked(app: &App, revoked: &[db::liveness::Revoked]) {
    let mut runtimes: Vec<_> = revoked.iter().map(|r| (r.workspace, r.runtime)).collect();
    runtimes.sort();
    runtimes.dedup();
    for (ws, rt) in runtimes {
        if let Err(e) = app.live.flag_cancel(ws, rt).await {
            tracing::warn!(error = %e, "could not flag a revoked attempt in the liveness store");
            metrics::counter!("paddock_liveness_errors_total", "op" => "flag_cancel").increment(1);
        }
    }
}

/// Recomputes the status of these agents and records an `agent.status` event for each change.
async fn refresh_agents(
    conn: &mut PgConnection,
    agents: &[AgentId],
    events: &mut Vec<NewEvent>,
) -> Result<()> {
    let mut ids = agents.to_vec();
    ids.sort();
    ids.dedup();
    for change in db::agents::refresh_status(conn, &ids).await? {
        events.push(crate::events::agent(
            EventType::AgentStatus,
            change.workspace_id,
            change.id,
            serde_json::json!({ "status": change.status }),
        ));
    }
    Ok(())
}
