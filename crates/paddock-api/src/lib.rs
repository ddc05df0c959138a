//! Paddock's wire types, shared by the server, the typed client (`paddock-client`), the daemon and
//! the bench: request and response bodies, typed ids, the problem body, and the enums of statuses,
//! kinds and reasons. serde + utoipa only, no I/O.
//!
//! With the `sqlx` feature (the server's), ids and enums are also `sqlx::Type`: enums are stored as
//! text columns and decoded straight into these types, so no status is a string in Rust code.

pub mod agents;
pub mod enums;
pub mod events;
pub mod ids;
pub mod ops;
pub mod page;
pub mod problem;
pub mod reports;
pub mod runtimes;
pub mod tasks;
pub mod transcripts;
pub mod values;
pub mod workspaces;

pub use agents::*;
pub use enums::*;
pub use events::*;
pub use ids::*;
pub use ops::*;
pub use page::*;
pub use problem::*;
pub use reports::*;
pub use runtimes::*;
pub use tasks::*;
pub use transcripts::*;
pub use values::JsonObject;
pub use workspaces::*;
