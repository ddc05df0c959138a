//! Events: what every state change writes (in its own transaction), and the in-process fan-out
//! that wakes long-poll claims and feeds subscribers once the transaction has committed.

pub mod feed;
pub mod hub;
pub mod waker;

use serde_json::json;

use crate::db::events::NewEvent;
use crate::db::tasks::Task;
use crate::ids::{AgentId, RuntimeId, WorkspaceId};

pub use hub::Hub;
pub use waker::Waker;

/// `task.*` event carrying the fields a watcher needs without a read-back.
pub fn task(kind: &'static str, t: &Task) -> NewEvent {
    NewEvent {
        workspace: t.workspace_id,
        kind,
        subject: t.id.0,
        payload: json!({
            "task_id": t.id,
            "agent_id": t.agent_id,
            "runtime_id": t.runtime_id,
            "status": t.status,
            "attempt": t.attempt,
            "attempt_id": t.attempt_id,
            "failure_reason": t.failure_reason,
            "run_after": t.run_after,
            "priority": t.priority,
        }),
    }
}

/// `task.updated`: progress, which does not count as a notification.
pub fn task_progress(t: &Task) -> NewEvent {
    NewEvent {
        workspace: t.workspace_id,
        kind: "task.updated",
        subject: t.id.0,
        payload: json!({
            "task_id": t.id,
            "agent_id": t.agent_id,
            "runtime_id": t.runtime_id,
            "attempt": t.attempt,
            "attempt_id": t.attempt_id,
            "progress": t.progress,
            "notify": false,
        }),
    }
}

/// `runtime.*` event: `{runtime_id, ...extra}`.
pub fn runtime(
    kind: &'static str,
    ws: WorkspaceId,
    id: RuntimeId,
    extra: serde_json::Value,
) -> NewEvent {
    subject_event(kind, ws, "runtime_id", id.0, extra)
}

/// `agent.*` event: `{agent_id, ...extra}`.
pub fn agent(
    kind: &'static str,
    ws: WorkspaceId,
    id: AgentId,
    extra: serde_json::Value,
) -> NewEvent {
    subject_event(kind, ws, "agent_id", id.0, extra)
}

fn subject_event(
    kind: &'static str,
    ws: WorkspaceId,
    id_key: &'static str,
    id: uuid::Uuid,
    extra: serde_json::Value,
) -> NewEvent {
    let mut payload = json!({ id_key: id });
    if let (Some(p), serde_json::Value::Object(e)) = (payload.as_object_mut(), extra) {
        p.extend(e);
    }
    NewEvent {
        workspace: ws,
        kind,
        subject: id,
        payload,
    }
}
