//! Rules with no I/O: the task state machine and fencing, retries, validated request values.
//! Nothing here imports axum or sqlx.

pub mod report;
pub mod retry;
pub mod task;
pub mod values;
