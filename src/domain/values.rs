//! Request values that can only hold valid data (defined with the wire types in `paddock-api`).

pub use paddock_api::values::*;
