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
//! | `transcripts` | the messages of an attempt |
//! | `sweeps` | every sweep's changes, and the `sweeper_runs` bookkeeping |

pub mod agents;
pub mod error;
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
}

impl From<Vec<NewEvent>> for Changes {
    fn from(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            agents: Vec::new(),
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
    let stored = db::events::insert(&mut tx, ch.events).await?;
    tx.commit().await?;
    app.hub.committed(stored);
    Ok(())
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
