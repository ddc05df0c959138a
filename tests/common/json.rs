//! Reading values out of JSON replies.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The string `v` holds, owned; panics (showing `v`) when it is not a string.
pub fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

/// The RFC 3339 timestamp `v` holds; panics when it is not a string or does not parse.
pub fn ts(v: &Value) -> DateTime<Utc> {
    s(v).parse()
        .unwrap_or_else(|e| panic!("bad timestamp {v}: {e}"))
}

/// The `task_id`s of a claim reply's tasks, in order; panics when the reply has no `tasks`.
pub fn claimed_ids(reply: &Value) -> Vec<String> {
    reply["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {reply}"))
        .iter()
        .map(|t| s(&t["task_id"]))
        .collect()
}

/// The `(task_id, attempt_id)`s of a claim reply's tasks, in order; panics when it has no `tasks`.
pub fn claimed_attempts(reply: &Value) -> Vec<(String, String)> {
    reply["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {reply}"))
        .iter()
        .map(|t| (s(&t["task_id"]), s(&t["attempt_id"])))
        .collect()
}
