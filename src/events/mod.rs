//! Events: what every state change writes (in its own transaction), and the in-process fan-out
//! that wakes long-poll claims and feeds subscribers once the transaction has committed.

pub mod feed;
pub mod hub;
pub mod waker;

use chrono::{DateTime, Utc};
use paddock_api::{EventType, FailureReason, TaskStatus};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::db::events::NewEvent;
use crate::db::tasks::{Claimed, Task};
use crate::ids::{AgentId, AttemptId, RuntimeId, TaskId, WorkspaceId};

pub use hub::Hub;
pub use waker::Waker;

/// Serialises an event's payload once, when the event is made: it is bound as this text, stored as it
/// and relayed as it. The task events, three per task on the hot path, serialise a struct straight to
/// text rather than build a `serde_json::Value` map first.
fn raw(payload: &impl Serialize) -> Box<RawValue> {
    // Payloads are structs and string-keyed maps of plain values: serialising them cannot fail.
    serde_json::value::to_raw_value(payload).expect("an event payload serialises")
}

/// The payload of a `task.*` event: the fields a watcher needs without a read-back.
#[derive(Serialize)]
struct TaskFields<'a> {
    task_id: TaskId,
    agent_id: AgentId,
    /// Null for a pool agent's task not dispatched yet.
    runtime_id: Option<RuntimeId>,
    status: TaskStatus,
    attempt: i32,
    attempt_id: Option<AttemptId>,
    failure_reason: Option<FailureReason>,
    run_after: DateTime<Utc>,
    priority: i32,
    /// Why the attempt ended (failures and requeues only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<FailureReason>,
    /// The daemon's error, `null` when there is none (failures and requeues only).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Option<&'a str>>,
    /// The task's concurrency key, when it has one (its end wakes the workspace's claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<&'a str>,
}

/// `task.*` event carrying the fields a watcher needs without a read-back.
pub fn task(kind: EventType, t: &Task) -> NewEvent {
    task_event(kind, t, None)
}

/// `task.failed` / `task.requeued` (by the task's status): a `task.*` event that also says why the
/// attempt ended.
pub fn task_ended(t: &Task, reason: FailureReason, error: Option<&str>) -> NewEvent {
    let kind = if t.status == TaskStatus::Queued {
        EventType::TaskRequeued
    } else {
        EventType::TaskFailed
    };
    task_event(kind, t, Some((reason, error)))
}

fn task_event(kind: EventType, t: &Task, ended: Option<(FailureReason, Option<&str>)>) -> NewEvent {
    let fields = TaskFields {
        task_id: t.id,
        agent_id: t.agent_id,
        runtime_id: t.runtime_id,
        status: t.status,
        attempt: t.attempt,
        attempt_id: t.attempt_id,
        failure_reason: t.failure_reason,
        run_after: t.run_after,
        priority: t.priority,
        reason: ended.map(|(reason, _)| reason),
        error: ended.map(|(_, error)| error),
        concurrency_key: t.concurrency_key.as_deref(),
    };
    NewEvent {
        workspace: t.workspace_id,
        kind,
        subject: t.id.0,
        payload: raw(&fields),
    }
}

/// `task.dispatched`, for a task a claim handed out.
pub fn dispatched(c: &Claimed) -> NewEvent {
    #[derive(Serialize)]
    struct Fields {
        task_id: TaskId,
        agent_id: AgentId,
        runtime_id: RuntimeId,
        status: TaskStatus,
        attempt: i32,
        attempt_id: AttemptId,
        priority: i32,
    }
    NewEvent {
        workspace: c.workspace_id,
        kind: EventType::TaskDispatched,
        subject: c.id.0,
        payload: raw(&Fields {
            task_id: c.id,
            agent_id: c.agent_id,
            runtime_id: c.runtime_id,
            status: TaskStatus::Dispatched,
            attempt: c.attempt,
            attempt_id: c.attempt_id,
            priority: c.priority,
        }),
    }
}

/// The largest `progress` a `task.updated` event carries (its JSON text, in bytes). A larger one is
/// left out (`"progress": null, "progress_omitted": true`): the task has it, and every socket of the
/// workspace would otherwise be sent it.
pub const EVENT_PROGRESS_MAX: usize = 16 << 10;

/// `task.updated`: progress, which does not count as a notification.
pub fn task_progress(t: &Task) -> NewEvent {
    let progress = t.progress.as_ref().map(raw);
    let omitted = progress
        .as_ref()
        .is_some_and(|p| p.get().len() > EVENT_PROGRESS_MAX);
    #[derive(Serialize)]
    struct Fields<'a> {
        task_id: TaskId,
        agent_id: AgentId,
        runtime_id: Option<RuntimeId>,
        attempt: i32,
        attempt_id: Option<AttemptId>,
        progress: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        progress_omitted: bool,
        notify: bool,
    }
    NewEvent {
        workspace: t.workspace_id,
        kind: EventType::TaskUpdated,
        subject: t.id.0,
        payload: raw(&Fields {
            task_id: t.id,
            agent_id: t.agent_id,
            runtime_id: t.runtime_id,
            attempt: t.attempt,
            attempt_id: t.attempt_id,
            progress: if omitted { None } else { progress.as_deref() },
            progress_omitted: omitted,
            notify: false,
        }),
    }
}

/// `runtime.*` event: `{runtime_id, ...extra}`.
pub fn runtime(
    kind: EventType,
    ws: WorkspaceId,
    id: RuntimeId,
    extra: serde_json::Value,
) -> NewEvent {
    subject_event(kind, ws, "runtime_id", id.0, extra)
}

/// `agent.*` event: `{agent_id, ...extra}`.
pub fn agent(kind: EventType, ws: WorkspaceId, id: AgentId, extra: serde_json::Value) -> NewEvent {
    subject_event(kind, ws, "agent_id", id.0, extra)
}

fn subject_event(
    kind: EventType,
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
        payload: raw(&payload),
    }
}
