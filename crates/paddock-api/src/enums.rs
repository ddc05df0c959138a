//! The API's vocabularies as enums: statuses, reasons, actions, kinds and event types.
//!
//! Each is written as its wire string once, in [`wire_enum!`]: serde, the OpenAPI schema (which lists
//! the values), `FromStr`/`Display` and (feature `sqlx`) the text-column encoding all use it.

use std::fmt;

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// Declares an enum with its wire strings; see the module doc.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:tt),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $s),*
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::enums::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(Self::$variant),)*
                    _ => Err($crate::enums::UnknownValue { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $crate::sqlx_text_enum!($name);
    };
}

/// Stores an enum as its wire string in a `text` column (and `text[]` for arrays).
#[cfg(feature = "sqlx")]
#[macro_export]
#[doc(hidden)]
macro_rules! sqlx_text_enum {
    ($name:ident) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}

#[cfg(not(feature = "sqlx"))]
#[macro_export]
#[doc(hidden)]
macro_rules! sqlx_text_enum {
    ($name:ident) => {};
}

wire_enum! {
    /// Where a task is in its life (DESIGN §3).
    TaskStatus {
        Queued = "queued",
        Dispatched = "dispatched",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Dispatched or running: the task holds a slot of its agent and runtime.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Dispatched | Self::Running)
    }
}

wire_enum! {
    /// Whether a runtime's daemon is heard from.
    RuntimeStatus {
        Online = "online",
        Offline = "offline",
    }
}

wire_enum! {
    /// A runtime as a heartbeat found it: `unknown` for an id this workspace does not have (the
    /// daemon should register again).
    HeartbeatStatus {
        Online = "online",
        Unknown = "unknown",
    }
}

wire_enum! {
    /// An agent: `working` while it holds a dispatched or running task, `offline` while its runtime is.
    AgentStatus {
        Idle = "idle",
        Working = "working",
        Offline = "offline",
    }
}

wire_enum! {
    /// Why an attempt (or a task) failed.
    FailureReason {
        AgentError = "agent_error",
        RuntimeOffline = "runtime_offline",
        DispatchTimeout = "dispatch_timeout",
        RunningTimeout = "running_timeout",
        QueuedExpired = "queued_expired",
        Cancelled = "cancelled",
        /// An opted-in daemon stopped listing the attempt in its heartbeats (DESIGN §10).
        AttemptLost = "attempt_lost",
    }
}

impl FailureReason {
    /// `queued_expired` and `cancelled` end a task for good; everything else may be retried.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::QueuedExpired | Self::Cancelled)
    }
}

wire_enum! {
    /// Why a queued task is not being claimed (DESIGN §12): the first that applies, in this order.
    BlockedReason {
        /// Its `run_after` (a retry's backoff) has not come yet.
        RunAfter = "run_after",
        /// Its agent is paused.
        AgentPaused = "agent_paused",
        /// Its agent's runtime is offline.
        RuntimeOffline = "runtime_offline",
        /// Its agent's runtime is draining.
        RuntimeDraining = "runtime_draining",
        /// Its agent holds `max_concurrent_tasks` dispatched or running tasks.
        AgentAtCapacity = "agent_at_capacity",
        /// Its concurrency key has `concurrency_limit` dispatched or running tasks.
        KeyAtCapacity = "key_at_capacity",
        /// Its runtime holds `max_concurrency` dispatched or running tasks.
        RuntimeAtCapacity = "runtime_at_capacity",
        /// Claimable now, behind `position - 1` tasks its agent hands out first.
        Behind = "behind",
    }
}

wire_enum! {
    /// How a finished attempt ended.
    AttemptOutcome {
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

wire_enum! {
    /// What a daemon reports about an attempt.
    ReportAction {
        Start = "start",
        Progress = "progress",
        Complete = "complete",
        Fail = "fail",
    }
}

wire_enum! {
    /// Token kinds a workspace can mint: `member` for people and the front end, `daemon` for machines.
    TokenKind {
        Member = "member",
        Daemon = "daemon",
    }
}

wire_enum! {
    /// The type of an event in the log (DESIGN §6).
    EventType {
        RuntimeRegistered = "runtime.registered",
        RuntimeOnline = "runtime.online",
        RuntimeOffline = "runtime.offline",
        RuntimeDeleted = "runtime.deleted",
        /// The runtime takes no new claims (`POST /runtimes/{id}/drain`).
        RuntimeDraining = "runtime.draining",
        /// The runtime takes claims again (`POST /runtimes/{id}/undrain`).
        RuntimeUndrained = "runtime.undrained",
        AgentCreated = "agent.created",
        AgentUpdated = "agent.updated",
        AgentArchived = "agent.archived",
        AgentStatus = "agent.status",
        TaskQueued = "task.queued",
        TaskDispatched = "task.dispatched",
        TaskRunning = "task.running",
        TaskUpdated = "task.updated",
        TaskCompleted = "task.completed",
        TaskFailed = "task.failed",
        TaskCancelled = "task.cancelled",
        TaskRequeued = "task.requeued",
    }
}

impl EventType {
    /// Whether the event is about a task.
    pub fn is_task(self) -> bool {
        self.as_str().starts_with("task.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(
            "task.requeued".parse::<EventType>().unwrap(),
            EventType::TaskRequeued
        );
        assert!("nope".parse::<FailureReason>().is_err());
        assert!(serde_json::from_str::<TaskStatus>("\"Queued\"").is_err());
    }
}
