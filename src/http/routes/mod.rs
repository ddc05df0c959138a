//! One module per resource; handlers translate HTTP to `service` calls and back.

pub mod agents;
pub mod daemon;
pub mod events;
pub mod messages;
pub mod ops;
pub mod reports;
pub mod runtimes;
pub mod tasks;
pub mod transcript_ws;
pub mod workspaces;
pub mod ws;
