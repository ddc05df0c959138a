//! One module per resource; handlers translate HTTP to `service` calls and back.

pub mod agents;
pub mod daemon;
pub mod events;
pub mod ops;
pub mod reports;
pub mod runtimes;
pub mod tasks;
pub mod workspaces;
pub mod ws;

use serde::Serialize;

/// A page of a list: `{"items": [...], "next_cursor": <string|null>}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from `limit + 1` fetched rows: the extra row only says whether there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}
