//! Typed identifiers: a `TaskId` cannot be passed where a `RuntimeId` is wanted.
//!
//! Each is a transparent newtype over `Uuid` for serde (and sqlx), so rows and JSON carry plain UUIDs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new id: a v7 UUID, time-ordered, so that the rows a service inserts append to
            /// the right edge of their primary key's index instead of landing on random pages.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    )*};
}

typed_id!(
    /// A tenant.
    WorkspaceId,
    /// An API token (not the secret).
    TokenId,
    /// One daemon's registration for one provider.
    RuntimeId,
    /// An agent bound to a runtime.
    AgentId,
    /// A unit of work for an agent.
    TaskId,
    /// The fencing token of one claim of a task.
    AttemptId,
);

/// Position in the event log (`events.id`).
pub type EventId = i64;
