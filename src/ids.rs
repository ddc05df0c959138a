//! Typed identifiers (defined with the wire types in `paddock-api`): a `TaskId` cannot be passed
//! where a `RuntimeId` is wanted.

pub use paddock_api::ids::*;
